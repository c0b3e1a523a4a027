"""From network-grid probabilities to results in the input image's geometry, and the files they are written to.

* :func:`export_prediction` — the label map in the image geometry (by default :mod:`.slab_export`: slab by slab,
  each output voxel once; ``method="nnunet"``: nnU-Net's export a few prompts at a time), Algorithm 3 and instance
  numbering, the per-case summary; probabilities in the image geometry only when asked for (nnU-Net's export);
* :func:`paste_into_image` — a prediction of an ROI crop put back into the whole image (two-stage);
* :func:`write_prediction` — label map, instance maps, summary JSON, optional probabilities and PNG overlay, as one
  unit (temporary names, renames, the JSON last as the case's "complete" marker; :func:`case_files`);
* :func:`challenge_segs` / :func:`write_challenge_npz` — the BiomedSegFM ``segs`` contract.
"""
from __future__ import annotations

import copy
import io
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.utilities.label_handling.label_handling import LabelManager
from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

from nnunetv2_medals.inference.slab_export import label_map_in_image_geometry
from nnunetv2_medals.io_utils import atomic_write_bytes
from nnunetv2_medals.overlay import write_overlay_png
from nnunetv2_medals.postprocessing import MIN_INSTANCE_VOLUME_MM3, min_instance_voxels, postprocess_label_map
from nnunetv2_medals.text_prompts.prompt_file import Prompt

#: voxels per float32 copy that the export may hold at once (nnU-Net's export keeps ~3 copies of what it is given)
EXPORT_VOXEL_BUDGET = 2 ** 26


@dataclass
class PromptedPrediction:
    """One case's result on the input image's voxel grid, in the reader's array order: for models planned with
    canonical orientation that is the canonical (RAS) order, which :func:`write_prediction` turns back into the
    input's own voxel order when it writes the label and instance maps (``properties`` holds what it needs;
    ``--save_probabilities`` keeps nnU-Net's convention: the reader's array order).

    ``label_map`` (*S) holds the prompts' label values; ``instances[label]`` numbers the components of instance
    prompts; ``probabilities`` (N, *S) follow ``prompts``; ``summary`` is what the per-case JSON holds.
    """

    label_map: np.ndarray
    instances: dict
    #: the (N, *S) probabilities, or a function computing them when first read (:attr:`probabilities`)
    probabilities_source: np.ndarray | Callable[[], np.ndarray]
    prompts: tuple
    properties: dict
    summary: dict = field(default_factory=dict)

    @property
    def probabilities(self) -> np.ndarray:
        """(N, *S) float16 probabilities in the image geometry, computed on first use when the export left them
        out (``--save_probabilities`` and callers that read them)."""
        if callable(self.probabilities_source):
            self.probabilities_source = self.probabilities_source()
        return self.probabilities_source


def prompt_label_manager(labels: Sequence[int]) -> LabelManager:
    """nnU-Net label handling for one prompt set: one sigmoid channel per prompt (region mode)."""
    label_dict = {"background": 0}
    for i, label in enumerate(labels):
        label_dict[f"prompt_{i}"] = [int(label), int(label)]  # two entries: nnU-Net's switch to region mode
    return LabelManager(label_dict, [int(v) for v in labels])


