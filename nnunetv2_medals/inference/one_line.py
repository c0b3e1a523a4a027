"""``nnunetv2_medals predict``: from a scan to a labelled result in one line, beside ``nnUNetv2_predict_medals``.

No ``_0000`` names and no dataset id. Inputs are NIfTI/NRRD/MHA files, DICOM series folders (:mod:`.dicom`) or
folders of either; the model is a trained model folder or a model zip (:mod:`.model_files`); prompts come from the
command line (``-p`` are labels 1, 2, … in order, then ``--instance``) or from a prompt file. All inputs run on the
one loaded model.

Per input ``NAME`` (the file name without its ending, or the DICOM folder's name) the output folder gets
``NAME.nii.gz`` (label map in the input's voxel order and geometry; for a DICOM series, the series' geometry),
``NAME.json`` (the case summary of :func:`.export.write_prediction`), ``NAME_legend.json`` (label -> prompt, the
trained target it was matched to and how, voxels, mL), ``NAME_instances_labelL.nii.gz`` for instance prompts, with
``preview`` ``NAME_overlay.png`` and with ``output_type="dicom_seg"`` ``NAME_seg.dcm`` (one segment per prompt,
referencing the source series). Every file is written under a temporary name and renamed; inputs, prompts and the
model are checked before the first file is written.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import SimpleITK as sitk

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import is_canonical, plans_reader_writer, stored_order_image
from nnunetv2_medals.inference.case_files import checked_image_header, read_case
from nnunetv2_medals.inference.dicom import DicomSeries, largest_series, read_dicom_case, write_dicom_seg
from nnunetv2_medals.inference.export import PromptedPrediction, write_prediction
from nnunetv2_medals.inference.folders import case_report, check_prompt_texts
from nnunetv2_medals.inference.model_files import resolve_model
from nnunetv2_medals.io_utils import atomic_write_json, refuse_output_inside_input
from nnunetv2_medals.overlay import write_overlay_png
from nnunetv2_medals.text_prompts.prompt_file import PromptFile, load_prompt_file, parse_prompt_file

#: image files an input folder is searched for (what SimpleITK reads as 3D medical images)
IMAGE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: every output is NIfTI, whatever the model was trained on
OUTPUT_ENDING = ".nii.gz"
OUTPUT_TYPES = ("nifti", "dicom_seg")


@dataclass(frozen=True)
class ScanInput:
    """One input: an image file, or a DICOM series (``dicom``; ``path`` is then its folder)."""

    path: Path
    name: str
    dicom: DicomSeries | None = None


# ---------------------------------------------------------------------------------------------------- prompts
def command_line_prompts(texts: Sequence[str], instance_texts: Sequence[str] = (), masks: Sequence[str] = (),
                         prompt_file: str | None = None) -> PromptFile:
    """The prompts of one command: ``-p`` texts are labels 1, 2, … in order, ``--instance`` texts follow; each
    ``--mask "TEXT=FILE"`` gives the prompt TEXT a mask prompt; or a prompt file (not both)."""
    texts, instance_texts, masks = list(texts or []), list(instance_texts or []), list(masks or [])
    if prompt_file is not None:
        if texts or instance_texts or masks:
            raise MedalSInputError("command line", "--prompts", "give prompts either with -p/--instance/--mask or "
                                                                "in a prompt file, not both")
        return load_prompt_file(prompt_file)
    if not texts and not instance_texts:
        raise MedalSInputError("command line", "-p", "no prompts given; name what to segment, e.g. "
                                                     "-p \"liver\" \"left kidney\"")
    for flag, group in (("-p", texts), ("--instance", instance_texts)):
        for text in group:
            if not any(ch.isalpha() for ch in text):
                raise MedalSInputError("command line", flag, f"{text!r} holds no letters; a prompt names a "
                                                             f"structure in words, e.g. \"left kidney\"")
    given = [t.strip() for t in texts + instance_texts]
    mask_of: dict[str, str] = {}
    for item in masks:
        text, sep, file = item.partition("=")
        text, file = text.strip(), file.strip()
        if not sep or not text or not file:
            raise MedalSInputError("command line", "--mask", f"{item!r} is not TEXT=FILE; write e.g. "
                                                             f"--mask \"spleen=spleen_hint.nii.gz\"")
        if text not in given:
            raise MedalSInputError("command line", "--mask", f"{text!r} is not one of the prompts given to -p/"
                                                             f"--instance ({', '.join(map(repr, given))}); a mask "
                                                             f"prompt belongs to one of them")
        if text in mask_of:
            raise MedalSInputError("command line", "--mask", f"two masks for the prompt {text!r}")
        mask_of[text] = str(Path(file).expanduser().absolute())
    items = []
    for i, text in enumerate(given):
        item = {"text": text, "label": i + 1, "instance": i >= len(texts)}
        if text in mask_of:
            item["mask"] = mask_of[text]
        items.append(item)
    return parse_prompt_file({"prompts": items}, "command line")


# ---------------------------------------------------------------------------------------------------- inputs
def _image_name(path: Path) -> str | None:
    """The file name without its image ending, None for a file that is not one of :data:`IMAGE_ENDINGS`."""
    lower = path.name.lower()
    for ending in IMAGE_ENDINGS:
        if lower.endswith(ending) and len(lower) > len(ending):
            return path.name[:-len(ending)]
    return None


def _series_input(folder: Path) -> ScanInput | None:
    series = largest_series(folder)
    return None if series is None else ScanInput(folder, folder.name, series)


def collect_inputs(paths: Sequence[str | os.PathLike]) -> list[ScanInput]:
    """Every input of ``-i``: image files, DICOM series folders, and in other folders their image files and the
    subfolders holding a DICOM series. Unreadable files, folders without any image and two inputs of one name are
    one :class:`MedalSInputError` each, raised before anything is read or written."""
    scans: list[ScanInput] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if not path.exists():
            raise MedalSInputError(path, "-i", "not found")
        if path.is_file():
            name = _image_name(path)
            if name is None:
                raise MedalSInputError(path, "-i", f"is not an image file ({', '.join(IMAGE_ENDINGS)}); give a "
                                                   f"DICOM series as its folder")
            checked_image_header(path, "-i", finite=False)
            scans.append(ScanInput(path, name))
            continue
        series = _series_input(path)
        if series is not None:
            scans.append(series)
            continue
        found = []
        for child in sorted(path.iterdir()):
            if child.is_file() and _image_name(child) is not None:
                checked_image_header(child, "-i", finite=False)
                found.append(ScanInput(child, _image_name(child)))
            elif child.is_dir() and (series := _series_input(child)) is not None:
                found.append(series)
        if not found:
            raise MedalSInputError(path, "-i", f"holds no readable image: no image file ({', '.join(IMAGE_ENDINGS)})"
                                               f" and no DICOM series in it or its subfolders")
        scans.extend(found)
    seen: dict[str, Path] = {}
    for scan in scans:
        if scan.name in seen:
            raise MedalSInputError(scan.path, "-i", f"has the same name {scan.name!r} as {seen[scan.name]}; their "
                                                    f"outputs would overwrite each other (predict them into two "
                                                    f"output folders)")
        seen[scan.name] = scan.path
    return scans


def refuse_output_among_inputs(output: str | os.PathLike, scans: Sequence[ScanInput],
                               input_paths: Sequence[str | os.PathLike]) -> None:
    """``-o`` may not be an input folder or inside one, nor the folder an input file sits in (its outputs would
    sit among, or overwrite, the inputs)."""
    out = Path(output).resolve()
    for raw in input_paths:
        if Path(raw).expanduser().is_dir():
            refuse_output_inside_input(output, {"-i": Path(raw).expanduser()})
    for scan in scans:
        if scan.path.is_file() and out == scan.path.resolve().parent:
            raise MedalSInputError(output, "-o", f"is the folder of the input {scan.path}; outputs must not "
                                                 f"overwrite or sit among inputs: choose an output folder outside it")


# ---------------------------------------------------------------------------------------------------- prediction
def legend(result: PromptedPrediction, name: str, scan: ScanInput) -> dict:
    """``NAME_legend.json``: what each label value of the label map means."""
    labels = {}
    for p, info in zip(result.prompts, result.summary["prompts"]):
        match = info.get("match") or {}
        labels[str(p.label)] = {
            "prompt": p.text, "instance": p.instance, "matched_target": match.get("target"),
            "match_method": match.get("method"), "nearest_target": match.get("nearest_target"),
            "cosine": match.get("cosine"), "voxels": info["voxels"], "volume_ml": info["volume_ml"],
            **({"instances": info["instances"], "instance_map": f"{name}_instances_label{p.label}{OUTPUT_ENDING}"}
               if p.instance else {}),
            **({"mask_prompt": info["mask"]} if info.get("mask") else {})}
    return {"source": str(scan.path.resolve()), **({"series_instance_uid": scan.dicom.uid} if scan.dicom else {}),
            "label_map": name + OUTPUT_ENDING, "labels": labels}


def check_request(scans: Sequence[ScanInput], prompt_file: PromptFile, output_type: str = "nifti") -> None:
    """What can be refused before a model is loaded: the output type for these inputs, prompt-file cases that
    name no input, a mask prompt given for several inputs."""
    if output_type not in OUTPUT_TYPES:
        raise MedalSInputError("command line", "--output_type", f"{output_type!r}; choose one of "
                                                                f"{', '.join(OUTPUT_TYPES)}")
    not_dicom = [s for s in scans if s.dicom is None]
    if output_type == "dicom_seg" and not_dicom:
        raise MedalSInputError(not_dicom[0].path, "--output_type", "dicom_seg needs DICOM series inputs (a SEG "
                                                                   "references its source images); this input is "
                                                                   "an image file: use --output_type nifti")
    names = {s.name for s in scans}
    unknown = sorted(set(prompt_file.cases) - names)
    if unknown:
        raise MedalSInputError(prompt_file.source, f"cases.{unknown[0]}", f"no such input (inputs: "
                                                                          f"{', '.join(sorted(names))})")
    masked = any(p.mask is not None for ps in [prompt_file.prompts, *prompt_file.cases.values()] for p in ps)
    if masked and len(scans) > 1 and not prompt_file.cases:
        raise MedalSInputError("command line", "--mask", f"a mask prompt lies on one image's grid, but there are "
                                                         f"{len(scans)} inputs; predict that input on its own")


def predict_scans(predictor, scans: Sequence[ScanInput], prompt_file: PromptFile, output_folder: str | os.PathLike,
                  preview: bool = False, output_type: str = "nifti") -> list[Path]:
    """Predict every input with its prompts on one loaded ``predictor`` (:class:`.predictor.MedalSPredictor`) and
    write its files (module docstring). Returns the label-map paths."""
    check_request(scans, prompt_file, output_type)
    if any(s.dicom for s in scans) and not is_canonical(predictor.plans_manager.plans["image_reader_writer"]):
        raise MedalSInputError(predictor.model_folder, "plans.json", "this model was planned before canonical "
                                                                     "orientation and reads voxels as stored; DICOM "
                                                                     "input needs a model re-planned with "
                                                                     "nnUNetv2_plan_and_preprocess_medals")
    # every prompt read against the model's vocabulary before the first file is written
    check_prompt_texts(predictor, [p.text for ps in [prompt_file.prompts, *prompt_file.cases.values()] for p in ps])
    reader_writer = plans_reader_writer(predictor.plans_manager)
    written = []
    for scan in scans:
        prompts = prompt_file.prompts_for(scan.name)
        if scan.dicom:
            image, props, masks = read_dicom_case(scan.dicom, prompts)
        else:
            image, props, masks = read_case(predictor, [str(scan.path)], prompts)
        result = predictor.predict_image(image, props, prompts, masks, source=str(scan.path))
        out = Path(output_folder) / scan.name
        write_prediction(result, str(out), reader_writer, OUTPUT_ENDING)
        atomic_write_json(out.with_name(f"{scan.name}_legend.json"), legend(result, scan.name, scan))
        if preview:
            write_overlay_png(image[0], result.label_map, {p.label: p.text for p in prompts},
                              out.with_name(f"{scan.name}_overlay.png"), props["spacing"])
        if output_type == "dicom_seg":
            stored = sitk.GetArrayFromImage(stored_order_image(result.label_map, props))
            write_dicom_seg(stored, prompts, scan.dicom, out.with_name(f"{scan.name}_seg.dcm"))
        print(case_report(scan.name, result.summary))
        written.append(out.with_name(scan.name + OUTPUT_ENDING))
    return written


def predict_command(inputs: Sequence[str], output: str, model: str, texts: Sequence[str] = (),
                    instance_texts: Sequence[str] = (), masks: Sequence[str] = (), prompt_file: str | None = None,
                    device: str = "cpu", preview: bool = False, output_type: str = "nifti",
                    folds: Sequence[str] | None = None, checkpoint: str = "checkpoint_final.pth",
                    encoder: str | None = None, side_guard: bool = True) -> list[Path]:
    """``nnunetv2_medals predict`` (the command's flags as arguments): everything checked, the model loaded once,
    every input predicted and written."""
    import torch

    from nnunetv2_medals.inference.predictor import load_model

    start = time.perf_counter()
    prompts = command_line_prompts(texts, instance_texts, masks, prompt_file)
    scans = collect_inputs(inputs)
    refuse_output_among_inputs(output, scans, inputs)
    check_request(scans, prompts, output_type)
    if device == "cuda" and not torch.cuda.is_available():
        raise MedalSInputError("command line", "--device", "cuda was asked for but this machine (or this torch) has "
                                                           "no CUDA device; use --device cpu")
    folder = resolve_model(model, folds, checkpoint)
    predictor = load_model(str(folder), None if folds is None else [f if f == "all" else int(f) for f in folds],
                           checkpoint, device=torch.device(device), encoder=encoder, side_guard=side_guard)
    loaded = time.perf_counter()
    written = predict_scans(predictor, scans, prompts, output, preview, output_type)
    print(f"wrote {len(scans)} result{'s' if len(scans) > 1 else ''} to {output} in "
          f"{time.perf_counter() - start:.1f} s (model loaded in {loaded - start:.1f} s)")
    return written
