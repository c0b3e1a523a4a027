"""Network-grid probabilities of N prompts -> the label map in the image geometry, touching each output voxel once.

nnU-Net's export (:func:`.export.to_image_geometry`) resamples every prompt's logits to the whole image and then
takes the label map; its cost grows as N x image voxels. :func:`slab_label_map` gives the same label map slab by
slab with memory bounded by the slab, and its cost grows with the voxels where prompts compete, not with N:

* the interpolation is the one the plans name (``resample_torch_fornnunet``: trilinear, or bilinear in-plane and
  nearest-exact along the out-of-plane axis of anisotropic cases), written per axis as torch computes it
  (:func:`axis_tables`);
* every interpolated value is a convex combination of its stencil (2 or 1 network voxels per axis), so per network
  cell the bounds of each prompt's probability are known before anything is interpolated (:func:`cell_decisions`):
  where all prompts stay below 0.5 the label is 0; where one prompt's lowest value beats every other prompt's
  highest (ties go to the earlier prompt, as an argmax does) the label is that prompt's; only the remaining voxels
  are interpolated, for their candidate prompts only (:func:`resolve_voxels`);
* prompts whose network-grid logits equal an earlier prompt's never win (ties go to the earlier prompt) and are
  left out.

Algorithm 3 and instance numbering then run on the bounding box of each prompt's label only
(:func:`postprocess_in_boxes`), interpolating a prompt's probabilities only inside its box and only when Algorithm 3
needs them (several components); when those boxes add up to more than the image (labels all over it, as a noisy
network gives them) one multi-label connected-components pass serves all labels instead
(:func:`.postprocessing.postprocess_in_one_pass`: the same components and rules; Algorithm 3's probabilities are
then interpolated on the box of a label's three largest components instead of the label's box, equal up to float
rounding). Un-cropping and un-transposing are nnU-Net's (``bbox_used_for_cropping``,
``transpose_backward``). Everything runs on the device of the probabilities given (CUDA or CPU).
"""
from __future__ import annotations

from typing import Sequence

import cc3d
import numpy as np
import torch
from nnunetv2.configuration import ANISO_THRESHOLD
from nnunetv2.preprocessing.resampling.default_resampling import determine_do_sep_z_and_axis
from scipy import ndimage

from nnunetv2_medals.postprocessing import (keep_confident_components, number_instances, one_pass_pays,
                                            postprocess_in_one_pass)

#: the plans' probability resampling functions this export reproduces (others: nnU-Net's export)
SUPPORTED_RESAMPLING = ("resample_torch_fornnunet", "resample_torch_simple")
#: output voxels per slab (bounds the per-slab temporaries: ~60 bytes per uncertain voxel)
SLAB_VOXELS = 2 ** 22
#: corner values per slab for :func:`cell_decisions` (float32: 256 MB)
CORNER_BUDGET = 2 ** 26


def grid_logits(probs: torch.Tensor) -> torch.Tensor:
    """(N, *grid) probabilities -> the logits nnU-Net's export resamples (as :func:`.export.to_image_geometry`)."""
    return torch.logit(probs.float().clamp(1e-6, 1 - 1e-6))


def interpolation_modes(configuration_manager, plans_manager, properties: dict) -> list[str] | None:
    """Per network axis the interpolation the plans' probability resampling applies when exporting this case
    ('linear' or 'nearest-exact'), or ``None`` when the plans name a function this export does not reproduce."""
    config = configuration_manager.configuration
    name = config.get("resampling_fn_probabilities")
    kwargs = dict(config.get("resampling_fn_probabilities_kwargs") or {})
    if name not in SUPPORTED_RESAMPLING or kwargs.get("is_seg", False):
        return None
    mode, aniso = kwargs.get("mode", "linear"), kwargs.get("aniso_axis_mode", "nearest-exact")
    if mode != "linear" or aniso not in ("nearest-exact", "linear"):
        return None
    shape = properties["shape_after_cropping_and_before_resampling"]
    if len(configuration_manager.spacing) != len(shape):
        return None  # 2D configurations
    modes = [mode] * 3
    if name == "resample_torch_fornnunet":
        new_spacing = [properties["spacing"][i] for i in plans_manager.transpose_forward]
        separate, axis = determine_do_sep_z_and_axis(
            kwargs.get("force_separate_z"), configuration_manager.spacing, new_spacing,
            kwargs.get("separate_z_anisotropy_threshold", ANISO_THRESHOLD))
        if separate:
            modes[int(np.atleast_1d(axis)[0])] = aniso
    return modes


