"""From per-prompt probabilities to label maps: pure functions on arrays (no nnU-Net, no files).

* :func:`probabilities_to_label_map` — argmax over prompts where the best probability reaches 0.5;
* :func:`keep_confident_components` — Algorithm 3 (paper §2.9), per single-part semantic class;
* :func:`number_instances` — instance prompts: connected components, small ones dropped, numbered 1..K;
* :func:`postprocess_label_map` — both for every prompt of a label map; :func:`postprocess_in_one_pass` does the
  same with one multi-label connected-components pass when the labels spread over the whole image;
* :func:`min_instance_volume_mm3` / :func:`min_instance_voxels` — the size limit of an instance, in mm³;
* :func:`is_multi_part` — which prompts Algorithm 3 must leave whole (regions, pairs, plurals, lesions).
"""
from __future__ import annotations

import re
from typing import Sequence

import cc3d
import numpy as np
from scipy import ndimage


def probabilities_to_label_map(probabilities: np.ndarray, labels: Sequence[int], threshold: float = 0.5) -> np.ndarray:
    """``probabilities`` (N, *S) -> label map (*S) holding ``labels[n]`` where prompt n is the most probable and
    its probability is at least ``threshold``; 0 elsewhere."""
    if len(labels) != probabilities.shape[0]:
        raise ValueError(f"{probabilities.shape[0]} probability maps but {len(labels)} labels")
    best = probabilities.argmax(0)
    lookup = np.asarray(labels, dtype=np.uint16)
    return np.where(probabilities.max(0) >= threshold, lookup[best], 0).astype(np.uint16)


def keep_confident_components(mask: np.ndarray, probabilities: np.ndarray, tau: float = 0.1,
                              min_confidence: float = 0.86, size_ratio: float = 0.6,
                              components: tuple[np.ndarray, int] | None = None) -> np.ndarray:
    """Algorithm 3 (paper §2.9, lines 4-23) on one class: which 6-connected components of ``mask`` to keep.

    As the listing has it: T = the three largest components, p_i = mean probability of each, p_max = the best.
    K = those of T with p_max - p_i <= ``tau`` and p_i > ``min_confidence``. If |K| >= 2, keep K. Otherwise keep the
    most confident component of T if it is one of the two largest and its size / the largest's > ``size_ratio``,
    else keep the largest. Where the §2.9 prose differs we follow the listing: "retained" there reads as |K| >= 1 and
    "at least 0.6" as >= 0.6; the listing's |K| >= 2 and > 0.6 are what stop one small confident blob from replacing
    a large organ. "T[2]" (line 16) is read as the two largest, as the prose says. Size ties keep component order.

    ``mask`` (*S) bool, ``probabilities`` (*S) float -> (*S) bool. ``components``: ``mask``'s 6-connected
    components and their number (``cc3d.connected_components(mask.astype(bool), connectivity=6, return_N=True)``)
    when the caller has them already.
    """
    mask = mask.astype(bool, copy=False)
    if components is not None:
        box = (slice(None),) * mask.ndim
        components, n = components
    else:
        boxes = ndimage.find_objects(mask.astype(np.uint8))
        if not boxes:
            return mask.copy()
        box = boxes[0]  # all work happens inside the mask's bounding box (small structures in big images)
        components, n = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=6, return_N=True)
    if n <= 1:
        return mask.copy()
    sizes = np.bincount(components[mask[box]], minlength=n + 1)[1:]    # counted on the mask only: fast when sparse
    top = np.argsort(-sizes, kind="stable")[:3] + 1                     # T, largest first (component ids)
    # p_i: the probabilities summed per component of T (float64, :func:`_sums_by_code`)
    code_of = np.zeros(n + 1, np.uint8)
    code_of[top] = np.arange(1, len(top) + 1)
    code = code_of[components]                                          # 1..3 on T, 0 elsewhere
    sums = _sums_by_code(code, probabilities[box], len(top))
    keep = confident_choice(sizes[top - 1], sums[1:] / sizes[top - 1], tau, min_confidence, size_ratio)
    out = np.zeros_like(mask)
    out[box] = np.concatenate(([False], keep))[code]
    return out


