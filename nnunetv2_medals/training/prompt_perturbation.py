"""Misplaced mask prompts: the target as a registration prior or a rough hand-drawn mask would give it (an addition
to the paper: in training the misplaced masks reach the network whole, in place of Algorithm 1's output, or with
``whole = 0`` go through Algorithm 1; with ``exact`` > 0 a share of the other samples also hand their true masks
over whole; see docs/decisions.md, "The paper's algorithms as written")."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class PromptMisplacement:
    """Parameters of :func:`misplace_prompts` (lengths in voxels of the training patch); ``whole`` and ``exact``
    are read by ``training.prompted_batch.build_prompted_batch``, which decides what skips Algorithm 1."""

    #: share of the samples whose masks are misplaced (all prompts of a sample move together)
    probability: float = 0.5
    #: rotation about each axis, uniform in ±max_rotation_deg
    max_rotation_deg: float = 8.0
    #: isotropic scale, uniform in this range
    scale: tuple[float, float] = (0.92, 1.08)
    #: shift along each axis, uniform in ±max_shift
    max_shift: float = 4.0
    #: share of the misplaced samples that are also warped elastically
    elastic_probability: float = 0.5
    #: elastic warp: displacement per control point and axis uniform in ±elastic_amplitude, control points per axis
    elastic_amplitude: float = 2.0
    elastic_points: int = 4
    #: per prompt of a misplaced sample: probability of a dilated and of an eroded boundary, by 1..max_boundary
    p_dilate: float = 0.25
    p_erode: float = 0.25
    max_boundary: int = 2
    #: share of the misplaced samples whose prompts reach the network whole, without Algorithm 1: a registration
    #: prior or a hand-drawn mask is a complete mask, which Algorithm 1's block drop (a fifth of each mask kept on
    #: average) rarely produces (build_prompted_batch)
    whole: float = 1.0
    #: share of the samples *not* misplaced whose prompts also reach the network whole, in place and complete, as a
    #: manual annotation gives them (our addition; that is the use the paper's hybrid mode names); without them
    #: almost every complete mask seen in training is a misplaced one, and a correct complete mask is distrusted too
    #: (build_prompted_batch)
    exact: float = 0.0


def _rotation(angles: torch.Tensor) -> torch.Tensor:
    """(K, 3) radians -> (K, 3, 3) rotation matrices R_0 R_1 R_2 (one elementary rotation per axis)."""
    out = torch.eye(3, dtype=angles.dtype, device=angles.device).expand(len(angles), 3, 3)
    for axis in range(3):
        i, j = [k for k in range(3) if k != axis]
        c, s = torch.cos(angles[:, axis]), torch.sin(angles[:, axis])
        r = torch.eye(3, dtype=angles.dtype, device=angles.device).repeat(len(angles), 1, 1)
        r[:, i, i], r[:, i, j], r[:, j, i], r[:, j, j] = c, -s, s, c
        out = out @ r
    return out


def _sampling_grid(count: int, spatial: list[int], params: PromptMisplacement, torch_rng: torch.Generator,
                   device: torch.device) -> torch.Tensor:
    """(count, *spatial, ndim) grid_sample coordinates of a random affine (voxel units, about the patch centre)
    plus, for a random share of the samples, a smooth elastic displacement."""
    ndim = len(spatial)

    def uniform(low, high, *shape):
        return low + (high - low) * torch.rand(*shape, generator=torch_rng, device=device)

    angles = uniform(-1, 1, count, 3) * math.radians(params.max_rotation_deg)
    if ndim == 2:
        angles[:, :2] = 0  # the in-plane rotation (about the third axis, which turns axes 0 and 1)
    matrix = _rotation(angles)[:, :ndim, :ndim] * uniform(*params.scale, count, 1, 1)
    shift = uniform(-params.max_shift, params.max_shift, count, ndim)
    # voxel-space affine -> normalised coordinates (align_corners=False: x_norm = 2 x / size per axis), then
    # reversed to grid_sample's (x, y, z) = (last, ..., first) axis order
    size = torch.tensor(spatial, dtype=torch.float32, device=device)
    theta = matrix * size.view(1, 1, ndim) / size.view(1, ndim, 1)
    theta = torch.cat([theta, (2 * shift / size)[..., None]], dim=2)
    flip = torch.arange(ndim - 1, -1, -1, device=device)
    theta = theta[:, flip][:, :, torch.cat([flip, torch.tensor([ndim], device=device)])]
    grid = F.affine_grid(theta, [count, 1, *spatial], align_corners=False)
    if params.elastic_probability > 0 and params.elastic_amplitude > 0:
        warped = torch.rand(count, generator=torch_rng, device=device) < params.elastic_probability
        coarse = uniform(-params.elastic_amplitude, params.elastic_amplitude, count, ndim,
                         *[params.elastic_points] * ndim) * warped.view(-1, *[1] * (ndim + 1))
        mode = "trilinear" if ndim == 3 else "bilinear"
        field = F.interpolate(coarse, size=spatial, mode=mode, align_corners=True)
        field = field * (2 / size).view(1, ndim, *[1] * ndim)
        grid = grid + field[:, flip].movedim(1, -1)
    return grid


def _nearest_resample(masks: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """``F.grid_sample(masks, grid, mode="nearest", padding_mode="zeros", align_corners=False)`` for binary
    (K, N, *S) masks: the nearest voxel of each grid point is looked up once per sample and gathered for all N
    channels as bytes (grid_sample's rounding, half-voxel ties to even, as on CPU; a third of its time there for
    32 channels)."""
    count, n, *spatial = masks.shape
    ndim = len(spatial)
    size = torch.tensor(spatial[::-1], dtype=grid.dtype, device=grid.device)  # grid's (x, y, z) = last axis first
    voxel = torch.round(((grid + 1) * size - 1) / 2).long()  # half to even, as grid_sample's nearbyint
    inside = ((voxel >= 0) & (voxel < size.long())).all(-1)
    flat = torch.zeros_like(voxel[..., 0])
    stride = 1
    for axis in range(ndim):  # grid component `axis` indexes spatial axis ndim - 1 - axis
        flat += voxel[..., axis].clamp(0, spatial[ndim - 1 - axis] - 1) * stride
        stride *= spatial[ndim - 1 - axis]
    flat = torch.where(inside, flat, torch.full_like(flat, stride))  # points outside read a zero sentinel
    source = F.pad(masks.to(torch.uint8).flatten(2), (0, 1))
    out = torch.gather(source, 2, flat.view(count, 1, -1).expand(-1, n, -1))
    return out.view(count, n, *spatial)


def _box_dilate(x: torch.Tensor) -> torch.Tensor:
    """Binary dilation of bool (M, *S) masks by the 3-voxel box (3^d neighbourhood), one shifted maximum per side
    and axis; the same result as max-pooling with a 3^d kernel and zero padding."""
    out = x
    for axis in range(1, x.dim()):
        grown = out.clone()  # the input is never written
        length = x.shape[axis]
        grown.narrow(axis, 1, length - 1).logical_or_(out.narrow(axis, 0, length - 1))
        grown.narrow(axis, 0, length - 1).logical_or_(out.narrow(axis, 1, length - 1))
        out = grown
    return out


def _move_boundaries(masks: torch.Tensor, params: PromptMisplacement, torch_rng: torch.Generator) -> torch.Tensor:
    """Dilate or erode each (sample, prompt) mask by its own 1..max_boundary voxels: repeated 3-voxel box dilation
    of the mask, or of its complement for erosion (only voxels inside the patch are neighbours, so the patch border
    does not erode a mask), on the chosen masks only; an erosion that would empty a mask stops short. ``masks``:
    (K, N, *S) bool."""
    count, n, *spatial = masks.shape
    if params.max_boundary < 1 or params.p_dilate + params.p_erode <= 0:
        return masks
    draw = torch.rand(count, n, generator=torch_rng, device=masks.device)
    radius = torch.randint(1, params.max_boundary + 1, (count, n), generator=torch_rng, device=masks.device)
    sign = torch.zeros(count, n, device=masks.device)
    sign[draw < params.p_dilate] = 1.0
    sign[(draw >= params.p_dilate) & (draw < params.p_dilate + params.p_erode)] = -1.0
    sign[~masks.flatten(2).any(2)] = 0.0  # empty masks stay empty either way
    chosen = sign.nonzero(as_tuple=True)
    if not len(chosen[0]):
        return masks
    voxels = (1,) * len(spatial)
    erode = (sign[chosen] < 0).view(-1, *voxels)
    x = masks[chosen]
    r = radius[chosen].view(-1, *voxels)
    for step in range(1, params.max_boundary + 1):
        active = (r >= step).flatten()
        if not active.any():
            break
        current = x[active]
        flip = erode[active]
        # dilation of the mask, or erosion = complement of the dilated complement (only voxels inside the patch
        # count as neighbours, as max-pooling's padding does)
        moved = _box_dilate(current ^ flip) ^ flip
        emptied = ~moved.flatten(1).any(1)
        x[active] = torch.where(emptied.view(-1, *voxels), current, moved)
    out = masks.clone()
    out[chosen] = x
    return out


def draw_misplaced_samples(batch: int, params: PromptMisplacement, generator: np.random.Generator) -> np.ndarray:
    """Indices of the samples (of ``batch``) whose prompts are misplaced, each with probability ``probability``
    (no draw at all when it is 0)."""
    if params.probability <= 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(generator.random(batch) < params.probability)


def draw_whole_samples(misplaced: np.ndarray, params: PromptMisplacement, generator: np.random.Generator
                       ) -> np.ndarray:
    """The misplaced samples whose prompts skip Algorithm 1, each with probability ``whole`` (no draw when it is 0
    or nothing is misplaced)."""
    if params.whole <= 0 or not len(misplaced):
        return misplaced[:0]
    return misplaced[generator.random(len(misplaced)) < params.whole]


def draw_exact_samples(batch: int, misplaced: np.ndarray, params: PromptMisplacement,
                       generator: np.random.Generator) -> np.ndarray:
    """Indices of the samples (of ``batch``) not in ``misplaced`` whose prompts are handed over complete and in
    place, each with probability ``exact`` (no draw when it is 0)."""
    if params.exact <= 0:
        return np.zeros(0, dtype=np.int64)
    others = np.setdiff1d(np.arange(batch), misplaced)
    return others[generator.random(len(others)) < params.exact]


def misplace_prompts(masks: torch.Tensor, valid: torch.Tensor | None = None,
                     params: PromptMisplacement = PromptMisplacement(),
                     generator: np.random.Generator | None = None,
                     samples: np.ndarray | None = None) -> torch.Tensor:
    """Misplaced-prompt simulation (our addition to the paper's Algorithm 1; ``build_prompted_batch`` hands the
    result to the network whole, or to Algorithm 1 with ``whole = 0``; samples it leaves unmoved go through
    Algorithm 1, or with ``exact`` > 0 partly whole as they are).

    For a share ``probability`` of the samples, all target masks of the sample are resampled through one random
    transform of the patch — a rotation of up to ``max_rotation_deg`` about each axis, an isotropic scale in
    ``scale`` and a shift of up to ``max_shift`` voxels per axis, for ``elastic_probability`` of them plus a smooth
    elastic displacement (``elastic_points``³ control points of up to ``elastic_amplitude`` voxels, trilinearly
    interpolated), nearest-neighbour resampled — as a registration prior a few degrees and millimetres off would
    place them. All of it is in voxels of the patch: on anisotropic spacing the "rotation" is not rigid in mm and
    the shift's mm differ per axis (the zero-padded border also pulls empty space into masks that cross it); then
    each prompt of those samples is dilated (``p_dilate``) or eroded (``p_erode``) by 1..``max_boundary`` voxels,
    as a rough hand drawing would be. The loss still uses the true masks, so the network learns to correct a prompt
    instead of copying it. Other samples are returned unchanged. ``samples``: the indices to misplace, drawn by
    the caller (:func:`draw_misplaced_samples`); None draws them here.

    ``masks``: (B, N, *S) binary (2D or 3D); ``valid``: (B, N) bool (invalid queries come back empty). Returns a
    float tensor of ``masks``' shape in {0, 1}. Random draws come from a torch generator on ``masks``' device seeded
    from ``generator`` (one nearest-voxel lookup per sample, and ``max_boundary`` shifted-maximum passes over the masks
    chosen for dilation/erosion).
    """
    rng = generator if generator is not None else np.random.default_rng()
    batch, n, *spatial = masks.shape
    if len(spatial) not in (2, 3):
        raise ValueError(f"misplace_prompts: masks must be (B, N, *S) with 2 or 3 spatial axes, got {masks.shape}")
    out = masks > 0
    chosen = draw_misplaced_samples(batch, params, rng) if samples is None else np.asarray(samples, dtype=np.int64)
    if len(chosen):
        torch_rng = torch.Generator(device=masks.device)
        torch_rng.manual_seed(int(rng.integers(2 ** 62)))
        index = torch.from_numpy(chosen).to(masks.device)
        grid = _sampling_grid(len(chosen), spatial, params, torch_rng, masks.device)
        moved = _nearest_resample(out[index], grid).bool()
        out[index] = _move_boundaries(moved, params, torch_rng)
    if valid is not None:
        out = out & valid.to(device=masks.device, dtype=torch.bool).view(batch, n, *(1,) * len(spatial))
    return out.float()
