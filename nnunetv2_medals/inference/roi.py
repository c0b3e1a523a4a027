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


def guarded_spacing(roi: tuple[slice, ...], spacing: Sequence[float], patch_size: Sequence[int],
                    network_spacing: Sequence[float], transpose_forward: Sequence[int]) -> list[float] | None:
    """The coarser network spacing :func:`memory_guard` asks for on an oversized ROI, ``None`` when it fits."""
    extent = [(sl.stop - sl.start) * spacing[axis] for axis, sl in enumerate(roi)]
    extent_net = [extent[i] for i in transpose_forward]
    guarded, triggered = memory_guard(network_spacing, extent_net, patch_size)
    return list(guarded) if triggered else None