def axis_tables(n_in: int, n_out: int, mode: str, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One axis of torch's ``F.interpolate`` (align_corners=False, sizes given): for each output index the two
    input indices and the weight of the second, computed in float32 as torch's CPU kernels do
    (``area_pixel_compute_source_index``, ``guard_index_and_lambda``; nearest-exact: floor((i + 0.5) * scale))."""
    scale = torch.tensor(n_in, dtype=torch.float32) / torch.tensor(n_out, dtype=torch.float32)
    dst = torch.arange(n_out, dtype=torch.float32)
    if mode == "nearest-exact":
        i0 = torch.floor((dst + 0.5) * scale).long().clamp(max=n_in - 1)
        return i0.to(device), i0.to(device), torch.zeros(n_out, device=device)
    src = (scale * (dst + 0.5) - 0.5).clamp(min=0)
    i0 = torch.floor(src).long().clamp(max=n_in - 1)
    weight = (src - i0.float()).clamp(0, 1)
    i1 = torch.where(i0 < n_in - 1, i0 + 1, i0)
    return i0.to(device), i1.to(device), weight.to(device)


def _stencil_corners(x: torch.Tensor, modes: Sequence[str]) -> torch.Tensor:
    """(corners, N, *g): per cell (the stencil starting at each network voxel) the values at its 2 or 1 corners
    per axis (the last voxel of an axis is its own neighbour, as torch clamps)."""
    corners = [x]
    for axis, mode in enumerate(modes):
        if mode == "linear":
            dim = axis + 1
            corners += [torch.cat((c.narrow(dim, 1, c.shape[dim] - 1), c.narrow(dim, c.shape[dim] - 1, 1)), dim)
                        for c in corners]
    return torch.stack(corners)


def cell_decisions(logits: torch.Tensor, modes: Sequence[str], active: torch.Tensor,
                   n_cells: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Per network cell (the first ``n_cells`` along axis 0 of ``logits`` (N, *g)), int16: 1 + the index of the
    prompt that wins in every output voxel of the cell, 0 where none reaches 0.5, -1 if undecided; and (N, cells)
    which prompts may win there.

    Interpolated values are convex combinations of the cell's corners, so: all prompts' highest probability < 0.5
    decides 0. The prompt w with the highest lowest probability wins the cell if that is >= 0.5 and w beats every
    other prompt m at every corner: its lowest probability above m's highest, or its logit minus m's above 0 at
    every corner (the difference interpolates like the values); at least equal for a later m (an argmax keeps the
    earlier prompt on ties). Otherwise the candidates are the prompts not so beaten whose highest probability
    reaches max(0.5, w's lowest). ``active`` (N,) bool: prompts that may win at all (not a duplicate)."""
    corners = _stencil_corners(logits, modes)[:, :, :n_cells]
    hi = torch.sigmoid(corners.amax(0))
    lo = torch.sigmoid(corners.amin(0))
    view = (-1,) + (1,) * (hi.ndim - 1)
    hi = torch.where(active.view(view), hi, -1.0)
    lo = torch.where(active.view(view), lo, -1.0)
    winner = torch.argmax(lo, 0)  # the first of equal maxima
    best_lo = lo.gather(0, winner[None])[0]
    margin = (corners.gather(1, winner[None, None].expand(corners.shape[0], 1, *winner.shape)) - corners).amin(0)
    index = torch.arange(hi.shape[0], device=hi.device).view(view)
    beaten = torch.where(index < winner, (hi < best_lo) | (margin > 0), (hi <= best_lo) | (margin >= 0))
    beaten = (beaten & (index != winner)) | ~active.view(view)
    sure_fg = (best_lo >= 0.5) & (beaten | (index == winner)).all(0)
    sure_bg = hi.amax(0) < 0.5
    code = torch.where(sure_fg, winner + 1, torch.where(sure_bg, 0, -1)).to(torch.int16)
    candidates = (hi >= best_lo.clamp(min=0.5)) & ~beaten & (code < 0)
    return code, candidates


def duplicate_free(logits: torch.Tensor) -> torch.Tensor:
    """(N,) bool: prompts whose logits differ from every earlier prompt's (an equal later prompt never wins)."""
    sums = logits.flatten(1).sum(1).tolist()
    keep = torch.ones(logits.shape[0], dtype=torch.bool)
    for n in range(logits.shape[0]):
        keep[n] = not any(keep[m] and sums[m] == sums[n] and torch.equal(logits[m], logits[n]) for m in range(n))
    return keep.to(logits.device)


def _output_range(i0: torch.Tensor, first_cell: int, last_cell: int) -> slice:
    """The output indices whose cell (``i0``, non-decreasing) lies in [first_cell, last_cell]."""
    bounds = torch.tensor([first_cell, last_cell], device=i0.device)
    start = int(torch.searchsorted(i0, bounds[:1]))
    stop = int(torch.searchsorted(i0, bounds[1:], right=True))
    return slice(start, stop)


def interpolate_box(logits: torch.Tensor, tables, box: Sequence[slice]) -> torch.Tensor:
    """One prompt's (*grid) logits interpolated onto the output voxels of ``box`` (output coordinates): per axis a
    (box x cells) matrix holding the two weights of each output voxel (:func:`axis_tables`), contracted with the
    grid cells the box needs (the same values as trilinear interpolation, up to rounding)."""
    matrices = []
    for (i0, i1, w), sl in zip(tables, box):
        lo, hi = int(i0[sl.start]), int(i1[sl.stop - 1]) + 1
        rows = torch.arange(sl.stop - sl.start, device=logits.device)
        matrix = torch.zeros((sl.stop - sl.start, hi - lo), device=logits.device)
        matrix.index_put_((rows, i0[sl] - lo), 1 - w[sl], accumulate=True)
        matrix.index_put_((rows, i1[sl] - lo), w[sl], accumulate=True)
        matrices.append((matrix, slice(lo, hi)))
    (m0, r0), (m1, r1), (m2, r2) = matrices
    x = logits[r0, r1, r2] @ m2.T                              # (g0, g1, b2)
    x = torch.matmul(m1, x)                                    # (g0, b1, b2)
    return (m0 @ x.reshape(x.shape[0], -1)).reshape(m0.shape[0], m1.shape[0], m2.shape[0])


def slab_label_map(logits: torch.Tensor, labels: Sequence[int], out_shape: Sequence[int], modes: Sequence[str],
                   out: np.ndarray, slab_voxels: int = SLAB_VOXELS) -> list:
    """Write the label map (argmax of the prompts' interpolated probabilities where it reaches 0.5, the earlier
    prompt on ties) of the output grid ``out_shape`` into ``out`` (a uint16 array or view of that shape), slab by
    slab along axis 0: decided cells are expanded to their output voxels; for the others each candidate prompt is
    interpolated on the box of its candidate cells (:func:`interpolate_box`), its running best kept in place.

    ``logits`` (N, *grid) on the device to work on. Returns the per-axis tables (:func:`axis_tables`)."""
    device = logits.device
    grid = logits.shape[1:]
    tables = [axis_tables(g, s, m, device) for g, s, m in zip(grid, out_shape, modes)]
    cell_of = [t[0] for t in tables]
    repeats_y, repeats_x = (torch.bincount(t, minlength=g) for t, g in zip(cell_of[1:], grid[1:]))
    lookup = np.asarray([0, *labels], dtype=np.uint16)
    active = duplicate_free(logits)
    rows = max(1, slab_voxels // (out_shape[1] * out_shape[2]))
    # cell_decisions holds 8 corner values per prompt and network cell of a slab (and temporaries of that size):
    # where the grid is finer than the output along axis 0 (thick slices, dynamic resampling, a fine stage) a slab
    # of output rows covers many cells, so its height is bounded by the cells too
    cells_per_row = 8 * logits.shape[0] * grid[1] * grid[2]
    rows = max(1, min(rows, int((CORNER_BUDGET / cells_per_row - 2) * out_shape[0] / grid[0])))
    best = torch.empty((rows, *out_shape[1:]), device=device)
    best_index = torch.empty((rows, *out_shape[1:]), dtype=torch.int16, device=device)
    for start in range(0, out_shape[0], rows):
        stop = min(out_shape[0], start + rows)
        c_first, c_last = int(cell_of[0][start]), int(cell_of[0][stop - 1])
        n_cells = c_last - c_first + 1
        code, candidates = cell_decisions(logits[:, c_first:min(grid[0], c_last + 2)], modes, active, n_cells)
        code = code.repeat_interleave(torch.bincount(cell_of[0][start:stop] - c_first, minlength=n_cells), 0)
        code = code.repeat_interleave(repeats_y, 1).repeat_interleave(repeats_x, 2)
        undecided = code < 0
        if bool(undecided.any()):
            best.fill_(-1.0)
            best_index.zero_()
            for n in torch.nonzero(candidates.flatten(1).any(1)).flatten().tolist():
                box = []
                for axis in range(3):
                    cells = torch.nonzero(candidates[n].any(dim=[d for d in range(3) if d != axis])).flatten()
                    offset = c_first if axis == 0 else 0
                    box.append(_output_range(cell_of[axis], int(cells[0]) + offset, int(cells[-1]) + offset))
                box[0] = slice(max(box[0].start, start), min(box[0].stop, stop))
                local = (slice(box[0].start - start, box[0].stop - start), box[1], box[2])
                p = torch.sigmoid(interpolate_box(logits[n], tables, box))
                current = best[local]
                best_index[local].masked_fill_(p > current, n + 1)  # strict: the earlier prompt keeps a tie
                torch.maximum(current, p, out=current)
            found = best[:stop - start] >= 0.5
            code = torch.where(undecided, torch.where(found, best_index[:stop - start], 0), code)
        out[start:stop] = lookup[code.cpu().numpy()]
    return tables


def _probabilities(logits: torch.Tensor, tables, box: Sequence[slice]) -> np.ndarray:
    """One prompt's probabilities on ``box`` as Algorithm 3 reads them (float16, as nnU-Net's export stores them)."""
    return torch.sigmoid(interpolate_box(logits, tables, box)).half().float().cpu().numpy()


def postprocess_in_boxes(label_map: np.ndarray, logits: torch.Tensor, tables, labels: Sequence[int],
                         instance: Sequence[bool], multi_part: Sequence[bool], min_instance_voxels: float
                         ) -> dict:
    """:func:`.postprocessing.postprocess_label_map` on the bounding box of each prompt's label (in place on
    ``label_map``); Algorithm 3's probabilities (float16, as the nnU-Net export path stores them) are interpolated
    inside the box only when the label has several components; labels spread over the whole image get one
    multi-label pass instead (:func:`.postprocessing.one_pass_pays`). ``labels`` are distinct (the predictor
    rejects a label given twice). Returns ``{label: (box, numbered)}`` for instance prompts (``box`` None when the
    label is absent)."""
    boxes = ndimage.find_objects(label_map, max_label=int(max(labels)))
    if one_pass_pays(boxes, label_map.size, labels, instance, multi_part):
        return postprocess_in_one_pass(label_map, lambda n, box: _probabilities(logits[n], tables, box), labels,
                                       instance, multi_part, min_instance_voxels)
    instances = {}
    for n, (label, is_instance, several) in enumerate(zip(labels, instance, multi_part)):
        box = boxes[label - 1] if label >= 1 else None
        if box is None:
            if is_instance:
                instances[label] = (None, None)
            continue
        region = label_map[box]
        mask = region == label
        if is_instance:
            numbered = number_instances(mask, min_instance_voxels)
            region[mask & (numbered == 0)] = 0
            instances[label] = (box, numbered)
        elif not several:
            components = cc3d.connected_components(mask, connectivity=6, return_N=True)
            if components[1] > 1:
                probabilities = _probabilities(logits[n], tables, box)
                region[mask & ~keep_confident_components(mask, probabilities, components=components)] = 0
    return instances


def label_map_in_image_geometry(probs: torch.Tensor, properties: dict, labels: Sequence[int],
                                instance: Sequence[bool], multi_part: Sequence[bool], min_instance_voxels: float,
                                plans_manager, configuration_manager, device=None,
                                slab_voxels: int = SLAB_VOXELS) -> tuple[np.ndarray, dict] | None:
    """Network-grid probabilities (N, *grid) -> the post-processed label map (uint16) and instance maps in the
    image geometry (the reader's array order), as nnU-Net's export followed by
    :func:`.postprocessing.postprocess_label_map` gives them, up to interpolation ties. ``None`` when the plans'
    probability resampling is not one this export reproduces (:func:`interpolation_modes`).

    Works on ``device`` (default: the probabilities' device); the output arrays and a uint16 copy of the label map
    per instance prompt are the only image-sized memory it holds."""
    modes = interpolation_modes(configuration_manager, plans_manager, properties)
    if modes is None:
        return None
    device = torch.device(device) if device is not None else probs.device
    logits = grid_logits(probs.to(device))
    full = np.zeros(properties["shape_before_cropping"], np.uint16)
    crop = tuple(slice(int(a), int(b)) for a, b in properties["bbox_used_for_cropping"])
    region = full[crop]
    tables = slab_label_map(logits, labels, region.shape, modes, region, slab_voxels)
    boxed = postprocess_in_boxes(region, logits, tables, labels, instance, multi_part, min_instance_voxels)
    backward = list(plans_manager.transpose_backward)

    def image_order(a: np.ndarray) -> np.ndarray:
        return a if backward == sorted(backward) else np.ascontiguousarray(a.transpose(backward))

    instances = {}
    for label, (box, numbered) in boxed.items():
        canvas = np.zeros(full.shape, np.uint16 if numbered is None else numbered.dtype)
        if box is not None:
            canvas[crop][box] = numbered
        instances[label] = image_order(canvas)
    return image_order(full), instances
