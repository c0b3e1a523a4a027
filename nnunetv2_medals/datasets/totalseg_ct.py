"""A text-prompted real-CT dataset with left and right (``nnunetv2_medals ct-example``).

Source: the ``totalsegmentator`` 2.18.0 sdist (Apache-2.0, :mod:`nnunetv2_medals.datasets.totalseg_source`):
``example_ct_sm.nii.gz`` (real CT, 122x101x30 at 3 mm, upper abdomen) with ``example_seg.nii.gz``. The labels are
TotalSegmentator's model output, not manual annotation. Label names come from the package's ``class_map["total"]``
(``kidney_left`` -> "left kidney", ``rib_left_7`` -> "left rib 7", ``vertebrae_L1`` -> "L1 vertebra"); every
structure with at least ``MIN_VOXELS`` voxels in the scan becomes a label with natural phrasings (sides for every
left/right structure) and regions ("both kidneys", "the ribs", "lumbar vertebrae", ...). One subject, so as in the
brain-atlas job: ``imagesTr`` holds the scan (train) and a perturbed copy (validation, ``splits_final.json``),
``imagesTs``/``labelsTs`` a second perturbed copy. The package's other scans (a DICOM series of another person, an
MR scan, a chest CT) are never part of the dataset; :func:`write_heldout_dicom` copies the DICOM series out with its
reference segmentation, for scoring a trained model on a person it never saw.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage
from scipy.spatial.transform import Rotation

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.datasets.totalseg_source import PACKAGE, REFERENCE, VERSION, TotalSegSource
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json

SCAN, SEG = f"{REFERENCE}/example_ct_sm.nii.gz", f"{REFERENCE}/example_seg.nii.gz"
DICOM_SERIES, DICOM_SEG = f"{REFERENCE}/example_ct_dicom", f"{REFERENCE}/example_seg_dicom.nii.gz"
#: smaller structures (e.g. a 1-voxel lung lobe at the scan's edge) are not labels: nothing to learn from
MIN_VOXELS = 50
LICENCE = (f"CT scans and segmentations from the {PACKAGE} {VERSION} source distribution (Apache-2.0, "
           f"https://github.com/wasserth/TotalSegmentator); read from the archive, not redistributed by "
           f"nnunetv2-medals. The segmentations are TotalSegmentator's model output, not manual annotation.")
#: other words for a structure (also used with a side: "left renal parenchyma")
SYNONYMS = {
    "spleen": ["splenic parenchyma"], "kidney": ["renal parenchyma"], "gallbladder": ["gall bladder"],
    "liver": ["hepatic parenchyma", "the whole liver"], "stomach": ["gastric wall and lumen"],
    "pancreas": ["pancreatic gland"], "adrenal gland": ["suprarenal gland"], "aorta": ["abdominal aorta"],
    "inferior vena cava": ["IVC"], "portal vein and splenic vein": ["portal venous system"],
    "autochthon": ["autochthonous back muscle", "erector spinae muscle"], "iliopsoas": ["iliopsoas muscle"],
    "colon": ["large bowel"], "small bowel": ["small intestine"], "esophagus": ["oesophagus"],
    "spinal cord": ["the cord in the spinal canal"], "costal cartilages": ["rib cartilage"],
}
PLURALS = {"kidney": "kidneys", "adrenal gland": "adrenal glands", "autochthon": "autochthonous back muscles",
           "iliopsoas": "iliopsoas muscles", "lung lower lobe": "lower lung lobes", "lung upper lobe": "upper lung lobes",
           "humerus": "humeri", "scapula": "scapulae", "femur": "femora", "hip": "hips"}
ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth", 6: "sixth", 7: "seventh", 8: "eighth",
            9: "ninth", 10: "tenth", 11: "eleventh", 12: "twelfth"}
SPINE = {"C": "cervical", "T": "thoracic", "L": "lumbar", "S": "sacral"}


def structure(name: str) -> tuple[str, str | None, list[str]]:
    """A ``class_map`` name -> (our label name, its side or None, phrasings)."""
    rib = re.fullmatch(r"rib_(left|right)_(\d+)", name)
    if rib:
        side, n = rib.group(1), int(rib.group(2))
        ordinal = ORDINALS.get(n, f"{n}th")
        return f"{side} rib {n}", side, [f"{side} rib {n}", f"{side} {ordinal} rib", f"{ordinal} rib on the {side}",
                                         f"rib {n}, {side}", f"{side.capitalize()} rib {n} in whole body CT"]
    vertebra = re.fullmatch(r"vertebrae_([CTLS])(\d+)", name)
    if vertebra:
        level = vertebra.group(1) + vertebra.group(2)
        ordinal = ORDINALS.get(int(vertebra.group(2)), vertebra.group(2))
        return f"{level} vertebra", None, [f"{level} vertebra", f"vertebra {level}", f"{level} vertebral body",
                                           f"{ordinal} {SPINE[vertebra.group(1)]} vertebra",
                                           f"Vertebrae {level} in whole body CT"]
    lateral = re.fullmatch(r"(.+)_(left|right)", name)
    if lateral:
        base, side = lateral.group(1).replace("_", " "), lateral.group(2)
        words = [f"{side} {base}", f"{base} on the {side}", f"{side}-sided {base}", f"the {side} {base} in CT",
                 f"{side.capitalize()} {base} in whole body CT", f"{base}, {side}"]
        return f"{side} {base}", side, words + [f"{side} {s}" for s in SYNONYMS.get(base, [])]
    base = name.replace("_", " ")
    words = [base, f"the {base}", f"{base} in CT", f"CT of the {base}", f"{base.capitalize()} in whole body CT",
             f"CT imaging of the {base} in the whole body region"]
    return base, None, words + SYNONYMS.get(base, [])


def regions(names: list[str]) -> dict[str, dict]:
    """Named unions of the dataset's labels: both sides of each pair, the ribs (all, left, right), the vertebrae
    (all, per spine section), the lungs (both, per side). Only unions of two or more labels."""
    out: dict[str, dict] = {}

    def add(name, labels, prompts):
        if len(labels) >= 2:
            out[name] = {"labels": labels, "prompts": prompts}

    for n in names:
        m = re.fullmatch(r"left (?!rib )(.+)", n)
        if m and f"right {m.group(1)}" in names:
            base = m.group(1)
            plural = PLURALS.get(base, base + "s")
            add(f"both {plural}", [n, f"right {base}"],
                [f"both {plural}", f"left and right {base}", f"bilateral {plural}", f"the {plural}"])
    ribs = [n for n in names if re.fullmatch(r"(left|right) rib \d+", n)]
    add("the ribs", ribs, ["the ribs", "ribs", "all ribs", "ribs on both sides"])
    for side in ("left", "right"):
        add(f"{side} ribs", [n for n in ribs if n.startswith(side)],
            [f"{side} ribs", f"the {side} ribs", f"ribs on the {side}", f"{side}-sided ribs"])
    vertebrae = [n for n in names if re.fullmatch(r"[CTLS]\d+ vertebra", n)]
    add("the vertebrae", vertebrae, ["the vertebrae", "vertebrae", "the spine", "vertebral column"])
    for letter, section in SPINE.items():
        add(f"{section} vertebrae", [n for n in vertebrae if n.startswith(letter)],
            [f"{section} vertebrae", f"the {section} spine", f"{section} vertebral bodies"])
    lobes = [n for n in names if re.fullmatch(r"(left|right) lung \w+ lobe", n)]
    add("both lungs", lobes, ["both lungs", "the lungs", "lungs", "lung fields"])
    for side in ("left", "right"):
        add(f"{side} lung", [n for n in lobes if n.startswith(side)],
            [f"{side} lung", f"the {side} lung", f"lung on the {side}", f"{side}-sided lung"])
    return out


def perturb(image: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A plausible second CT of the same abdomen: small rotation/scaling/shift (one transform for image and labels,
    linear vs nearest, edges continued), a HU gain and offset, a slight blur and noise."""
    matrix = Rotation.from_euler("xyz", rng.uniform(-6, 6, 3), degrees=True).as_matrix() * rng.uniform(0.94, 1.06)
    centre = (np.asarray(image.shape) - 1) / 2
    offset = centre - matrix @ centre + rng.uniform(-3, 3, 3)
    warped = ndimage.affine_transform(image.astype(np.float32), matrix, offset, order=1, mode="nearest")
    warped_labels = ndimage.affine_transform(labels, matrix, offset, order=0, mode="nearest")
    warped = ndimage.gaussian_filter(warped, rng.uniform(0.0, 0.6))
    hu = warped * rng.uniform(0.95, 1.05) + rng.uniform(-20, 20) + rng.normal(0, rng.uniform(8, 20), image.shape)
    return hu.astype(np.float32), warped_labels.astype(np.uint8)


