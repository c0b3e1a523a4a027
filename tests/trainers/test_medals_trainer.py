"""MedalSTrainer through the stock nnUNetv2_train command (tiny CPU runs on the phantom)."""
import json
import os
import platform
import textwrap

import pytest
import numpy as np
import torch

from nnunetv2_medals.network.medals_network import TRAINED_TARGETS_PREFIX
from nnunetv2_medals.training.cpu_memory import ENV, USER_SETTINGS
from tests.helpers import model_dir, run, train_env

TRAIN = ["nnUNetv2_train"]


@pytest.fixture(scope="module")
def smoke_run(smoke_model):
    return smoke_model["stdout"], smoke_model["dir"] / "fold_0", smoke_model["env"]


def test_stock_train_command_writes_a_final_checkpoint_with_the_vocabulary(smoke_run):
    stdout, out, _ = smoke_run
    assert "Using trainer 'MedalSTrainer_smoke'" in stdout
    # CPU training keeps freed memory for reuse and says how to turn it off (training.cpu_memory; glibc only)
    if platform.libc_ver()[0] == "glibc" and not any(os.environ.get(v) for v in (ENV, *USER_SETTINGS)):
        assert "freed memory is kept for reuse" in stdout and f"{ENV}=0" in stdout
    checkpoint = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    weights = checkpoint["network_weights"]
    vocabulary = weights[TRAINED_TARGETS_PREFIX + "_extra_state"]
    names = [t["name"] for t in vocabulary["targets"]]
    assert names[:2] == ["liver", "kidneys"] and "left kidney" in names
    assert vocabulary["text_encoder"]["id"].startswith("all-MiniLM-L6-v2@")
    assert vocabulary["phrasing_embeddings"].shape == (len(vocabulary["phrasings"]), 384)
    class_embeddings = weights[TRAINED_TARGETS_PREFIX + "class_embeddings"]
    assert class_embeddings.shape == (8, 384) and class_embeddings.abs().sum() > 0
    assert checkpoint["inference_allowed_mirroring_axes"] is None
    # typical sizes for dynamic resampling: single lymph nodes are far smaller than the liver they sit beside
    extents = vocabulary["target_extent_mm"]
    assert set(extents) == set(names)
    assert np.prod(extents["lymph node"]) * 20 < np.prod(extents["liver"])
    assert np.prod(extents["left kidney"]) < np.prod(extents["kidneys"])
    # the results folder carries nnU-Net's region handling, one sigmoid channel per target
    ds = json.loads((out.parent / "dataset.json").read_text())
    assert ds["labels"]["liver"] == [3, 4] and ds["regions_class_order"][:2] == [3, 1]
    assert (out / "progress.png").is_file()


def test_validation_reports_dice_per_target(smoke_run):
    _, out, env = smoke_run
    run([*TRAIN, "901", "3d_fullres", "0", "-tr", "MedalSTrainer_smoke", "-p", "MedalSPlansCPU", "-device", "cpu",
         "--val"], env)
    summary = json.loads((out / "validation" / "summary.json").read_text())
    per_region = summary["mean"]
    assert len(per_region) == 8
    assert all(0.0 <= v["Dice"] <= 1.0 for v in per_region.values())


def test_resume_with_c_continues_from_the_latest_checkpoint(preprocessed_phantom, tmp_path):
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "medals_interrupt_probe.py").write_text(textwrap.dedent("""
        import os
        import torch
        from nnunetv2_medals.trainers.medals_trainer import MedalSTrainer_smoke

        class MedalSTrainer_interrupted(MedalSTrainer_smoke):
            # nnU-Net records __init__'s named parameters for checkpoints: keep the signature explicit
            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_epochs = 2
                self.num_iterations_per_epoch = 2
                self.save_every = 1

            def on_epoch_start(self):
                if self.current_epoch == 1 and not os.environ.get("MEDALS_RESUMED"):
                    os._exit(3)  # killed mid-training, after epoch 0's checkpoint_latest.pth
                super().on_epoch_start()
    """))
    env = train_env(preprocessed_phantom, ext)
    cmd = [*TRAIN, "901", "3d_fullres", "1", "-tr", "MedalSTrainer_interrupted", "-p", "MedalSPlansCPU", "-device",
           "cpu"]
    first = run(cmd, env, check=False)
    assert first.returncode == 3, first.stderr[-2000:]
    out = model_dir(preprocessed_phantom, "MedalSTrainer_interrupted") / "fold_1"
    latest = torch.load(out / "checkpoint_latest.pth", map_location="cpu", weights_only=False)
    assert latest["current_epoch"] == 1
    resumed = run([*cmd, "--c"], dict(env, MEDALS_RESUMED="1"))
    assert "Epoch 1" in resumed.stdout and "Epoch 0\n" not in resumed.stdout
    final = torch.load(out / "checkpoint_final.pth", map_location="cpu", weights_only=False)
    assert final["current_epoch"] == 2


def test_a_checkpoint_from_before_fused_adamw_resumes_fused_and_steps_with_the_grad_scaler():
    """Loading an optimizer state saved without ``fused`` switches it off; the trainer restores it, and the fused
    step must then work with nnU-Net's grad scaler (on CUDA the unfused step refuses the scaler's arguments)."""
    from nnunetv2_medals.trainers.medals_trainer import use_fused_adamw

    torch.manual_seed(0)
    old_net = torch.nn.Linear(4, 3)
    old = torch.optim.AdamW(old_net.parameters(), 1e-3, weight_decay=0.01)
    old_net(torch.randn(5, 4)).sum().backward()
    old.step()
    net = torch.nn.Linear(4, 3)
    net.load_state_dict(old_net.state_dict())
    optimizer = torch.optim.AdamW(net.parameters(), 1e-3, weight_decay=0.01, fused=True)
    optimizer.load_state_dict(old.state_dict())
    assert not optimizer.param_groups[0]["fused"]  # what the loaded state does on its own
    use_fused_adamw(optimizer, True)
    assert all(g["fused"] for g in optimizer.param_groups)
    scaler = torch.amp.GradScaler("cpu")
    before = [p.detach().clone() for p in net.parameters()]
    scaler.scale(net(torch.randn(5, 4)).sum()).backward()
    scaler.unscale_(optimizer)
    scaler.step(optimizer)
    scaler.update()
    assert all(not torch.equal(a, b) for a, b in zip(before, net.parameters()))
    assert all(float(s["step"]) == 2.0 for s in optimizer.state.values())
