"""From per-prompt probabilities to label maps: pure functions on arrays (no nnU-Net, no files).

* :func:`probabilities_to_label_map` — argmax over prompts where the best probability reaches 0.5;
* :func:`keep_confident_components` — Algorithm 3 (paper §2.9), per single-part semantic class;
* :func:`number_instances` — instance prompts: connected components, small ones dropped, numbered 1..K;
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
    # p_i: the probabilities are read on T's voxels only (in raster order, summed in float64 as ndimage.mean does)
    code_of = np.zeros(n + 1, np.uint8)
    code_of[top] = np.arange(1, len(top) + 1)
    code = code_of[components]                                          # 1..3 on T, 0 elsewhere
    in_top = code > 0
    sums = np.bincount(code[in_top], weights=probabilities[box][in_top].astype(np.float32), minlength=len(top) + 1)
    p = sums[1:] / sizes[top - 1]
    keep = (p.max() - p <= tau) & (p > min_confidence)                  # K, as a mask over T
    if keep.sum() < 2:
        best = int(np.argmax(p))                                        # c_max, as an index into T
        largest = sizes[top[0] - 1]
        keep = np.arange(len(top)) == (best if best < 2 and sizes[top[best] - 1] / largest > size_ratio else 0)
    out = np.zeros_like(mask)
    out[box] = np.concatenate(([False], keep))[code]
    return out


def number_instances(mask: np.ndarray, min_voxels: float = 10) -> np.ndarray:
    """Instance prompts: 6-connected components of ``mask`` with at least ``min_voxels`` voxels, numbered 1..K
    by size (largest first). Returns (*S) uint16 (uint32 beyond 65535 instances)."""
    mask = mask.astype(bool, copy=False)
    boxes = ndimage.find_objects(mask.astype(np.uint8))
    if not boxes:
        return np.zeros(mask.shape, np.uint16)
    box = boxes[0]  # components are found inside the mask's bounding box (big images, few structures)
    components, n = cc3d.connected_components(mask[box].astype(np.uint8), connectivity=6, return_N=True)
    sizes = np.bincount(components[mask[box]], minlength=n + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    kept = order[sizes[order] >= min_voxels]
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
    out = label_map.copy()
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
