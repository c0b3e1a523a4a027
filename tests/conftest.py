"""Shared fixtures: isolated nnU-Net folders, a preprocessed phantom dataset, the default text encoder."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from nnunetv2_medals.text_prompts.embedding_cache import EmbeddingCache
from nnunetv2_medals.text_prompts.encoder import TextEncoder
from tests.helpers import PHANTOM_ID, model_dir, nnunet_env, run, train_env


@pytest.fixture(scope="session")
def preprocessed_phantom(tmp_path_factory):
    """Phantom dataset (6 cases) planned and preprocessed with MedalSPlannerCPU, once per test session."""
    root = tmp_path_factory.mktemp("nnunet")
    env = nnunet_env(root)
    run(["nnunetv2_medals", "phantom", "-d", str(PHANTOM_ID), "-n", "6", "--num_test", "2"], env)
    run(["nnUNetv2_plan_and_preprocess_medals", "-d", str(PHANTOM_ID), "-pl", "MedalSPlannerCPU", "-c", "3d_fullres",
         "-npfp", "1", "-np", "1", "--no_pbar"], env)
    return {"root": root, "env": env, "dataset_id": PHANTOM_ID,
            "raw": root / "raw" / f"Dataset{PHANTOM_ID}_MedalSPhantom",
            "preprocessed": root / "preprocessed" / f"Dataset{PHANTOM_ID}_MedalSPhantom"}


@pytest.fixture(scope="session")
def text_encoder(tmp_path_factory):
    """The default encoder with a session-private cache (the model loads once per session)."""
    return TextEncoder(cache=EmbeddingCache(tmp_path_factory.mktemp("embedding_cache")))


@pytest.fixture(scope="session")
def shared_prompts():
    """The challenge's per-dataset prompt file (the package ships a copy of ../shared/data's file)."""
    return json.loads(resources.files("nnunetv2_medals.text_prompts").joinpath(
        "biomedsegfm_text_prompts.json").read_text())


@pytest.fixture(scope="session")
def smoke_model(preprocessed_phantom):
    """A MedalSTrainer_smoke model (3 iterations): real files, meaningless weights."""
    env = train_env(preprocessed_phantom)
    proc = run(["nnUNetv2_train", str(PHANTOM_ID), "3d_fullres", "0", "-tr", "MedalSTrainer_smoke", "-p",
                "MedalSPlansCPU", "-device", "cpu"], env)
    return {"dir": model_dir(preprocessed_phantom, "MedalSTrainer_smoke"), "env": env, "stdout": proc.stdout}


@pytest.fixture(scope="session")
def demo_model(preprocessed_phantom):
    """The CPU demo model (750 iterations, several minutes on 2 cores): a model that actually reads text."""
    env = train_env(preprocessed_phantom, nnUNet_n_proc_DA=2)
    run(["nnUNetv2_train", str(PHANTOM_ID), "3d_fullres", "0", "-tr", "MedalSTrainer_CPUDemo", "-p",
         "MedalSPlansCPU", "-device", "cpu"], env, timeout=1800)
    return {"dir": model_dir(preprocessed_phantom, "MedalSTrainer_CPUDemo"), "env": env}
