"""Dynamic resampling and the two-stage ROI (paper §2.5-2.6) as pure functions on spacings, shapes and masks.

Spacings, extents and patch sizes are per array axis (z, y, x): spacings and extents in mm, patches in voxels.

* :func:`dynamic_spacing` - the spacing a case is resampled to, from the model's target spacing and the size of the
  smallest prompted structure (§2.5; how it differs from the paper's formula is in its docstring).
* :func:`memory_guard` - coarsens the stage-2 spacing when an ROI would be too many fine patches (§2.6).
* :func:`roi_from_mask` - the stage-2 region from the stage-1 foreground (§2.6).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage


def dynamic_spacing(original: Sequence[float], target: Sequence[float], patch: Sequence[int],
                    extent_mm: Sequence[float], alpha: float = 0.5, max_zoom: float = 2.0,
                    floor: Sequence[float] | None = None) -> tuple[float, ...]:
    """Dynamic resampling (paper §2.5), our variant of its formula. Per axis i:

        z_i  = e_i / (alpha * p_i)                  the spacing at which the structure (extent e_i mm) spans
                                                    alpha of the patch (p_i voxels)
        s'_i = max(t_i, z_i)  if s_i > t_i          a coarse image is never upsampled beyond the model's spacing
                                                    t_i, but a big structure may be zoomed out to fit the patch
        s'_i = min(t_i, z_i)  otherwise             a fine image keeps up to t_i, finer still for a small structure

    then clamped to [max(t_i / max_zoom, min(s_i, t_i), floor_i), t_i * max_zoom] (``floor`` wins over the upper
    bound; a caller that must not go below some spacing, such as a memory limit, passes it as the floor; the
    two-stage memory guard instead takes the per-axis maximum itself, ``inference/roi.stage_two_spacing``).

    How this differs from the paper's §2.5 formula s'_i = max/min(t_i, p_i * alpha * t_i / d_i) (same branches):

    * the zoom term is inverted: the paper's p_i * alpha * t_i / d_i = t_i * (alpha p_i / d_i); ours is
      t_i * (d_i / (alpha p_i)) with d_i = e_i / t_i the structure's size in voxels at t_i. Taken literally the
      paper's term makes anything larger than alpha * p_i voxels *finer* (zooms in on big structures), against its
      stated aim of fitting the target to the patch; ours gives the structure alpha * p_i voxels.
    * d_i: the paper's text calls it "the image dimension"; ours is the typical extent of the smallest prompted
      structure (recorded per target at training), which is what the paper's prose says drives the spacing.
    * alpha: the paper's "scale factor"; ours is the fraction of the patch the structure should fill, in (0, 1].
    * bounds: the paper imposes unspecified "practical bounds"; ours never goes finer than the finer of the image's
      and the plans' spacing, min(s_i, t_i) (no detail to gain below the image's own), never more than ``max_zoom``
      away from t_i, and never below ``floor``.
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
    if floor is not None:
        out = [max(o, float(f)) for o, f in zip(out, floor, strict=True)]
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
    by ``scale`` (1.1-1.5) about its centre, at least ``min_size`` voxels per axis (our addition, the paper sets no
    minimum; two-stage prediction asks for 1.5 fine patches) and kept inside the image (shifted inwards where it
    would cross the border; clipped only when larger than the image). ``None`` when the mask is empty (stage 2 then
    runs on the whole image without prompts).
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
