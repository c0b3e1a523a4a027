"""The region a two-stage prediction's second stage runs on (paper §2.6), in the image's voxels."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nnunetv2_medals.resampling import memory_guard, roi_from_mask


def stage_two_roi(stage_one_label_map: np.ndarray, spacing: Sequence[float], patch_size: Sequence[int],
                  network_spacing: Sequence[float], transpose_forward: Sequence[int], roi_scale: float = 1.25,
                  min_patches: float = 1.5) -> tuple[slice, ...] | None:
    """Stage 1's foreground box x ``roi_scale`` (:func:`roi_from_mask`), at least ``min_patches`` fine patches per
    axis; ``None`` when stage 1 found nothing.

    ``spacing`` is the image's (array order); ``patch_size``/``network_spacing`` are the fine model's, in network
    axis order (``transpose_forward`` maps network axes to image axes).
    """
    minimum = [0.0] * len(spacing)
    for net_axis, img_axis in enumerate(transpose_forward):
        minimum[img_axis] = min_patches * patch_size[net_axis] * network_spacing[net_axis] / spacing[img_axis]
    return roi_from_mask(stage_one_label_map > 0, roi_scale, minimum)


def _extent_net(roi: tuple[slice, ...], spacing: Sequence[float], transpose_forward: Sequence[int]) -> list[float]:
    extent = [(sl.stop - sl.start) * spacing[axis] for axis, sl in enumerate(roi)]
    return [extent[i] for i in transpose_forward]


def guarded_spacing(roi: tuple[slice, ...], spacing: Sequence[float], patch_size: Sequence[int],
                    network_spacing: Sequence[float], transpose_forward: Sequence[int]) -> list[float] | None:
    """The coarser network spacing :func:`memory_guard` asks for on an oversized ROI, ``None`` when it fits."""
    guarded, triggered = memory_guard(network_spacing, _extent_net(roi, spacing, transpose_forward), patch_size)
    return list(guarded) if triggered else None


def stage_two_spacing(roi: tuple[slice, ...], spacing: Sequence[float], patch_size: Sequence[int],
                      network_spacing: Sequence[float], transpose_forward: Sequence[int],
                      dynamic: Sequence[float] | None = None) -> tuple[list[float], bool]:
    """The network spacing stage 2 runs at on ``roi``, and whether the memory guard decided it.

    ``dynamic`` is the case's dynamic-resampling spacing (paper §2.5, :meth:`MedalSPredictor.case_spacing`; network
    axis order), ``None`` when dynamic resampling is off (the plans' ``network_spacing``). The memory guard wins:
    its spacing at the plans' spacing (:func:`guarded_spacing`) is a floor the dynamic spacing cannot go below
    (per axis max(dynamic, guarded)), and the guard is applied once more at the result, since a dynamic spacing
    finer than the plans' can itself make the ROI too many voxels.
    """
    extent = _extent_net(roi, spacing, transpose_forward)
    chosen = [float(s) for s in (dynamic if dynamic is not None else network_spacing)]
    floor = guarded_spacing(roi, spacing, patch_size, network_spacing, transpose_forward)
    if floor is not None:
        chosen = [max(c, f) for c, f in zip(chosen, floor)]
    final, triggered = memory_guard(chosen, extent, patch_size)
    return list(final), floor is not None or triggered
