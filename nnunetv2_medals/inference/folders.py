"""Prompted prediction of a folder of cases (``nnUNetv2_predict_medals``): the file loop around a predictor."""
from __future__ import annotations

import os
from pathlib import Path

from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import plans_reader_writer
from nnunetv2_medals.inference.case_files import read_case
from nnunetv2_medals.inference.export import case_files, summary_matches, write_prediction
from nnunetv2_medals.io_utils import refuse_output_inside_input
from nnunetv2_medals.text_prompts.canonical import normalise
from nnunetv2_medals.text_prompts.prompt_file import PromptFile


def coarse_model_folder(fine_model_folder: str, coarse_configuration: str) -> str:
    """The folder of another configuration of the same dataset, trainer and plans (``…/T__P__3d_lowres``)."""
    folder = Path(fine_model_folder)
    trainer, plans, _ = folder.name.split("__")
    coarse = folder.with_name(f"{trainer}__{plans}__{coarse_configuration}")
    if not coarse.is_dir():
        raise MedalSInputError(coarse, "--two_stage", f"no trained {coarse_configuration!r} model next to "
                                                      f"{folder.name}; train it with nnUNetv2_train D "
                                                      f"{coarse_configuration} F -tr {trainer} -p {plans}")
    return str(coarse)


def model_checkpoint(model_folder: str, fold: str | None = None, checkpoint: str = "checkpoint_final.pth") -> Path:
    """The checkpoint file of a trained model folder (``…/T__P__C`` with ``fold_N`` inside, or a ``fold_N``)."""
    folder = Path(model_folder)
    if (folder / checkpoint).is_file() and fold is None:
        return folder / checkpoint
    folds = [folder / f"fold_{fold}"] if fold is not None else sorted(folder.glob("fold_*"))
    for f in folds:
        if (f / checkpoint).is_file():
            return f / checkpoint
    raise MedalSInputError(folder, checkpoint, "not found" + (f" in fold_{fold}" if fold is not None else
                                                               " in any fold_N of this model folder"))


def check_prompt_texts(predictor, texts) -> None:
    """Resolve ``texts`` against the (fine) model's vocabulary once, so refusals come before any output."""
    vocabulary = getattr(predictor, "vocabulary", None) or predictor.fine.vocabulary
    encoder = getattr(predictor, "encoder_override", None) or getattr(getattr(predictor, "fine", None),
                                                                      "encoder_override", None)
    vocabulary.resolve(list(dict.fromkeys(texts)), encoder)


def predict_prompted_files(predictor, prompt_file: PromptFile, source_folder: str, output_folder: str,
                           save_probabilities: bool = False, overwrite: bool = True, num_parts: int = 1,
                           part_id: int = 0, overlay: bool = False) -> list[str]:
    """Predict every case of ``source_folder`` (nnU-Net's ``CASE_XXXX.ext`` naming) with its prompts.

    ``predictor`` is a ``MedalSPredictor`` or a ``TwoStagePredictor`` (anything with ``predict_image``,
    ``dataset_json``, ``plans_manager`` and ``accepts_mask_prompts``). Cases are split over ``num_parts`` machines
    as nnU-Net does (``part_id::num_parts``). Returns the written label-map paths.

    ``output_folder`` may be neither ``source_folder`` nor inside it. ``overwrite=False`` (``--continue_prediction``)
    skips a case only when it is complete (its JSON, written last, exists) and was predicted with the same prompts;
    ``.tmp_`` files a killed run left behind are removed first (each case's own only: other ``-part_id`` runs may
    share the folder).
    """
    if not Path(source_folder).is_dir():
        raise MedalSInputError(source_folder, "-i", "is not a folder; give the folder of CASE_0000 images")
    refuse_output_inside_input(output_folder, {"-i": source_folder})
    ending = predictor.dataset_json["file_ending"]
    every_case = {os.path.basename(files[0])[:-(len(ending) + 5)]
                  for files in create_lists_from_splitted_dataset_folder(source_folder, ending)}
    unknown = sorted(set(prompt_file.cases) - every_case)
    if unknown:
        raise MedalSInputError(prompt_file.source, f"cases.{unknown[0]}",
                               f"no such case in {source_folder} (cases there: {', '.join(sorted(every_case))})")
    if not predictor.accepts_mask_prompts and any(p.mask is not None for ps in
                                                  [prompt_file.prompts, *prompt_file.cases.values()] for p in ps):
        raise MedalSInputError(prompt_file.source, "mask", "two-stage prediction makes its own spatial prompts from "
                                                           "stage 1; drop --two_stage or the mask prompts")
    # every prompt text read against the model's vocabulary before the first case is written: a prompt the model
    # refuses (a side with no counterpart) stops the run here, not half-way through a cohort
    check_prompt_texts(predictor, [p.text for ps in [prompt_file.prompts, *prompt_file.cases.values()] for p in ps])
    # nnU-Net's own case list and -part_id/-num_parts split (it reads only ``dataset_json``); its overwrite rule
    # looks for CASE.npz and the label map only, so which cases are done is decided here
    lists, outputs, _ = nnUNetPredictor._manage_input_and_output_lists(predictor, source_folder, output_folder, None,
                                                                       True, part_id, num_parts, save_probabilities)
    reader_writer = plans_reader_writer(predictor.plans_manager)
    written = []
    for out in outputs:
        for leftover in case_files(out, ending)["temporary"]:
            leftover.unlink(missing_ok=True)
    for files, out in zip(lists, outputs):
        case = os.path.basename(out)
        prompts = prompt_file.prompts_for(case)
        if not overwrite and summary_matches(out, prompts) and Path(out + ending).is_file() and (
                not save_probabilities or Path(out + "_probabilities.npz").is_file()):
            print(f"{case}: complete with these prompts, skipped (--continue_prediction)")
            continue
        image, properties, masks = read_case(predictor, files, prompts)
        result = predictor.predict_image(image, properties, prompts, masks, source=str(files[0]))
        write_prediction(result, out, reader_writer, ending, save_probabilities, overlay)
        print(case_report(case, result.summary))
        written.append(out + ending)
    return written


def case_report(case: str, summary: dict) -> str:
    """What prediction prints per case: each prompt's volume; and for a prompt answered from its own embedding that
    found nothing, the nearest phrasing the model was trained on, to ask for instead if that is what was meant (the
    prompt is not replaced by it: an unseen wording may name something the model does not know)."""
    lines = [f"{case}: " + ", ".join(f"{p['text']}={p['volume_ml']} mL" for p in summary["prompts"])]
    for p in summary["prompts"]:
        match = p.get("match") or {}
        nearest = match.get("nearest_phrasing")
        if p.get("voxels") == 0 and match.get("method") in ("nearest embedding", "raw") and nearest and \
                normalise(nearest) != normalise(p["text"]):
            cosine = f" (cosine {match['cosine']:.2f})" if isinstance(match.get("cosine"), (int, float)) else ""
            lines.append(f"  note: {p['text']!r} found nothing; the nearest phrasing the model was trained on is "
                         f"{nearest!r}{cosine}: ask for that if it is what you mean")
    return "\n".join(lines)
