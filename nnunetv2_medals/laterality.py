"""The side guard: a prompt that names a side is not answered on the other side of the body.

Our addition; the paper leaves laterality to the network. A network that sees a patch, not the body, can confuse
two mirror-image structures: the real-CT job's model, trained on one scan, drew "left kidney" on both kidneys and
"left autochthon" on the right one. The canonical orientation (:mod:`.geometry`: array axes (S, A, R), the last
one increasing towards the patient's *right*) tells where left and right are; what is missing is where the body's
middle is, and how far across it a structure can reach. So:

1. :func:`find_midline` estimates the midsagittal plane of an image as the left-right position about which the
   image best mirrors itself (a normalised mirror correlation, computed with FFTs on a ~4 mm sampling). Bodies and
   heads are nearly mirror-symmetric; on the real CTs the midline lies within 2-5 mm of the spinal cord. A scan
   that shows one side only (cut at or near the midline: a hip, a user's crop) still mirrors itself somewhere, so
   the body must not run into one image edge only, and the midline must lie in the middle of the body's left-right
   extent (:data:`MAX_IMBALANCE`): on the real CTs and the brain the two sides differ by 0-4 % of the width, on
   crops of them that keep one side by 45-51 %.
   A midline that fails either test (or a correlation < :data:`MIN_SYMMETRY`) switches the guard off for the case.
   Not caught: a field of view filled by one side's anatomy only, edge to edge.
2. :func:`side_extents_mm` / :func:`widest_side_extents` record at training time, for every target whose name
   names one side, its left-right extent relative to the training image's midline: [leftmost, rightmost] voxel
   (mm, + = the patient's right) over the training cases. The checkpoint carries it (``ModelVocabulary.target_side_mm``).
3. :func:`side_rule`: the cut of a sided target. Voxels further across the midline (towards the side its name does
   not say) than the target ever reached in training, and at least :data:`MARGIN_MM` across, are not it. A
   structure that lies entirely on its side in training is cut at MARGIN_MM across the midline; one that reached
   across it (a left brachiocephalic vein joining the right one) is cut only beyond its training reach.
4. :func:`guard_sides`: at prediction, on the network grid, a guarded prompt's probability is set to 0 beyond its
   cut - before the label decision, so another prompt may take the voxels, and before Algorithm 3.

The guard acts only on prompts that name a side (their words, or "L"/"R" shorthand matched to a target of that
side: ``VocabularyMatcher.side_of``) and that ask for a sided trained target and nothing
more (``VocabularyMatcher.structure_of``: a canonical or side-corrected match, or an unmatched prompt whose nearest
phrasing (cosine >= 0.6) is that target's and that names nothing only other targets name: "right erector spinae"
is cut as the right autochthon, "left kidney and liver" is not cut at all; a prompt for a structure the model lacks
is cut as its nearest sided target, or that target's counterpart on the side it names, at any cosine);
``MedalSPredictor(side_guard=False)`` / ``--no_side_guard`` turn it off.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence

import numpy as np
import torch

from nnunetv2_medals.text_prompts.side_wordings import split_side

#: a case's midline is trusted when the image mirrors itself about it at least this well (1 = perfectly)
MIN_SYMMETRY = 0.5
#: ... and when its distances to the body's leftmost and rightmost extent differ by at most this fraction of the
#: body's width
MAX_IMBALANCE = 0.25
#: the cut lies at least this far (mm) across the midline: the midline's own error (2-5 mm on real CTs) and the
#: anatomy of another body than the training ones
MARGIN_MM = 5.0
#: the midline search samples the image about this coarsely (mm)
SAMPLE_MM = 4.0
#: the properties key holding a case's midline (:meth:`Midline.to_json`, in the canonical image's voxels)
MIDLINE_KEY = "medals_midline"


@dataclass(frozen=True)
class Midline:
    """``index``: the midsagittal plane's position along the left-right axis, in voxels of the array it was found
    in (fractional; None when no plane was found); ``symmetry``: the mirror correlation there (-1..1);
    ``imbalance``: |distance to the body's left edge - distance to its right edge| / the body's width (0 = centred;
    1 when the body runs into one image edge only)."""

    index: float | None
    symmetry: float
    imbalance: float = 1.0

    @property
    def trusted(self) -> bool:
        return self.index is not None and self.symmetry >= MIN_SYMMETRY and self.imbalance <= MAX_IMBALANCE

    def why_not(self) -> str:
        """Why the midline is not trusted (for the case summary)."""
        if self.index is None or self.symmetry < MIN_SYMMETRY:
            return f"no mirror-symmetric midline (symmetry {self.symmetry:.2f})"
        return f"the midline is off the body's centre (imbalance {self.imbalance:.2f}: one side only in view?)"

    def shifted(self, start: int) -> "Midline":
        """The same plane in a crop of the array that starts at voxel ``start`` of the left-right axis."""
        return Midline(None if self.index is None else self.index - start, self.symmetry, self.imbalance)

    def to_json(self) -> dict:
        return {"index": None if self.index is None else round(float(self.index), 2),
                "symmetry": round(float(self.symmetry), 3), "imbalance": round(float(self.imbalance), 3)}

    @classmethod
    def from_json(cls, d: dict | None) -> "Midline | None":
        return None if d is None else cls(d["index"], float(d["symmetry"]), float(d["imbalance"]))


def find_midline(volume: np.ndarray, spacing: Sequence[float], lr_axis: int = -1,
                 sample_mm: float = SAMPLE_MM) -> Midline:
    """The midsagittal plane of a 3D image (*S), along ``lr_axis``, as the mirror axis of best normalised
    correlation.

    The image is sampled about every ``sample_mm``, clipped to its 2nd-98th percentiles and centred on its mean
    (f). For each candidate axis c (in half-sample steps) the score is sum f(x) f(2c - x) over the voxels whose
    mirror image lies inside, divided by sum f(x)^2 over the same voxels (a correlation: 1 for a perfect mirror
    image). Candidates whose overlap is under half the axis length are not considered (they would fit any two small
    windows), which limits the search to the central half of the axis. The body is the sampled voxels above the
    middle of the two percentiles; its left-right extent is where a column holds more than 2 % of them, and a body
    that fills at least 40 % of one edge column of the image but not of the other is cut by that edge (imbalance
    1)."""
    spacing = [float(s) for s in spacing]
    lr_axis = lr_axis % volume.ndim
    steps = [max(1, int(round(sample_mm / s))) for s in spacing]
    sampled = np.moveaxis(np.asarray(volume)[tuple(slice(None, None, k) for k in steps)], lr_axis, -1)
    sampled = sampled.astype(np.float32, copy=False)
    n = sampled.shape[-1]
    if n < 4 or sampled.size == 0:
        return Midline(None, 0.0)
    lo, hi = np.percentile(sampled, (2, 98))
    if not hi > lo:
        return Midline(None, 0.0)
    f = np.clip(sampled, lo, hi)
    f = (f - f.mean()).reshape(-1, n)
    spectrum = np.fft.rfft(f, 2 * n, axis=1)
    mirror = np.fft.irfft((spectrum * spectrum).sum(0), 2 * n)[:2 * n - 1]     # sum_x f(x) f(s - x), s = 2c
    cumulative = np.concatenate(([0.0], np.cumsum((f.astype(np.float64) ** 2).sum(0))))
    s = np.arange(2 * n - 1)
    first, last = np.maximum(0, s - n + 1), np.minimum(n - 1, s)
    energy = cumulative[last + 1] - cumulative[first]
    valid = (last - first + 1 >= n / 2) & (energy > 0)
    score = np.where(valid, mirror / np.where(energy > 0, energy, 1.0), -np.inf)
    best = int(np.argmax(score))
    if not np.isfinite(score[best]):
        return Midline(None, 0.0)
    columns = (sampled > (lo + hi) / 2).reshape(-1, n).mean(0)
    body = np.flatnonzero(columns > 0.02)
    centre = best / 2
    imbalance = abs((centre - body[0]) - (body[-1] - centre)) / max(body[-1] - body[0], 1) if body.size else 1.0
    if (columns[0] >= 0.4) != (columns[-1] >= 0.4):
        imbalance = 1.0     # the body runs into one image edge only: cut there, its extent on that side unknown
    return Midline(centre * steps[lr_axis], float(score[best]), float(imbalance))


def side_extents_mm(image: np.ndarray, seg: np.ndarray, targets, lr_axis: int,
                    spacing: Sequence[float]) -> dict[str, tuple[float, float]]:
    """(leftmost, rightmost) voxel of each sided target in one training case, relative to the case's midline (mm,
    + = the patient's right): how far across the midline the target reaches (:func:`side_rule`).

    ``image`` (*S) and ``seg`` (*S) are a preprocessed case at ``spacing`` (network axis order, nnU-Net's -1
    outside the nonzero region allowed), ``lr_axis`` the network axis that is the canonical left-right one.
    Targets whose name names one side (``split_side``) count, instance targets do not; a case whose midline is not
    trusted gives nothing."""
    sided = [t for t in targets if not t.instance and split_side(t.name)[0] is not None]
    if not sided:
        return {}
    midline = find_midline(image, spacing, lr_axis)
    if not midline.trusted:
        return {}
    n_labels = max(v for t in sided for v in t.label_values) + 1
    # which labels each left-right position holds: one bincount per slice, one pass over the case
    holds = np.stack([np.bincount(np.clip(sl, 0, None).ravel(), minlength=n_labels)[:n_labels] > 0
                      for sl in np.moveaxis(seg, lr_axis, 0)])
    extents = {}
    for t in sided:
        present = np.flatnonzero(holds[:, list(t.label_values)].any(1))
        if present.size:
            extents[t.name] = tuple((i - midline.index) * float(spacing[lr_axis]) for i in (present[0], present[-1]))
    return extents


def widest_side_extents(cases: Iterable[Mapping[str, Sequence[float]]]) -> dict[str, list[float]]:
    """[leftmost, rightmost] of each sided target over the training cases' :func:`side_extents_mm`: the
    checkpoint's record (``ModelVocabulary.target_side_mm``)."""
    found: dict[str, list[float]] = {}
    for case in cases:
        for name, ends in case.items():
            found.setdefault(name, []).extend(ends)
    return {name: [round(float(min(v)), 2), round(float(max(v)), 2)] for name, v in found.items()}


