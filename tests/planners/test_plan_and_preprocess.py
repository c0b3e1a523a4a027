"""Planning + preprocessing through nnUNetv2_plan_and_preprocess_medals."""
import json

import numpy as np
import pytest

from nnunetv2_medals.datasets.phantom import phantom_dataset_json, write_phantom_dataset
from tests.helpers import nnunet_env, run


def test_cpu_preset_plans_our_network_and_writes_blosc2(preprocessed_phantom):
    pre = preprocessed_phantom["preprocessed"]
    plans = json.loads((pre / "MedalSPlansCPU.json").read_text())
    assert set(plans["configurations"]) == {"3d_fullres"}
    cfg = plans["configurations"]["3d_fullres"]
    assert cfg["architecture"]["network_class_name"] == "nnunetv2_medals.network.medals_network.MedalSNetwork"
    assert max(cfg["patch_size"]) <= 48 and cfg["batch_size"] == 2
    assert cfg["architecture"]["arch_kwargs"]["features_per_stage"][0] == 16
    assert cfg["architecture"]["arch_kwargs"]["text_embedding_dim"] == 384
    assert cfg["data_identifier"] == "MedalSPlansCPU_3d_fullres"
    encoder = plans["medals"]["text_encoder"]
    assert encoder["dim"] == 384 and encoder["id"].startswith("all-MiniLM-L6-v2@") and encoder["path"] == "default"
    data = pre / "MedalSPlansCPU_3d_fullres"
    assert len(list(data.glob("*_seg.b2nd"))) == 6 and len(list(data.glob("*.pkl"))) == 6
    # nnU-Net copies dataset.json, so the prompts travel with the preprocessed data
    assert "text_prompts" in json.loads((pre / "dataset.json").read_text())


def test_real_size_preset_plans_reference_query_decoder(tmp_path):
    env = nnunet_env(tmp_path)
    write_phantom_dataset(tmp_path / "raw" / "Dataset902_MedalSPhantom", num_cases=2, num_test=0)
    run(["nnUNetv2_plan_and_preprocess_medals", "-d", "902", "--no_pp", "-npfp", "1"], env)
    plans = json.loads((tmp_path / "preprocessed" / "Dataset902_MedalSPhantom" / "MedalSPlans.json").read_text())
    kwargs = plans["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"]
    assert (kwargs["query_dim"], kwargs["query_heads"], kwargs["query_layers"], kwargs["query_ffn_dim"]) == \
        (768, 8, 6, 2048)
    assert kwargs["n_blocks_per_stage"][:3] == [1, 3, 4]  # ResEnc-M encoder
    assert plans["configurations"]["3d_fullres"]["data_identifier"] == "MedalSPlans_3d_fullres"


def test_coarse_configuration_sees_the_whole_image_in_one_patch(tmp_path):
    """3d_lowres is the coarse stage of two-stage prediction: one patch holds the whole median image."""
    env = nnunet_env(tmp_path)
    write_phantom_dataset(tmp_path / "raw" / "Dataset904_MedalSPhantom", num_cases=2, num_test=0,
                          spacing=(2.0, 1.5, 1.5))
    run(["nnUNetv2_plan_and_preprocess_medals", "-d", "904", "-pl", "MedalSPlannerCPU", "--no_pp", "-npfp", "1"], env)
    plans = json.loads((tmp_path / "preprocessed" / "Dataset904_MedalSPhantom" / "MedalSPlansCPU.json").read_text())
    configs = plans["configurations"]
    assert set(configs) == {"3d_fullres", "3d_lowres"}  # no cascade: stage 2 gets stage 1 as spatial prompts
    fine, coarse = configs["3d_fullres"], configs["3d_lowres"]
    assert "next_stage" not in coarse
    assert np.prod(coarse["patch_size"]) >= np.prod(coarse["median_image_size_in_voxels"])
    assert np.prod(fine["patch_size"]) < np.prod(fine["median_image_size_in_voxels"]) / 8
    assert all(c >= 3 * f for c, f in zip(coarse["spacing"], fine["spacing"]))


@pytest.mark.parametrize("case", ["missing_prompts", "unknown_region_label", "missing_encoder", "label_gap",
                                  "unknown_dataset"])
def test_bad_input_fails_before_anything_is_written(tmp_path, case):
    env = nnunet_env(tmp_path)
    folder = tmp_path / "raw" / "Dataset903_MedalSPhantom"
    write_phantom_dataset(folder, num_cases=2, num_test=0)
    ds = phantom_dataset_json(2)
    extra = []
    dataset = "903"
    if case == "label_gap":
        # issue #19: spleen declared 9 while nnU-Net needs 0..K (the files hold its old value)
        ds["labels"]["spleen"] = 9
        expected = "dataset.json: field 'labels.spleen': value 9 leaves a gap"
    elif case == "unknown_dataset":
        dataset = "904"
        expected = "field '-d': no dataset with id 904"
    elif case == "missing_prompts":
        del ds["text_prompts"]["spleen"]
        expected = "dataset.json: field 'text_prompts.spleen'"
    elif case == "unknown_region_label":
        ds["text_regions"]["liver"]["labels"].append("gallbladder")
        expected = "dataset.json: field 'text_regions.liver.labels[2]'"
    else:
        extra = ["--text_encoder", str(tmp_path / "no_model")]
        expected = "field '--text_encoder'"
    (folder / "dataset.json").write_text(json.dumps(ds))
    before = (folder / "dataset.json").read_bytes()
    proc = run(["nnUNetv2_plan_and_preprocess_medals", "-d", dataset, "-pl", "MedalSPlannerCPU", "-npfp", "1",
                *extra], env, check=False)
    assert proc.returncode != 0
    assert expected in proc.stderr and proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "preprocessed").exists()
    assert (folder / "dataset.json").read_bytes() == before
