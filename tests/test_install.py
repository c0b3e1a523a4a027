"""The installed environment: namespace layout, start-up hook, stock nnU-Net trainer lookup."""
import subprocess
import sys
import textwrap

from tests.helpers import REPO, nnunet_env, run


def _python(code: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)


def test_torchvision_and_bert_import_in_a_fresh_interpreter(tmp_path):
    proc = _python("import torchvision, timm\nfrom transformers import BertModel\nprint('ok')", tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_startup_hook_does_not_import_torch(tmp_path):
    proc = _python("import sys; print('torch' in sys.modules, 'nnunetv2_medals._torchvision_guard' in sys.modules)",
                   tmp_path)
    assert proc.stdout.split() == ["False", "True"], proc.stderr


def test_side_folders_install_under_the_namespace_only(tmp_path):
    code = ("import importlib.util as u, nnunetv2_medals.trainers, nnunetv2_medals.planners, "
            "nnunetv2_medals.text_prompts\n"
            "print([u.find_spec(n) is None for n in ('trainers', 'planners', 'text_prompts')])")
    proc = _python(code, tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[True, True, True]"


def test_regular_install_contains_packages_schema_and_hook(tmp_path):
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                           "--target", str(target), str(REPO)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for rel in ("nnunetv2_medals/trainers/__init__.py", "nnunetv2_medals/planners/medals_planners.py",
                "nnunetv2_medals/text_prompts/prompt_schema.json", "nnunetv2_medals_torchvision_guard.pth"):
        assert (target / rel).is_file(), rel
    assert not (target / "trainers").exists() and not (target / "planners").exists()


def test_trainer_dir_command_points_at_installed_trainers(tmp_path):
    from pathlib import Path

    import nnunetv2_medals.trainers

    out = run(["nnunetv2_medals", "trainer-dir"], nnunet_env(tmp_path)).stdout.strip()
    assert Path(out) == Path(nnunetv2_medals.trainers.__path__[0]).resolve()
    assert (Path(out) / "__init__.py").is_file()


def test_stock_nnunetv2_train_finds_an_external_trainer(tmp_path, preprocessed_phantom):
    """The stock -tr lookup imports nnU-Net's primus trainers (timm -> torchvision) before nnUNet_extTrainer."""
    ext = tmp_path / "ext"
    ext.mkdir()
    (ext / "medals_lookup_probe.py").write_text(textwrap.dedent("""
        import sys
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        class MedalSLookupProbeTrainer(nnUNetTrainer):
            def __init__(self, *args, **kwargs):
                print("PROBE TRAINER CONSTRUCTED", flush=True)
                sys.exit(0)
    """))
    env = dict(preprocessed_phantom["env"], nnUNet_extTrainer=str(ext))
    proc = run(["nnUNetv2_train", str(preprocessed_phantom["dataset_id"]), "3d_fullres", "0", "-tr",
                "MedalSLookupProbeTrainer", "-p", "MedalSPlansCPU", "-device", "cpu"], env)
    assert "PROBE TRAINER CONSTRUCTED" in proc.stdout