@dataclass(frozen=True)
class SideRule:
    """A guarded target: ``sign`` +1 (right) / -1 (left); voxels whose distance towards that side of the midline is
    below ``cut_mm`` (a negative number: that far across the midline) are removed."""

    target: str
    sign: int
    cut_mm: float


def side_rule(name: str | None, extent: Sequence[float] | None) -> SideRule | None:
    """The guard of trained target ``name`` from its recorded [leftmost, rightmost] training extent (mm from the
    midline, + = right), or None when the name names no single side or nothing was recorded. The cut lies
    :data:`MARGIN_MM` beyond the farthest the target reached across the midline in training (beyond the midline
    itself when it never crossed it)."""
    if name is None or extent is None:
        return None
    side = split_side(name)[0]
    if side is None:
        return None
    sign = 1 if side == "right" else -1
    innermost = min(sign * float(extent[0]), sign * float(extent[1]))   # its voxel nearest the other side
    return SideRule(name, sign, min(innermost, 0.0) - MARGIN_MM)


def guard_sides(probs: torch.Tensor, rules: Sequence[SideRule | None], lr_axis: int, midline_index: float,
                spacing_mm: float) -> list[int | None]:
    """Cut, in place, guarded prompts' network-grid probabilities at their side's limit.

    ``probs`` (N, *grid); ``rules[n]`` prompt n's :class:`SideRule` or None; ``lr_axis`` the grid's left-right axis
    (increasing towards the patient's right), ``midline_index`` the midline on it (grid voxels), ``spacing_mm`` its
    voxel size there. Grid voxels whose centre lies beyond a rule's cut get probability 0. Returns the voxels with
    probability >= 0.5 removed per prompt (None: not guarded)."""
    removed: list[int | None] = []
    towards_right = (torch.arange(probs.shape[1 + lr_axis], device=probs.device) - midline_index) * spacing_mm
    for n, rule in enumerate(rules):
        if rule is None:
            removed.append(None)
            continue
        beyond = torch.nonzero(towards_right * rule.sign < rule.cut_mm).flatten()   # one end of the axis
        if beyond.numel() == 0:
            removed.append(0)
            continue
        part = probs[n].narrow(lr_axis, int(beyond[0]), beyond.numel())
        removed.append(int((part >= 0.5).sum()))
        part.zero_()
    return removed


