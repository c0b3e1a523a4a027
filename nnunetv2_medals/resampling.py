"""Dynamic resampling and the two-stage ROI (paper §2.5-2.6) as pure functions on spacings, shapes and masks.

Spacings, extents and patch sizes are per array axis (z, y, x): spacings and extents in mm, patches in voxels.

* :func:`dynamic_spacing` - the spacing a case is resampled to, from the model's target spacing and the size of the
  smallest prompted structure (Eq. in §2.5).
* :func:`memory_guard` - coarsens the stage-2 spacing when an ROI would be too many fine patches (§2.6).
* :func:`roi_from_mask` - the stage-2 region from the stage-1 foreground (§2.6).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def dynamic_spacing(original: Sequence[float], target: Sequence[float], patch: Sequence[int],
                    extent_mm: Sequence[float], alpha: float = 0.5, max_zoom: float = 2.0) -> tuple[float, ...]:
    """Paper §2.5, dynamic resampling: per axis i,

        z_i  = e_i / (alpha * p_i)                  the spacing at which the structure (extent e_i mm) spans
                                                    alpha of the patch (p_i voxels)
        s'_i = max(t_i, z_i)  if s_i > t_i          a coarse image is never upsampled beyond the model's spacing
                                                    t_i, but a big structure may be zoomed out to fit the patch
        s'_i = min(t_i, z_i)  otherwise             a fine image keeps up to t_i, finer still for a small structure

    then clamped to the practical bounds [max(t_i / max_zoom, min(s_i, t_i)), t_i * max_zoom]: never finer than the
    image itself (no detail to gain) and never more than ``max_zoom`` away from the spacing the model was trained at.
    (The paper writes the zoom spacing as p_i * alpha * t_i / d_i with d_i the structure's size; written with the
    extent in mm it is the spacing that gives the structure alpha * p_i voxels.)
    """
    if not 0 < alpha <= 1:
        raise ValueError(f"alpha must lie in (0, 1], got {alpha}")
    if max_zoom < 1:
        raise ValueError(f"max_zoom must be >= 1, got {max_zoom}")
    out = []
    for s, t, p, e in zip(original, target, patch, extent_mm, strict=True):
        zoom = float(e) / (alpha * float(p))
        new = max(t, zoom) if s > t else min(t, zoom)
        low, high = max(t / max_zoom, min(s, t)), t * max_zoom
        out.append(float(min(max(new, low), high)))
    return tuple(out)


def memory_guard(spacing: Sequence[float], extent_mm: Sequence[float], patch: Sequence[int],
                 trigger: float = 1.8, relax: float = 1.9) -> tuple[tuple[float, ...], bool]:
    """Paper §2.6, the stage-2 memory guard: an ROI of ``extent_mm`` resampled to ``spacing`` has
    n_i = e_i / s_i voxels; when prod(n_i) > trigger^3 * prod(p_i) (more than ~6 fine patches of voxels) the spacing
    is coarsened per axis to max(s_i, e_i / (relax * p_i)), so no axis exceeds ``relax`` patches.

    Returns the (possibly coarsened) spacing and whether the guard triggered.
    """
    voxels = np.prod([e / s for e, s in zip(extent_mm, spacing, strict=True)])
    if voxels <= trigger ** 3 * np.prod(patch):
        return tuple(float(s) for s in spacing), False
    return tuple(float(max(s, e / (relax * p))) for s, e, p in zip(spacing, extent_mm, patch)), True


def roi_from_mask(mask: np.ndarray, scale: float = 1.25, min_size: Sequence[int] | None = None
                  ) -> tuple[slice, ...] | None:
    """Paper §2.6: the stage-2 ROI, i.e. the bounding box of the stage-1 foreground (all prompts together), scaled
    by ``scale`` (1.1-1.5) about its centre, at least ``min_size`` voxels per axis (half a stage-2 patch, in the
    image's voxels), and kept inside the image (shifted inwards where it would cross the border; clipped only when
    larger than the image). ``None`` when the mask is empty (stage 2 then runs on the whole image without prompts).
    """
    if not 1.0 <= scale <= 2.0:
        raise ValueError(f"ROI scale must lie in [1, 2], got {scale}")
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes or boxes[0] is None:
        return None
    min_size = (0,) * mask.ndim if min_size is None else min_size
    roi = []
    for sl, n, minimum in zip(boxes[0], mask.shape, min_size, strict=True):
        centre = (sl.start + sl.stop) / 2
        size = min(n, max(int(np.ceil((sl.stop - sl.start) * scale)), int(np.ceil(minimum))))
        start = int(round(centre - size / 2))
        start = min(max(start, 0), n - size)
        roi.append(slice(start, start + size))
    return tuple(roi)
