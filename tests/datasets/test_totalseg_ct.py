"""The real-CT builder (``ct-example``) and its source, the totalsegmentator 2.18.0 sdist (downloaded once by pip
into the cache; the tests skip, saying so, only when it cannot be downloaded)."""
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunetv2_medals.cli import main
from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from nnunetv2_medals.datasets.totalseg_ct import (DICOM_SEG, DICOM_SERIES, MIN_VOXELS, SCAN, SEG, regions,
                                                  structure)
from nnunetv2_medals.datasets.totalseg_source import CLASS_MAP, TotalSegSource, cached_sdist
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import canonical_image
from nnunetv2_medals.inference.dicom import largest_series, read_series
from nnunetv2_medals.laterality import find_midline


@pytest.fixture(scope="module")
def sdist() -> Path:
    try:
        path = cached_sdist()  # only the download may skip; a damaged archive or a parse error fails below
    except MedalSInputError as e:
        pytest.skip(f"the totalsegmentator 2.18.0 sdist cannot be downloaded here: {e}")
    with TotalSegSource(path) as src:
        return src.path


@pytest.fixture(scope="module")
def built(sdist, tmp_path_factory):
    root = tmp_path_factory.mktemp("ct")
    out, heldout = root / "Dataset961_MedalSTotalSegCT", root / "heldout"
    main(["ct-example", "-d", "961", "-o", str(out), "--source", str(sdist), "--heldout", str(heldout)])
    return out, heldout


def test_ct_example_passes_our_validator_and_nnunets_integrity_check(built):
    out, _ = built
    ds = load_text_prompted_dataset(out)
    labels = [t for t in ds.targets if not t.is_region]
    assert len(labels) == 40 and ds.modality == "CT"
    assert {"liver", "spleen", "left kidney", "right kidney", "left autochthon", "aorta", "L1 vertebra",
            "left rib 7", "right rib 12"} <= {t.name for t in labels}
    assert set(ds.target("both kidneys").label_values) == {ds.labels["left kidney"], ds.labels["right kidney"]}
    assert len(ds.target("the ribs").label_values) == 12
    assert set(ds.target("lumbar vertebrae").label_values) == {ds.labels["L1 vertebra"], ds.labels["L2 vertebra"]}
    assert "kidney on the left" in ds.target("left kidney").prompts
    assert json.loads((out / "splits_final.json").read_text()) == [{"train": ["ct_000"], "val": ["ct_val"]}]
    meta = json.loads((out / "dataset.json").read_text())
    assert "Apache-2.0" in meta["licence"] and "not manual annotation" in meta["licence"]
    assert meta["provenance"]["package"] == "totalsegmentator==2.18.0" and len(meta["provenance"]["sdist_sha256"]) == 64
    verify_dataset_integrity(str(out), num_processes=1)
    # the copies are perturbed, not identical; left and right lie where the world says
    seg = sitk.ReadImage(str(out / "labelsTr" / "ct_000.nii.gz"))
    array = sitk.GetArrayFromImage(seg)
    val = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "labelsTr" / "ct_val.nii.gz")))
    assert (val != array).any() and (val == array).mean() > 0.7
    assert (np.bincount(array.ravel(), minlength=41)[1:] >= MIN_VOXELS).all()

    def world_x(name):  # patient-left coordinate of a label's centre (SimpleITK's world is LPS)
        z, y, x = np.argwhere(array == ds.labels[name]).mean(0)
        return seg.TransformContinuousIndexToPhysicalPoint((float(x), float(y), float(z)))[0]
    for pair in ("kidney", "autochthon", "iliopsoas", "adrenal gland", "rib 10"):
        assert world_x(f"left {pair}") > world_x(f"right {pair}") + 20, pair
    assert world_x("liver") < world_x("spleen")


