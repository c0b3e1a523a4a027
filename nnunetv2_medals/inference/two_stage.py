"""Two-stage (coarse -> fine) prediction, paper §2.6.

Stage 1: the coarse model (nnU-Net's ``3d_lowres`` configuration of the same dataset, trainer and plans: large field
of view, low resolution) predicts every prompt on the whole image. Stage 2: the fine model (``3d_fullres``) predicts
on the ROI around stage 1's foreground (:func:`~nnunetv2_medals.inference.roi.stage_two_roi`: union box x
``roi_scale``, at least 1.5 fine patches, see :func:`predict_two_stage`), with each prompt's stage-1 mask as its
spatial prompt (hybrid mode). Those prompts are a prediction, so stage 2 runs twice with complementary block halves of
them and each voxel takes the pass in which its own prompt was hidden (Algorithm 2's combination,
:func:`~nnunetv2_medals.inference.self_refinement.complementary_prompt_prediction`); otherwise stage 2 would copy
stage 1's false positives. Where stage 1 found nothing, stage 2 runs on the whole image without prompts. Oversized
ROIs are resampled coarser first (:func:`~nnunetv2_medals.resampling.memory_guard`; with dynamic resampling the
guard's spacing is a floor, :func:`~nnunetv2_medals.inference.roi.stage_two_spacing`). Both models stay loaded across
cases; the result is in the input image's geometry, like a single-stage prediction. :class:`TwoStagePredictor`
answers the same ``predict_image`` call as one ``MedalSPredictor``, so the folder loop does not branch.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from typing import Sequence

import numpy as np

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.inference.export import PromptedPrediction, paste_into_image
from nnunetv2_medals.inference.predictor import MedalSPredictor
from nnunetv2_medals.inference.roi import stage_two_roi, stage_two_spacing
from nnunetv2_medals.laterality import find_midline
from nnunetv2_medals.text_prompts.prompt_file import Prompt


class TwoStagePredictor:
    """A coarse and a fine :class:`MedalSPredictor` behind one ``predict_image`` (see the module docstring).

    Reads and writes files like the fine model (``dataset_json``, ``plans_manager``); it makes its own spatial
    prompts, so it takes none.
    """

    accepts_mask_prompts = False

    def __init__(self, coarse: MedalSPredictor, fine: MedalSPredictor, roi_scale: float = 1.25):
        self.coarse, self.fine, self.roi_scale = coarse, fine, roi_scale
        self.dataset_json = fine.dataset_json
        self.plans_manager = fine.plans_manager

    def predict_image(self, image: np.ndarray, properties: dict, prompts: Sequence[Prompt],
                      masks: Sequence[np.ndarray | None] | None = None, source: str = "array") -> PromptedPrediction:
        """Two-stage prediction of an image (C, *S) with its reader ``properties`` (:func:`predict_two_stage`)."""
        if masks is not None and any(m is not None for m in masks):
            raise MedalSInputError(source, "mask", "two-stage prediction makes its own spatial prompts from stage 1")
        return predict_two_stage(self.coarse, self.fine, image, properties, prompts, self.roi_scale, source=source)


def predict_two_stage(coarse: MedalSPredictor, fine: MedalSPredictor, image: np.ndarray, properties: dict,
                      prompts: Sequence[Prompt], roi_scale: float = 1.25, guard: bool = True,
                      source: str = "array", min_patches: float = 1.5) -> PromptedPrediction:
    """Two-stage prediction of one image (C, *S) whose reader ``properties`` hold its ``spacing`` (array order).

    The ROI spans at least ``min_patches`` fine patches per axis (our addition: the paper sets no minimum). Measured
    with the two-stage benchmark's models (benchmarks/two_stage.py, 3 held-out phantoms): lymph nodes Dice 0.52 with a
    half-patch minimum (one case 0.0: the fine model saw mostly padding around its prompt), 0.87 with one patch,
    0.91 with 1.5 patches; liver tumour 0.80, 0.91, 0.92. So stage 2 gets context around small structures.

    The summary gains ``two_stage``: the ROI (voxel slices of the image), whether stage 2 fell back to the whole
    image, whether the memory guard triggered, the stage-2 spacing and each stage's seconds.
    """
    image = np.asarray(image, dtype=np.float32)
    image = image[None] if image.ndim == 3 else image
    spacing = [float(s) for s in properties["spacing"]]
    start = time.perf_counter()
    # the side guard's midline comes from the whole image: stage 2 sees only the ROI
    midline = find_midline(image[0], spacing, lr_axis=2) if fine.guards_sides() else None
    first = coarse.predict_array(image, spacing, prompts, source, midline=midline)
    stage1_s = time.perf_counter() - start

    cm = fine.configuration_manager
    transpose = fine.plans_manager.transpose_forward
    roi = stage_two_roi(first.label_map, spacing, cm.patch_size, cm.spacing, transpose, roi_scale, min_patches)
    info = {"roi": None, "fallback": roi is None, "memory_guard": False, "stage2_spacing": None,
            "stage1_s": round(stage1_s, 3)}
    start = time.perf_counter()
    if roi is None:
        # the paper's fallback: full-volume inference at the fine model's spacing. Dynamic resampling stays off here:
        # up to 2x finer per axis on the whole image (8x the voxels) is exactly what the memory guard exists to stop
        with _at_spacing(fine, cm.spacing):
            second = fine.predict_array(image, spacing, prompts, source, midline=midline)
        info["stage2_spacing"] = [float(s) for s in cm.spacing]
        # the reader's properties (the writer needs e.g. ``sitk_stuff``), as the ROI paste gives them
        result = dataclasses.replace(second, properties={**properties, "source": second.properties.get("source")})
    else:
        crop = image[(slice(None), *roi)]
        masks = [first.label_map[roi] == p.label for p in prompts]
        dynamic = fine.case_spacing(spacing, prompts)   # the plans' spacing unless dynamic resampling is on
        if guard:
            stage2, info["memory_guard"] = stage_two_spacing(roi, spacing, cm.patch_size, cm.spacing, transpose,
                                                             dynamic)
        else:
            stage2 = dynamic
        with _at_spacing(fine, stage2), _prompts_from_prediction(fine):
            second = fine.predict_array(crop, spacing, prompts, source, masks=masks,
                                        midline=midline.shifted(roi[2].start) if midline is not None else None)
        result = paste_into_image(second, roi, image.shape[1:], properties)
        info["roi"] = [[sl.start, sl.stop] for sl in roi]
        info["stage2_spacing"] = [float(s) for s in stage2]
    info["stage2_s"] = round(time.perf_counter() - start, 3)
    result.summary["two_stage"] = info
    return result


@contextmanager
def _at_spacing(predictor: MedalSPredictor, spacing: Sequence[float]):
    """Run ``predictor`` at exactly ``spacing`` (network axis order): its dynamic resampling is switched off
    meanwhile, since ``spacing`` already includes it (it would otherwise treat ``spacing`` as the model's spacing
    and zoom up to 2x finer again, undoing the memory guard)."""
    alpha = predictor.dynamic_alpha
    predictor.dynamic_alpha = None
    try:
        with predictor.network_spacing(spacing):
            yield
    finally:
        predictor.dynamic_alpha = alpha


@contextmanager
def _prompts_from_prediction(predictor: MedalSPredictor):
    """Meanwhile ``predictor``'s mask prompts count as a prediction (stage 1's masks): every prediction with mask
    prompts becomes :func:`.self_refinement.complementary_prompt_prediction` (two passes, complementary block halves of the prompts,
    combined voxel-wise; ``MedalSPredictor.prompts_from_prediction``)."""
    before = predictor.prompts_from_prediction
    predictor.prompts_from_prediction = True
    try:
        yield
    finally:
        predictor.prompts_from_prediction = before
