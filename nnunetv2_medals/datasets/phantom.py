"""Synthetic CT-like text-prompted dataset: the embedded default data of the plugin.

Each case is a torso with a spine, a liver with a tumour inside it, a spleen, left and right kidneys and a few
lymph nodes, in HU-like intensities with noise, random anisotropic spacing and random placement/size.
Laterality and nesting are deliberate: both kidneys look alike (only their side differs), and the region "liver"
(liver parenchyma ∪ liver tumour) overlaps two labels, so a model must read the text to get them right.

Geometry is in LPS millimetres, as ITK writes it: array axes (z, y, x), +x = patient left, +y = posterior.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json, write_nifti

LABELS = {"background": 0, "left kidney": 1, "right kidney": 2, "liver parenchyma": 3, "liver tumour": 4,
          "spleen": 5, "lymph node": 6}

TEXT_PROMPTS = {
    "left kidney": ["left kidney", "Left kidney in abdominal CT", "left renal parenchyma",
                    "CT of the left kidney", "kidney, left"],
    "right kidney": ["right kidney", "Right kidney in abdominal CT", "right renal parenchyma",
                     "CT of the right kidney", "kidney, right"],
    "liver parenchyma": ["liver parenchyma", "healthy liver tissue", "non-tumorous liver",
                         "hepatic parenchyma without the tumour"],
    "liver tumour": ["liver tumour", "hepatic lesion", "tumor in the liver", "hypodense liver mass"],
    "spleen": ["spleen", "Spleen in abdominal CT", "splenic tissue", "CT imaging of the spleen"],
    "lymph node": {"prompts": ["lymph node", "enlarged lymph nodes", "abdominal lymph nodes",
                               "nodal lesions"], "instance": True},
}
TEXT_REGIONS = {
    "liver": {"labels": ["liver parenchyma", "liver tumour"],
              "prompts": ["liver", "the whole liver", "liver including the tumour", "Liver in abdominal CT"]},
    "kidneys": {"labels": ["left kidney", "right kidney"],
                "prompts": ["kidneys", "both kidneys", "left and right kidney", "bilateral kidneys"]},
}

#: the optional new structure (``gallbladder=True``): the fine-tuning benchmark's class the demo model never saw.
#: A bile-filled sac under the liver's inferior-anterior surface, hypodense like the liver tumour but outside the
#: liver, so text (and position) must tell the two apart.
GALLBLADDER = "gallbladder"
GALLBLADDER_LABEL = 7
GALLBLADDER_PROMPTS = ["gallbladder", "gall bladder", "Gallbladder in abdominal CT", "biliary vesicle",
                       "cholecyst"]

_FOV_MM = np.array([180.0, 240.0, 320.0])  # (z, y, x)


@dataclass(frozen=True)
class PhantomCase:
    image_hu: np.ndarray     # (Z, Y, X) int16
    labels: np.ndarray       # (Z, Y, X) uint8, values of LABELS
    spacing_mm: tuple[float, float, float]  # (z, y, x)


def _ellipsoid(grid, center, semi_axes) -> np.ndarray:
    return sum(((g - c) / a) ** 2 for g, c, a in zip(grid, center, semi_axes)) <= 1.0


def make_phantom_case(rng: np.random.Generator, spacing: tuple[float, float, float] | None = None,
                      gallbladder: bool = False) -> PhantomCase:
    """One synthetic abdominal CT with its label map (random placement, sizes, tumour and nodes).

    ``spacing`` (z, y, x) mm fixes the voxel size (the field of view stays 180 x 240 x 320 mm); by default it is
    drawn at the coarse 6-8 mm x 4-5 mm that keeps the demo fast. ``gallbladder`` adds :data:`GALLBLADDER` (label
    :data:`GALLBLADDER_LABEL`); without it the random stream and every case are those of the default phantom.
    """
    random_spacing = np.array([rng.uniform(6.0, 8.0), *(2 * [rng.uniform(4.0, 5.0)])])
    spacing = random_spacing if spacing is None else np.asarray(spacing, float)
    shape = np.round(_FOV_MM / spacing).astype(int)
    grid = np.meshgrid(*[(np.arange(n) + 0.5) * s - f / 2 for n, s, f in zip(shape, spacing, _FOV_MM)],
                       indexing="ij", sparse=True)
    z, y, x = grid
    body_scale = rng.uniform(0.9, 1.1)

    def jitter(center, semi, scale=0.15, shift=8.0):
        return (np.asarray(center) + rng.uniform(-shift, shift, 3),
                np.asarray(semi) * body_scale * rng.uniform(1 - scale, 1 + scale, 3))

    hu = np.full(shape, -1000.0)
    labels = np.zeros(shape, np.uint8)
    body_ax, body_ay = 140 * body_scale, 100 * body_scale
    body = ((x / body_ax) ** 2 + (y / body_ay) ** 2 <= 1.0) & (np.abs(z) < 85)
    inner = ((x / (body_ax - 12)) ** 2 + (y / (body_ay - 12)) ** 2 <= 1.0) & body
    hu[body] = -100.0
    hu[inner] = 40.0
    spine = ((x ** 2 + (y - 60 * body_scale) ** 2) <= 15 ** 2) & body
    hu[spine] = 700.0

    organs = [  # (label, center (z, y, x) mm, semi-axes mm, HU)
        ("liver parenchyma", (20, -10, -60), (55, 55, 60), 62.0),
        ("spleen", (30, 30, 75), (45, 40, 30), 48.0),
        ("left kidney", (-20, 45, 55), (45, 20, 22), 180.0),
        ("right kidney", (-30, 45, -55), (45, 20, 22), 180.0),
    ]
    for name, center, semi, value in organs:
        c, a = jitter(center, semi)
        mask = _ellipsoid(grid, c, a) & inner & ~spine
        hu[mask] = value
        labels[mask] = LABELS[name]
        if name == "liver parenchyma":
            liver_center, liver_semi = c, a

    tumour_r = rng.uniform(14, 22)
    t_center = liver_center + rng.uniform(-0.35, 0.35, 3) * liver_semi
    tumour = _ellipsoid(grid, t_center, [tumour_r] * 3) & (labels == LABELS["liver parenchyma"])
    hu[tumour] = 15.0
    labels[tumour] = LABELS["liver tumour"]
    if gallbladder:
        _add_gallbladder(rng, grid, hu, labels, liver_center, liver_semi, inner & ~spine)

    # lymph nodes: separate spheres in free soft tissue, anterior to the spine, at least 12 mm apart
    free = inner & (labels == 0) & ~spine
    placed: list[np.ndarray] = []
    for _ in range(200):
        if len(placed) >= rng.integers(2, 6):
            break
        r = rng.uniform(7, 11)
        c = np.array([rng.uniform(-70, 70), rng.uniform(-60, 30), rng.uniform(-90, 90)])
        if any(np.linalg.norm(c - p) < 2 * r + 15 for p in placed):
            continue
        node = _ellipsoid(grid, c, [r] * 3)
        if node.sum() < 4 or not free[node].all():
            continue
        hu[node] = 95.0
        labels[node] = LABELS["lymph node"]
        placed.append(c)

    hu = ndimage.gaussian_filter(hu, sigma=0.6)  # partial-volume blur
    hu += rng.normal(0, 18.0, shape)
    return PhantomCase(np.clip(hu, -1024, 3000).astype(np.int16), labels, tuple(float(s) for s in spacing))


def _add_gallbladder(rng, grid, hu, labels, liver_center, liver_semi, allowed) -> None:
    """A bile-filled ellipsoid at the liver's inferior (-z), anterior (-y), medial (+x) edge; it may indent the
    liver parenchyma but never the tumour."""
    center = liver_center + np.array([-0.75, -0.55, 0.35]) * liver_semi + rng.uniform(-5.0, 5.0, 3)
    semi = np.array([32.0, 16.0, 16.0]) * rng.uniform(0.85, 1.15, 3)
    mask = (_ellipsoid(grid, center, semi) & allowed
            & np.isin(labels, [0, LABELS["liver parenchyma"]]))
    hu[mask] = 8.0
    labels[mask] = GALLBLADDER_LABEL


def phantom_dataset_json(num_training: int, gallbladder: bool = False) -> dict:
    """A fresh ``dataset.json`` dict (callers may modify it); ``gallbladder`` adds that class and its phrasings."""
    dataset = copy.deepcopy({
        "name": "MedalSPhantom",
        "description": "Synthetic abdominal CT phantoms with text prompts (nnunetv2-medals)",
        "channel_names": {"0": "CT"},
        "labels": LABELS,
        "numTraining": num_training,
        "file_ending": ".nii.gz",
        "imaging_modality": "CT",
        "text_prompts": TEXT_PROMPTS,
        "text_regions": TEXT_REGIONS,
    })
    if gallbladder:
        dataset["name"] = "MedalSPhantomGallbladder"
        dataset["labels"][GALLBLADDER] = GALLBLADDER_LABEL
        dataset["text_prompts"][GALLBLADDER] = list(GALLBLADDER_PROMPTS)
    return dataset


def write_phantom_dataset(output_folder: str | os.PathLike, num_cases: int = 10, num_test: int = 2,
                          seed: int = 0, overwrite: bool = False,
                          spacing: tuple[float, float, float] | None = None, gallbladder: bool = False) -> Path:
    """Write a text-prompted nnU-Net raw dataset (imagesTr/labelsTr, imagesTs/labelsTs, dataset.json).

    ``spacing`` (z, y, x mm) fixes the voxel size of every case (default: random coarse spacing); ``gallbladder``
    adds the gallbladder class (:func:`make_phantom_case`).

    The folder appears complete or not at all (built in a temporary sibling, then renamed).
    """
    if num_cases < 1:
        raise ValueError("num_cases must be at least 1")
    output_folder = Path(output_folder)
    rng = np.random.default_rng(seed)
    with atomic_directory(output_folder, overwrite=overwrite) as tmp:
        for split, count in (("Tr", num_cases), ("Ts", num_test)):
            (tmp / f"images{split}").mkdir()
            (tmp / f"labels{split}").mkdir()
            for i in range(count):
                case = make_phantom_case(rng, spacing, gallbladder)
                name = f"phantom_{split.lower()}_{i:03d}"
                write_nifti(case.image_hu, case.spacing_mm, tmp / f"images{split}" / f"{name}_0000.nii.gz")
                write_nifti(case.labels, case.spacing_mm, tmp / f"labels{split}" / f"{name}.nii.gz")
        atomic_write_json(tmp / "dataset.json", phantom_dataset_json(num_cases, gallbladder))
    return output_folder