def _sums_by_code(code: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """Per code 0..n the sum of ``values`` (as float32, summed in float64) over the voxels of that code, slab by slab
    along the first axis: no boolean selection of the voxels (which cost seconds per label on whole-image boxes)
    and temporaries of a slab's size."""
    if code.shape != values.shape:
        raise ValueError(f"codes of shape {code.shape} but values of shape {values.shape}")
    rows = max(1, (1 << 22) // max(1, int(np.prod(code.shape[1:]))))
    sums = np.zeros(n + 1)
    for i in range(0, code.shape[0], rows):
        sums += np.bincount(code[i:i + rows].ravel(), weights=np.asarray(values[i:i + rows], np.float32).ravel(),
                            minlength=n + 1)
    return sums


def confident_choice(sizes: np.ndarray, p: np.ndarray, tau: float = 0.1, min_confidence: float = 0.86,
                     size_ratio: float = 0.6) -> np.ndarray:
    """Algorithm 3 (paper §2.9, lines 9-23), the decision: which of T (``sizes`` of the up to three largest
    components, largest first, and their mean probabilities ``p``) to keep, as a bool mask over T. The rules and
    how the listing is read: :func:`keep_confident_components`."""
    keep = (p.max() - p <= tau) & (p > min_confidence)                  # K, as a mask over T
    if keep.sum() < 2:
        best = int(np.argmax(p))                                        # c_max, as an index into T
        keep = np.arange(len(p)) == (best if best < 2 and sizes[best] / sizes[0] > size_ratio else 0)
    return keep


def instance_order(sizes: np.ndarray, min_voxels: float) -> np.ndarray:
    """Which components an instance prompt keeps and in which order: indices into ``sizes`` of those with at least
    ``min_voxels`` voxels, largest first (size ties keep component order)."""
    order = np.argsort(-sizes, kind="stable")
    return order[sizes[order] >= min_voxels]


def number_instances(mask: np.ndarray, min_voxels: float = 10) -> np.ndarray:
    """Instance prompts: 6-connected components of ``mask`` with at least ``min_voxels`` voxels, numbered 1..K
    by size (largest first). Returns (*S) uint16 (uint32 beyond 65535 instances)."""
    mask = mask.astype(bool, copy=False)
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return np.zeros(mask.shape, np.uint16)
    box = boxes[0]  # components are found inside the mask's bounding box (big images, few structures)
    components, n = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=6, return_N=True)
    kept = instance_order(np.bincount(components[mask[box]], minlength=n + 1)[1:], min_voxels)
    remap = np.zeros(n + 1, np.uint32)
    remap[kept + 1] = np.arange(1, len(kept) + 1)
    dtype = np.uint16 if len(kept) < 65536 else np.uint32
    out = np.zeros(mask.shape, dtype)
    out[box] = remap[components]
    return out


#: instance size limit when no trained instance target's size is known: 10 mm³ (10 voxels of 1 mm³)
MIN_INSTANCE_VOLUME_MM3 = 10.0
#: otherwise the limit is this fraction of the box of the smallest trained instance target's median extent
MIN_INSTANCE_BOX_FRACTION = 0.1


def min_instance_volume_mm3(instance_extents_mm: Sequence[Sequence[float]] = ()) -> float:
    """The smallest volume (mm³) an instance may have: ``MIN_INSTANCE_BOX_FRACTION`` of the box spanned by the
    smallest trained instance target's median extent (``instance_extents_mm``, per axis in mm, one per trained
    instance target), else ``MIN_INSTANCE_VOLUME_MM3``. A sphere fills 52 % of its box, so a tenth of the box drops
    only fragments well under the trained instances' size, whatever the voxel grid."""
    boxes = [float(np.prod(e)) for e in instance_extents_mm if e is not None and len(e) and np.all(np.asarray(e) > 0)]
    return MIN_INSTANCE_BOX_FRACTION * min(boxes) if boxes else MIN_INSTANCE_VOLUME_MM3


def min_instance_voxels(min_volume_mm3: float, spacing_mm: Sequence[float]) -> float:
    """A volume limit (mm³) in voxels of ``spacing_mm`` (a fraction: components are kept when size >= it)."""
    return float(min_volume_mm3) / float(np.prod([float(s) for s in spacing_mm]))


def postprocess_label_map(label_map: np.ndarray, probabilities: np.ndarray, labels: Sequence[int],
                          instance: Sequence[bool], min_instance_voxels: float = 10,
                          multi_part: Sequence[bool] | None = None) -> tuple[np.ndarray, dict]:
    """Apply Algorithm 3 to every single-part semantic prompt and the small-component rule to instance prompts.

    ``multi_part[n]`` (see :func:`is_multi_part`) exempts prompt n from Algorithm 3: a structure made of several
    parts ("both kidneys", a region, multi-focal lesions) keeps all of them. Default: no prompt is exempt.
    ``min_instance_voxels``: instance components smaller than this are dropped (:func:`min_instance_voxels`).
    Returns the cleaned label map and ``{label: instance map}`` for instance prompts (numbered components).
    """
    if multi_part is None:
        multi_part = [False] * len(labels)
    if not len(labels) == len(instance) == len(multi_part):
        raise ValueError(f"{len(labels)} labels, {len(instance)} instance flags, {len(multi_part)} multi-part flags")
    if any(int(label) < 1 for label in labels):
        raise ValueError(f"labels must be >= 1 (0 is background): {list(labels)}")
    label_map = np.ascontiguousarray(label_map)    # one memory order for both paths (cc3d numbers in it)
    out = label_map.copy()
    boxes = ndimage.find_objects(label_map, max_label=int(max(labels, default=0)))
    if one_pass_pays(boxes, label_map.size, labels, instance, multi_part):
        instances = {}
        for label, (box, numbered) in postprocess_in_one_pass(out, lambda n, box: probabilities[n][box], labels,
                                                              instance, multi_part, min_instance_voxels).items():
            instances[label] = np.zeros(label_map.shape, np.uint16 if numbered is None else numbered.dtype)
            if box is not None:
                instances[label][box] = numbered
        return out, instances
    instances = {}
    for n, (label, is_instance, several) in enumerate(zip(labels, instance, multi_part)):
        mask = label_map == label
        if is_instance:
            numbered = number_instances(mask, min_instance_voxels)
            out[mask & (numbered == 0)] = 0
            instances[label] = numbered
        elif not several and mask.any():
            out[mask & ~keep_confident_components(mask, probabilities[n])] = 0
    return out, instances


def one_pass_pays(boxes: Sequence, image_voxels: int, labels: Sequence[int], instance: Sequence[bool],
                  multi_part: Sequence[bool]) -> bool:
    """Whether :func:`postprocess_in_one_pass` beats one pass per label: when the bounding boxes of the labels to
    post-process (instances and single-part labels; ``boxes``: ``ndimage.find_objects`` of the label map) add up
    to more than the image's ``image_voxels``."""
    volume = sum(int(np.prod([s.stop - s.start for s in boxes[label - 1]]))
                 for label, is_instance, several in zip(labels, instance, multi_part)
                 if label >= 1 and boxes[label - 1] is not None and (is_instance or not several))
    return volume > image_voxels


def postprocess_in_one_pass(label_map: np.ndarray, probability, labels: Sequence[int], instance: Sequence[bool],
                            multi_part: Sequence[bool], min_instance_voxels: float = 10) -> dict:
    """What :func:`postprocess_label_map` does (in place on ``label_map``), with one multi-label connected-components
    pass for all labels instead of one per label: for label maps whose labels spread over the whole image (a noisy
    or untrained network's output: one whole-image pass per prompt otherwise). The same components (cc3d numbers a
    label's components in the same raster order whether alone or among others), sizes, Algorithm 3 decisions
    (:func:`confident_choice`) and instance numbers (:func:`instance_order`) for a C-ordered ``label_map``; a label
    given twice gets both prompts' drops, as in :func:`postprocess_label_map`.

    ``probability(n, box)``: prompt n's probabilities (float32) on ``box`` (a tuple of slices), asked for only for
    single-part labels with several components, on the box of their three largest. Returns ``{label: (box,
    numbered)}`` for instance prompts: the label's bounding box and its numbered components there (None, None when
    the label is absent)."""
    values = np.ascontiguousarray(label_map)       # cc3d's numbering follows the memory order: keep it C order
    components, count = cc3d.connected_components(values, connectivity=6, return_N=True)
    stats = cc3d.statistics(components, no_slice_conversion=True)
    sizes = stats["voxel_counts"].astype(np.int64)
    extents = stats["bounding_boxes"].astype(np.int64)        # per component: (start, last) per axis
    label_of = np.zeros(count + 1, values.dtype)
    label_of[components.ravel()] = values.ravel()
    by_label = np.argsort(label_of[1:], kind="stable") + 1      # component ids grouped by label, ascending ids
    starts = np.searchsorted(label_of[by_label], labels, side="left")
    stops = np.searchsorted(label_of[by_label], labels, side="right")

    def box_of(ids: np.ndarray) -> tuple:
        e = extents[ids]
        return tuple(slice(int(e[:, 2 * a].min()), int(e[:, 2 * a + 1].max()) + 1) for a in range(values.ndim))

    drop = np.zeros(count + 1, bool)
    instances = {}
    for n, (label, is_instance, several, a, b) in enumerate(zip(labels, instance, multi_part, starts, stops)):
        ids = by_label[a:b]
        if is_instance:
            if not len(ids):
                instances[label] = (None, None)
                continue
            kept = ids[instance_order(sizes[ids], min_instance_voxels)]
            drop[np.setdiff1d(ids, kept)] = True
            remap = np.zeros(count + 1, np.uint16 if len(kept) < 65536 else np.uint32)
            remap[kept] = np.arange(1, len(kept) + 1)
            box = box_of(ids)
            instances[label] = (box, remap[components[box]])
        elif not several and len(ids) > 1:
            top = ids[np.argsort(-sizes[ids], kind="stable")[:3]]       # T, largest first
            box = box_of(top)
            code_of = np.zeros(count + 1, np.uint8)
            code_of[top] = np.arange(1, len(top) + 1)
            sums = _sums_by_code(code_of[components[box]], probability(n, box), len(top))
            drop[np.setdiff1d(ids, top[confident_choice(sizes[top], sums[1:] / sizes[top])])] = True
    if drop.any():
        label_map[drop[components]] = 0
    return instances


# Words that make a class several structures. Plurals and lesion words: multi-focal by nature.
_MULTI_PART_WORDS = frozenset("""both bilateral lungs kidneys adrenals ovaries testes breasts eyes eyeballs ribs
    vertebrae discs bones teeth lips arytenoids vessels veins arteries muscles nodes lymph lesion lesions tumor tumors
    tumour tumours nodule nodules metastasis metastases cyst cysts mass masses polyp polyps stone stones calculi foci
    hyperintensities abnormalities abnormality primaries plaques cells nuclei mitochondria clefts
    cancer carcinoma gtvn hippocampi thalami amygdalae lobes ventricles hemispheres nerves glands""".split())
# Paired organs: without "left"/"right" the class means both sides.
_PAIRED = ("lung", "kidney", "adrenal gland", "ovary", "testis", "breast", "eye", "eyeball", "optic nerve",
           "cochlea", "parotid", "submandibular gland", "lacrimal gland", "femur", "femoral head", "hip", "humerus",
           "clavicle", "scapula", "carotid artery", "hippocampus", "amygdala", "iliac", "gluteus", "iliopsoas",
           "autochthon", "thalamus", "caudate", "putamen", "pallidum", "globus pallidus", "accumbens",
           "lateral ventricle", "cerebellar cortex", "cerebellar hemisphere", "cerebral hemisphere")


def is_multi_part(text: str, is_region: bool = False, instance: bool = False) -> bool:
    """Whether a prompt's structure may consist of several parts, so Algorithm 3 must not keep only some of them.

    True for a region target (a union of labels), an instance prompt, a class whose name (``text``: best the
    canonical class name) holds a plural or lesion word or "both"/"bilateral", and a paired organ named without a side
    ("kidney", "lungs"; "left kidney" is one part).
    """
    if is_region or instance:
        return True
    words = re.findall(r"[a-z]+", text.lower())
    if _MULTI_PART_WORDS.intersection(words):
        return True
    if "left" in words and "right" in words:
        return True                                 # "left and right kidney"
    if "left" in words or "right" in words:
        return False
    joined = " " + " ".join(words) + " "
    return any(f" {organ} " in joined for organ in _PAIRED)
