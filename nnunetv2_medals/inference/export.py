"""From network-grid probabilities to results in the input image's geometry, and the files they are written to.

* :func:`export_prediction` — nnU-Net's export (resampling with the plans' function, un-cropping, un-transposing)
  a few prompts at a time, the label map, Algorithm 3 and instance numbering, the per-case summary;
* :func:`paste_into_image` — a prediction of an ROI crop put back into the whole image (two-stage);
* :func:`write_prediction` — label map, instance maps, summary JSON, optional probabilities and PNG overlay;
* :func:`challenge_segs` / :func:`write_challenge_npz` — the BiomedSegFM ``segs`` contract.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_medals.io_utils import atomic_write_bytes, atomic_write_json
from nnunetv2_medals.overlay import write_overlay_png
from nnunetv2_medals.postprocessing import postprocess_label_map
from nnunetv2_medals.text_prompts.prompt_file import Prompt

#: voxels per float32 copy that the export may hold at once (nnU-Net's export keeps ~3 copies of what it is given)
EXPORT_VOXEL_BUDGET = 2 ** 26


@dataclass
class PromptedPrediction:
    """One case's result, in the input image's geometry.

    ``label_map`` (*S) holds the prompts' label values; ``instances[label]`` numbers the components of instance
    prompts; ``probabilities`` (N, *S) follow ``prompts``; ``summary`` is what the per-case JSON holds.
    """

    label_map: np.ndarray
    instances: dict
    probabilities: np.ndarray
    prompts: tuple
    properties: dict
    summary: dict = field(default_factory=dict)


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


def case_summary(prompts: Sequence[Prompt], label_map: np.ndarray, instances: dict, properties: dict,
                 prompt_info: Sequence[dict] | None = None) -> dict:
    """What the per-case JSON holds: per prompt its voxels, volume (mL), instance count and ``prompt_info`` (how the
    text was matched to the model's vocabulary); the spacing(s)."""
    spacing = properties["spacing"]
    voxel_ml = float(np.prod(spacing)) / 1000.0
    prompt_info = prompt_info or [{}] * len(prompts)
    return {"prompts": [
        {"text": p.text, "label": p.label, "instance": p.instance, "mask": str(p.mask) if p.mask else None,
         "voxels": int((label_map == p.label).sum()), "volume_ml": round(float((label_map == p.label).sum())
                                                                          * voxel_ml, 3),
         **({"instances": int(instances[p.label].max())} if p.instance else {}), **info}
        for p, info in zip(prompts, prompt_info)],
        "spacing": [float(s) for s in spacing],
        **({"network_spacing": properties["network_spacing"]} if properties.get("network_spacing") else {})}


def export_prediction(probs: torch.Tensor, properties: dict, prompts: Sequence[Prompt], plans_manager,
                      configuration_manager, voxel_budget: int = EXPORT_VOXEL_BUDGET,
                      multi_part: Sequence[bool] | None = None,
                      prompt_info: Sequence[dict] | None = None) -> PromptedPrediction:
    """Network-grid probabilities (N, *grid) of ``prompts`` -> the case's result in the image geometry.

    ``multi_part[n]`` exempts prompt n from Algorithm 3 (:func:`.postprocessing.is_multi_part`); ``prompt_info[n]``
    goes into the summary beside prompt n."""
    labels = [p.label for p in prompts]
    probabilities, label_map = to_image_geometry(probs, properties, labels, plans_manager, configuration_manager,
                                                 voxel_budget)
    label_map, instances = postprocess_label_map(label_map, probabilities, labels, [p.instance for p in prompts],
                                                 multi_part=multi_part)
    return PromptedPrediction(label_map, instances, probabilities, tuple(prompts), properties,
                              case_summary(prompts, label_map, instances, properties, prompt_info))


def paste_into_image(crop_result: PromptedPrediction, roi: tuple[slice, ...], shape: Sequence[int],
                     properties: dict) -> PromptedPrediction:
    """A prediction of an ROI crop put back into the full image (zeros outside the ROI)."""
    label_map = np.zeros(shape, crop_result.label_map.dtype)
    label_map[roi] = crop_result.label_map
    instances = {}
    for label, numbered in crop_result.instances.items():
        instances[label] = np.zeros(shape, numbered.dtype)
        instances[label][roi] = numbered
    probabilities = np.zeros((crop_result.probabilities.shape[0], *shape), crop_result.probabilities.dtype)
    probabilities[(slice(None), *roi)] = crop_result.probabilities
    summary = dict(crop_result.summary)
    summary["spacing"] = [float(s) for s in properties["spacing"]]
    return PromptedPrediction(label_map, instances, probabilities, crop_result.prompts,
                              {**properties, "source": crop_result.properties.get("source")}, summary)


def write_prediction(result: PromptedPrediction, output_file_truncated: str, reader_writer, file_ending: str,
                     save_probabilities: bool = False, overlay: bool = False) -> None:
    """Write the label map (nnU-Net's writer ``reader_writer``), instance maps, the summary JSON, optionally the
    probabilities and a PNG overlay (three orthogonal slices through each found structure).

    Every file goes through a temporary name and a rename, so a crash leaves no half-written output.
    """
    out = Path(output_file_truncated)
    out.parent.mkdir(parents=True, exist_ok=True)

    def write_seg(array, target: Path):
        tmp = target.with_name(f".tmp_{os.getpid()}_{target.name}")
        reader_writer.write_seg(array, str(tmp), result.properties)
        os.replace(tmp, target)

    write_seg(result.label_map, out.with_name(out.name + file_ending))
    for label, numbered in result.instances.items():
        write_seg(numbered, out.with_name(f"{out.name}_instances_label{label}{file_ending}"))
    if save_probabilities:
        tmp = out.with_name(f".tmp_{out.name}_probabilities.npz")
        np.savez_compressed(tmp, probabilities=result.probabilities.astype(np.float16),
                            labels=np.array([p.label for p in result.prompts]))
        os.replace(tmp, out.with_name(out.name + "_probabilities.npz"))
    if overlay:
        image, props = reader_writer.read_images([result.properties["source"]])
        write_overlay_png(image[0], result.label_map, {p.label: p.text for p in result.prompts},
                          out.with_name(out.name + "_overlay.png"), props["spacing"])
    atomic_write_json(out.with_name(out.name + ".json"), result.summary)


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
