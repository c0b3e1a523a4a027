"""Shared fixtures: isolated nnU-Net folders, a preprocessed phantom dataset, the default text encoder."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PHANTOM_ID = 901


def nnunet_env(root: Path, **extra) -> dict:
    """Environment for nnU-Net subprocesses rooted at ``root`` (nnunetv2.paths reads it at import time)."""
    env = dict(os.environ)
    env.update(nnUNet_raw=str(root / "raw"), nnUNet_preprocessed=str(root / "preprocessed"),
               nnUNet_results=str(root / "results"), nnUNet_def_n_proc="1",
               nnUNet_medals_cache=str(root / "cache"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def run(cmd: list[str], env: dict, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
    """Run a console script of this environment; on failure show its output."""
    exe = [str(BIN / cmd[0]), *cmd[1:]] if (BIN / cmd[0]).exists() else cmd
    proc = subprocess.run(exe, env=env, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


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
    from nnunetv2_medals.text_prompts.embedding_cache import EmbeddingCache
    from nnunetv2_medals.text_prompts.encoder import TextEncoder

    return TextEncoder(cache=EmbeddingCache(tmp_path_factory.mktemp("embedding_cache")))


@pytest.fixture(scope="session")
def shared_prompts():
    """The challenge's per-dataset prompt file (the package ships a copy of ../shared/data's file)."""
    import json
    from importlib import resources

    return json.loads(resources.files("nnunetv2_medals.text_prompts").joinpath(
        "biomedsegfm_text_prompts.json").read_text())


def train_env(preprocessed, extra_dir=None, **extra) -> dict:
    """Environment for stock nnUNetv2_train/-predict with our trainers (plus ``extra_dir``) findable."""
    from nnunetv2_medals.cli import trainer_dir

    dirs = [str(trainer_dir())] + ([str(extra_dir)] if extra_dir else [])
    env = dict(preprocessed["env"], nnUNet_extTrainer=os.pathsep.join(dirs), nnUNet_n_proc_DA="0")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def model_dir(preprocessed, trainer: str) -> Path:
    return (preprocessed["root"] / "results" / f"Dataset{PHANTOM_ID}_MedalSPhantom" /
            f"{trainer}__MedalSPlansCPU__3d_fullres")


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