def test_label_names_come_from_the_packages_class_map(sdist, tmp_path):
    with TotalSegSource(sdist) as src:
        table = src.class_map("total")
        # an unpacked copy with one name changed in map_to_binary.py: the dataset follows the file
        root = tmp_path / "totalsegmentator-2.18.0"
        for member in (CLASS_MAP, SCAN, SEG):
            (root / member).parent.mkdir(parents=True, exist_ok=True)
            (root / member).write_bytes(src.read(member))
    assert table[5] == "liver" and table[3] == "kidney_left" and table[98] == "rib_left_7"
    text = (root / CLASS_MAP).read_text()
    start = text.index('"total": {')
    (root / CLASS_MAP).write_text(text[:start] + text[start:].replace('5: "liver",', '5: "hepar",', 1))
    out = tmp_path / "ds"
    main(["ct-example", "-d", "962", "-o", str(out), "--source", str(tmp_path)])
    meta = json.loads((out / "dataset.json").read_text())
    assert "hepar" in meta["labels"] and "liver" not in meta["labels"]
    for name, index in meta["provenance"]["source_ids"].items():
        assert structure(table[index] if index != 5 else "hepar")[0] == name
    (root / CLASS_MAP).write_text("class_map = {'total_mr': {1: 'spleen'}}\n")
    with pytest.raises(SystemExit, match="has no task 'total'"):
        main(["ct-example", "-d", "962", "-o", str(tmp_path / "ds2"), "--source", str(tmp_path)])


def test_dicom_reader_geometry_matches_the_packages_dicom_segmentation(built, sdist):
    with TotalSegSource(sdist) as src:
        assert src.has(DICOM_SEG), f"{DICOM_SEG} is missing from the pinned sdist"
    _, heldout = built
    series = largest_series(heldout / Path(DICOM_SERIES).name)
    image, image_props = canonical_image(read_series(series))
    seg_file = heldout / "labels" / "example_ct_dicom.nii.gz"
    seg, seg_props = canonical_image(sitk.ReadImage(str(seg_file)))
    assert image.shape == seg.shape == (1, 20, 512, 512)
    for key in ("spacing", "origin", "direction"):
        assert np.allclose(image_props["sitk_stuff"][key], seg_props["sitk_stuff"][key], atol=1e-3), key
    # voxel for voxel the labels lie on their tissue: bone is bright, liver is soft tissue
    labels = json.loads((built[0] / "dataset.json").read_text())["labels"]
    assert image[seg == labels["T12 vertebra"]].mean() > 200
    assert 0 < image[seg == labels["liver"]].mean() < 200


def test_the_midline_of_both_real_scans_runs_through_the_spinal_cord(built):
    """The side guard's midline (a mirror-symmetry fit) on the training scan and on the DICOM series of another
    person (500 mm field of view, arms in it): within 6 mm of the spinal cord of TotalSegmentator's reference."""
    out, heldout = built
    cord = json.loads((out / "dataset.json").read_text())["labels"]["spinal cord"]
    scans = [(sitk.ReadImage(str(out / "imagesTr" / "ct_000_0000.nii.gz")),
              sitk.ReadImage(str(out / "labelsTr" / "ct_000.nii.gz"))),
             (read_series(largest_series(heldout / Path(DICOM_SERIES).name)),
              sitk.ReadImage(str(heldout / "labels" / "example_ct_dicom.nii.gz")))]
    for image, seg in scans:
        array, props = canonical_image(image)
        midline = find_midline(array[0], props["spacing"], lr_axis=2)
        cord_x = np.argwhere(canonical_image(seg)[0][0] == cord)[:, 2].mean()
        assert midline.trusted and abs(midline.index - cord_x) * props["spacing"][2] < 6.0, (midline, cord_x)


def test_regions_only_unite_two_or_more_labels():
    names = [structure(n)[0] for n in ("kidney_left", "kidney_right", "lung_lower_lobe_right", "rib_left_7",
                                       "vertebrae_L1")]
    found = regions(names)
    assert found == {"both kidneys": {"labels": ["left kidney", "right kidney"],
                                      "prompts": ["both kidneys", "left and right kidney", "bilateral kidneys",
                                                  "the kidneys"]}}
    assert structure("vertebrae_T12")[2][3] == "twelfth thoracic vertebra"