def _labels_of(source: TotalSegSource) -> tuple[dict[int, str], list[tuple[str, int, str | None, list[str]]]]:
    class_map = source.class_map("total")
    seg = np.asarray(source.nifti(SEG).dataobj)
    counts = np.bincount(seg.astype(np.int64).ravel(), minlength=max(class_map) + 1)
    unknown = sorted(set(np.nonzero(counts)[0].tolist()) - set(class_map) - {0})
    if unknown:
        raise MedalSInputError(source.path, SEG, f"holds label ids {unknown} that class_map['total'] does not name")
    out = []
    for index in sorted(class_map):
        if counts[index] >= MIN_VOXELS:
            name, side, words = structure(class_map[index])
            out.append((name, index, side, words))
    return class_map, out


def write_ct_example_dataset(output_folder: str | os.PathLike, source: str | os.PathLike | None = None, seed: int = 0,
                             overwrite: bool = False) -> Path:
    """Build the dataset (see the module docstring) into ``output_folder``; it appears complete or not at all."""
    with TotalSegSource(source) as src:
        _, structures = _labels_of(src)
        scan, seg_img = src.nifti(SCAN), src.nifti(SEG)
        sha = src.sha256()
    if scan.shape != seg_img.shape or not np.allclose(scan.affine, seg_img.affine, atol=1e-3):
        raise MedalSInputError(SEG, "<grid>", f"does not lie on the grid of {SCAN}")
    image = np.asarray(scan.dataobj, dtype=np.float32)
    seg = np.asarray(seg_img.dataobj).astype(np.int64)
    labels = np.zeros(seg.shape, np.uint8)
    for value, (_, index, _, _) in enumerate(structures, start=1):
        labels[seg == index] = value
    names = [name for name, _, _, _ in structures]
    dataset_json = {
        "name": "MedalSTotalSegCT",
        "description": "Real upper-abdomen CT (TotalSegmentator's example_ct_sm, 3 mm) with TotalSegmentator's "
                       "'total' segmentation as labels (model output, not manual annotation); single subject, "
                       "perturbed copies for validation and test",
        "licence": LICENCE,
        "provenance": {"package": f"{PACKAGE}=={VERSION}", "sdist_sha256": sha, "image": SCAN, "labels": SEG,
                       "label_names": "totalsegmentator/map_to_binary.py class_map['total']",
                       "source_ids": {name: index for name, index, _, _ in structures},
                       "min_voxels": MIN_VOXELS},
        "channel_names": {"0": "CT"},
        "labels": {"background": 0, **{name: v for v, name in enumerate(names, start=1)}},
        "numTraining": 2,
        "file_ending": ".nii.gz",
        "imaging_modality": "CT",
        "text_prompts": {name: words for name, _, _, words in structures},
        "text_regions": regions(names),
    }
    rng = np.random.default_rng(seed)
    with atomic_directory(output_folder, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
            (tmp / sub).mkdir()

        def save(array, folder, name):
            nib.save(nib.Nifti1Image(array, scan.affine), str(tmp / folder / name))

        save(image, "imagesTr", "ct_000_0000.nii.gz")
        save(labels, "labelsTr", "ct_000.nii.gz")
        for case, folder in (("ct_val", "Tr"), ("ct_test", "Ts")):
            copy, copy_labels = perturb(image, labels, rng)
            save(copy, f"images{folder}", f"{case}_0000.nii.gz")
            save(copy_labels, f"labels{folder}", f"{case}.nii.gz")
        atomic_write_json(tmp / "dataset.json", dataset_json)
        atomic_write_json(tmp / "splits_final.json", [{"train": ["ct_000"], "val": ["ct_val"]}])
        load_text_prompted_dataset(tmp)
    return Path(output_folder)


def write_heldout_dicom(output_folder: str | os.PathLike, dataset_json: dict, source: str | os.PathLike | None = None,
                        overwrite: bool = False) -> list[str]:
    """The held-out DICOM series (another person) into ``output_folder/example_ct_dicom/`` and its reference
    segmentation, restricted to the structures the dataset shares and written in the dataset's label values, as
    ``output_folder/labels/example_ct_dicom.nii.gz``. Returns the shared label names."""
    ids = dataset_json.get("provenance", {}).get("source_ids")
    if not ids:
        raise MedalSInputError("dataset.json", "provenance.source_ids", "is missing; build it with ct-example")
    with TotalSegSource(source) as src, atomic_directory(output_folder, overwrite=overwrite) as tmp:
        seg_img = src.nifti(DICOM_SEG)
        src.extract_folder(DICOM_SERIES, tmp / Path(DICOM_SERIES).name)
        seg = np.asarray(seg_img.dataobj).astype(np.int64)
        present = set(np.unique(seg).tolist())
        out = np.zeros(seg.shape, np.uint8)
        shared = []
        for name, index in ids.items():
            if index in present:
                out[seg == index] = dataset_json["labels"][name]
                shared.append(name)
        (tmp / "labels").mkdir()
        nib.save(nib.Nifti1Image(out, seg_img.affine), str(tmp / "labels" / f"{Path(DICOM_SERIES).name}.nii.gz"))
    return shared