def guard_case(probs: torch.Tensor, properties: dict, sides: Sequence[str | None], targets: Sequence[str | None],
               recorded: dict[str, Sequence[float]], transpose_forward: Sequence[int]) -> list[dict]:
    """The side guard on one case's network-grid probabilities (N, *grid), in place.

    Prompt n is guarded when it names a side (``sides[n]``: ``VocabularyMatcher.side_of``, its side words or "L"/"R"
    shorthand matched to a target of that side) and the trained target it asks for
    (``targets[n]``: ``VocabularyMatcher.structure_of``, else None) has that side and an extent in ``recorded``
    (the checkpoint's ``target_side_mm``, :func:`side_rule`). ``properties`` are nnU-Net's preprocessing
    properties of the case with ``properties[MIDLINE_KEY]`` (the canonical image's midline); the canonical
    left-right axis is the grid's axis ``transpose_forward.index(2)``. Returns, per prompt, what its summary
    gets: ``side_guard`` with the network-grid voxels of probability >= 0.5 removed, or why the guard was off for
    the case."""
    midline = Midline.from_json(properties.get(MIDLINE_KEY))
    rules = []
    for said, target in zip(sides, targets):
        rule = side_rule(target, recorded.get(target) if target is not None else None)
        rules.append(rule if rule is not None and said == ("right" if rule.sign > 0 else "left") else None)
    if midline is None or not any(rules):
        return [{} for _ in rules]
    if not midline.trusted:
        return [{"side_guard": f"off: {midline.why_not()}"} if r else {} for r in rules]
    axis = list(transpose_forward).index(2)
    start = properties["bbox_used_for_cropping"][axis][0]
    scale = probs.shape[1 + axis] / properties["shape_after_cropping_and_before_resampling"][axis]
    removed = guard_sides(probs, rules, axis, (midline.index - start + 0.5) * scale - 0.5,
                          float(properties["spacing"][2]) / scale)
    return [{"side_guard": {"removed_voxels": k}} if r else {} for r, k in zip(rules, removed)]