def to_image_geometry(probs: torch.Tensor, properties: dict, labels: Sequence[int], plans_manager,
                      configuration_manager, voxel_budget: int = EXPORT_VOXEL_BUDGET) -> tuple[np.ndarray, np.ndarray]:
    """Network-grid probabilities (N, *grid) -> image-geometry probabilities (N, *S) float16 and the label map.

    nnU-Net's export runs on a few prompts at a time: given all N at once it holds about three float32 copies of N
    image-sized volumes (24 prompts of a 512x512x300 CT: ~22 GB). The label map (argmax where >= 0.5) is updated
    chunk by chunk in float32; the stored probabilities are float16 (Algorithm 3 and ``--save_probabilities`` need
    no more).
    """
    n = probs.shape[0]
    logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
    image_voxels = int(np.prod(properties["shape_before_cropping"]))
    chunk = max(1, min(n, voxel_budget // max(image_voxels, 1)))
    out = best = best_index = None
    for start in range(0, n, chunk):
        part = slice(start, min(start + chunk, n))
        _, p = convert_predicted_logits_to_segmentation_with_correct_shape(
            logits[part], plans_manager, configuration_manager, prompt_label_manager(labels[part]),
            properties, return_probabilities=True, num_threads_torch=torch.get_num_threads())
        p = torch.from_numpy(p) if isinstance(p, np.ndarray) else p  # a transposed view: torch keeps strides
        if out is None:
            out = torch.empty((n, *p.shape[1:]), dtype=torch.float16)
            best = torch.full(p.shape[1:], -1.0)
            best_index = torch.zeros(p.shape[1:], dtype=torch.int64 if n > 255 else torch.uint8)
        for j in range(p.shape[0]):
            # four passes over the image per prompt (store, compare, index, running max); on ties the earlier
            # prompt wins, as a global argmax would
            channel = p[j]
            out[start + j] = channel
            better = channel > best
            best_index.masked_fill_(better, start + j)
            torch.maximum(best, channel, out=best)
        del p
    lookup = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    label_map = torch.where(best >= 0.5, lookup[best_index.long()], 0).numpy().astype(np.uint16)
    return out.numpy(), label_map


def label_voxels(label_map: np.ndarray, labels: Sequence[int], rows: int = 16) -> dict[int, int]:
    """Voxels of each label value in ``label_map``, counted in one pass (blocks of ``rows`` along axis 0)."""
    counts = np.zeros(max([0, *labels]) + 1, np.int64)
    for start in range(0, label_map.shape[0], rows):
        block = np.bincount(label_map[start:start + rows].ravel(), minlength=counts.size)
        counts += block[:counts.size]
    return {int(label): int(counts[label]) for label in labels}


def case_summary(prompts: Sequence[Prompt], label_map: np.ndarray, instances: dict, properties: dict,
                 prompt_info: Sequence[dict] | None = None, min_instance_volume_mm3: float | None = None) -> dict:
    """What the per-case JSON holds: per prompt its voxels, volume (mL), instance count and ``prompt_info`` (how the
    text was matched to the model's vocabulary); the spacing(s); the instance size limit (mm³) when a prompt is an
    instance prompt."""
    spacing = properties["spacing"]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    prompt_info = prompt_info or [{}] * len(prompts)
    voxels = label_voxels(label_map, [p.label for p in prompts])
    return {"prompts": [
        {"text": p.text, "label": p.label, "instance": p.instance, "mask": str(p.mask) if p.mask else None,
         "voxels": voxels[p.label], "volume_ml": round(float(voxels[p.label]) * voxel_ml, 3),
         **({"instances": int(instances[p.label].max())} if p.instance else {}), **info}
        for p, info in zip(prompts, prompt_info)],
        "spacing": [float(s) for s in spacing],
        **({"min_instance_volume_mm3": round(float(min_instance_volume_mm3), 3)}
           if min_instance_volume_mm3 is not None and any(p.instance for p in prompts) else {}),
        **({"network_spacing": properties["network_spacing"]} if properties.get("network_spacing") else {})}


def export_prediction(probs: torch.Tensor, properties: dict, prompts: Sequence[Prompt], plans_manager,
                      configuration_manager, voxel_budget: int = EXPORT_VOXEL_BUDGET,
                      multi_part: Sequence[bool] | None = None,
                      prompt_info: Sequence[dict] | None = None,
                      min_instance_volume_mm3: float = MIN_INSTANCE_VOLUME_MM3, method: str = "slab",
                      device=None) -> PromptedPrediction:
    """Network-grid probabilities (N, *grid) of ``prompts`` -> the case's result in the image geometry.

    ``method="slab"`` (default): :func:`.slab_export.label_map_in_image_geometry` on ``device`` (each output voxel
    once; probabilities in the image geometry are computed by nnU-Net's export only when read); it falls back to
    ``"nnunet"`` (nnU-Net's export of all probabilities, then :func:`.postprocessing.postprocess_label_map`) when
    the plans name a probability resampling it does not reproduce. ``multi_part[n]`` exempts prompt n from
    Algorithm 3 (:func:`.postprocessing.is_multi_part`); ``prompt_info[n]`` goes into the summary beside prompt n;
    instance components under ``min_instance_volume_mm3`` (at the image's spacing) are dropped."""
    if method not in ("slab", "nnunet"):
        raise ValueError(f"export method must be 'slab' or 'nnunet', got {method!r}")
    labels = [p.label for p in prompts]
    instance = [p.instance for p in prompts]
    multi_part = [False] * len(labels) if multi_part is None else list(multi_part)
    min_voxels = min_instance_voxels(min_instance_volume_mm3, properties["spacing"])
    exported = None
    if method == "slab":
        exported = label_map_in_image_geometry(probs, properties, labels, instance, multi_part, min_voxels,
                                               plans_manager, configuration_manager, device)
    if exported is None:
        probabilities, label_map = to_image_geometry(probs, properties, labels, plans_manager, configuration_manager,
                                                     voxel_budget)
        label_map, instances = postprocess_label_map(label_map, probabilities, labels, instance, min_voxels,
                                                     multi_part=multi_part)
    else:
        label_map, instances = exported
        # the configuration as it is now (callers change its spacing for a case): probabilities are made later
        frozen = ConfigurationManager(copy.deepcopy(configuration_manager.configuration))
        grid = probs.detach().cpu()

        def probabilities():
            return to_image_geometry(grid, properties, labels, plans_manager, frozen, voxel_budget)[0]
    return PromptedPrediction(label_map, instances, probabilities, tuple(prompts), properties,
                              case_summary(prompts, label_map, instances, properties, prompt_info,
                                           min_instance_volume_mm3))


def paste_into_image(crop_result: PromptedPrediction, roi: tuple[slice, ...], shape: Sequence[int],
                     properties: dict) -> PromptedPrediction:
    """A prediction of an ROI crop put back into the full image (zeros outside the ROI; probabilities pasted when
    first read)."""
    label_map = np.zeros(shape, crop_result.label_map.dtype)
    label_map[roi] = crop_result.label_map
    instances = {}
    for label, numbered in crop_result.instances.items():
        instances[label] = np.zeros(shape, numbered.dtype)
        instances[label][roi] = numbered

    def probabilities():
        pasted = np.zeros((crop_result.probabilities.shape[0], *shape), crop_result.probabilities.dtype)
        pasted[(slice(None), *roi)] = crop_result.probabilities
        return pasted
    summary = dict(crop_result.summary)
    summary["spacing"] = [float(s) for s in properties["spacing"]]
    return PromptedPrediction(label_map, instances, probabilities, crop_result.prompts,
                              {**properties, "source": crop_result.properties.get("source")}, summary)


def case_files(output_file_truncated: str | os.PathLike, file_ending: str) -> dict[str, list[Path]]:
    """The files of one case in its output folder: ``outputs`` (label map, ``CASE_instances_labelL``, probabilities,
    overlay, ``CASE.json``) and ``temporary`` (``.tmp_[PID_]NAME`` left by a run killed while writing them)."""
    out = Path(output_file_truncated)
    case = out.name

    def is_case_file(name: str) -> bool:
        if name in (case + file_ending, f"{case}_probabilities.npz", f"{case}_overlay.png", f"{case}.json"):
            return True
        label = name[len(f"{case}_instances_label"):-len(file_ending)] if name.endswith(file_ending) else ""
        return name.startswith(f"{case}_instances_label") and label.isdigit()

    found = {"outputs": [], "temporary": []}
    if not out.parent.is_dir():
        return found
    for path in out.parent.iterdir():
        name = path.name
        if is_case_file(name):
            found["outputs"].append(path)
        elif name.startswith(".tmp_"):
            rest = name[len(".tmp_"):]
            pid, _, after_pid = rest.partition("_")
            if is_case_file(rest) or (pid.isdigit() and is_case_file(after_pid)):
                found["temporary"].append(path)
    return found


def summary_matches(output_file_truncated: str | os.PathLike, prompts: Sequence[Prompt]) -> bool:
    """Is this case complete (its JSON, written last, exists) and was it predicted with these prompts (text, label,
    instance, mask)?"""
    marker = Path(f"{output_file_truncated}.json")
    try:
        done = json.loads(marker.read_text())["prompts"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    key = [(p.text, p.label, p.instance, str(p.mask) if p.mask else None) for p in prompts]
    try:
        return key == [(d["text"], d["label"], d["instance"], d["mask"]) for d in done]
    except (KeyError, TypeError):
        return False


def write_prediction(result: PromptedPrediction, output_file_truncated: str, reader_writer, file_ending: str,
                     save_probabilities: bool = False, overlay: bool = False) -> None:
    """Write the label map (nnU-Net's writer ``reader_writer``), instance maps, the summary JSON, optionally the
    probabilities and a PNG overlay (three orthogonal slices through each found structure), as one unit.

    The case's old JSON goes first (the case is incomplete from then on), every file is written under a temporary
    name, files of an earlier run that this one does not write (instance maps of other labels, probabilities,
    overlay) are removed, the new files are renamed into place and the JSON comes last: a case with its JSON is
    complete, a killed run leaves a case without one (``--continue_prediction`` redoes it) and its ``.tmp_`` files
    are removed the next time the case is written.
    """
    out = Path(output_file_truncated)
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = case_files(out, file_ending)
    for leftover in previous["temporary"]:
        leftover.unlink(missing_ok=True)
    marker = out.with_name(out.name + ".json")
    marker.unlink(missing_ok=True)
    staged: dict[Path, Path] = {}  # final -> temporary

    def stage(target: Path) -> Path:
        staged[target] = target.with_name(f".tmp_{os.getpid()}_{target.name}")
        return staged[target]

    try:
        reader_writer.write_seg(result.label_map, str(stage(out.with_name(out.name + file_ending))),
                                result.properties)
        for label, numbered in result.instances.items():
            reader_writer.write_seg(numbered, str(stage(out.with_name(f"{out.name}_instances_label{label}"
                                                                      f"{file_ending}"))), result.properties)
        if save_probabilities:
            np.savez_compressed(stage(out.with_name(out.name + "_probabilities.npz")),
                                probabilities=result.probabilities.astype(np.float16),
                                labels=np.array([p.label for p in result.prompts]))
        if overlay:
            image, props = reader_writer.read_images([result.properties["source"]])
            write_overlay_png(image[0], result.label_map, {p.label: p.text for p in result.prompts},
                              stage(out.with_name(out.name + "_overlay.png")), props["spacing"])
        json_tmp = out.with_name(f".tmp_{os.getpid()}_{marker.name}")
        json_tmp.write_text(json.dumps(result.summary, indent=2) + "\n")
    except BaseException:
        for tmp in [*staged.values(), out.with_name(f".tmp_{os.getpid()}_{marker.name}")]:
            tmp.unlink(missing_ok=True)
        raise
    for stale in previous["outputs"]:
        if stale not in staged and stale != marker:
            stale.unlink(missing_ok=True)
    for target, tmp in staged.items():
        os.replace(tmp, target)
    os.replace(json_tmp, marker)


def challenge_segs(result: PromptedPrediction) -> np.ndarray:
    """The challenge's ``segs`` (uint16): label values; where instance prompts exist, instance ids numbered across
    the instance prompts instead."""
    segs = result.label_map
    if any(p.instance for p in result.prompts):
        segs = segs.copy()
        offset = 0
        for p in result.prompts:
            if p.instance:
                numbered = result.instances[p.label]
                segs[numbered > 0] = numbered[numbered > 0] + offset
                offset += int(numbered.max())
    return segs.astype(np.uint16)


def write_challenge_npz(segs: np.ndarray, path: str | os.PathLike) -> None:
    """Write ``segs`` (:func:`challenge_segs`, in the npz's voxel order) as a compressed npz, atomically."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, segs=np.asarray(segs, np.uint16))
    atomic_write_bytes(path, buffer.getvalue())
