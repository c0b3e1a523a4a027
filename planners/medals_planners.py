"""Medal S experiment planners: nnU-Net ResEnc planning, with the network swapped for MedalSNetwork.

``MedalSPlanner`` is the real-size preset (ResEnc-M topology, ~8 GB VRAM target, reference query-decoder sizes);
``MedalSPlannerCPU`` caps patches at 48³ and narrows every width, for demos and tests on CPU. Both record the text
encoder (id, dim, folder) in the plans so a model never meets embeddings of another encoder, keep nnU-Net's
``DefaultPreprocessor`` (Blosc2) unchanged, and write their data under their own identifier.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
from nnunetv2.imageio.reader_writer_registry import recursive_find_reader_writer_by_name
from nnunetv2.paths import nnUNet_preprocessed
from nnunetv2.preprocessing.resampling.resample_torch import resample_torch_fornnunet
from nnunetv2.experiment_planning.experiment_planners.residual_unets.residual_encoder_unet_planners import \
    nnUNetPlannerResEncM

from nnunetv2_medals.geometry import canonical_reader_name
from nnunetv2_medals.paths import ANNOTATED_LABELS_FILE, NETWORK_CLASS_NAME, PLANS_KEY
from nnunetv2_medals.text_prompts.encoder import DEFAULT_ENCODER, encoder_identity, resolve_encoder_dir


class MedalSPlanner(nnUNetPlannerResEncM):
    """Real-size Medal S preset (plans ``MedalSPlans``)."""

    #: text encoder folder, or None for the packaged default; the planning entry point sets it per run
    text_encoder: str | None = None
    #: query decoder sizes of the reference implementation (DESIGN §4)
    query_decoder = {"query_dim": 768, "query_heads": 8, "query_layers": 6, "query_ffn_dim": 2048,
                     "query_mlp_hidden": 256}
    #: None keeps nnU-Net's patch size; an int caps every patch edge (voxels)
    max_patch_edge: int | None = None
    #: None keeps nnU-Net's batch size
    fixed_batch_size: int | None = None
    #: 3d_lowres is planned coarse enough that its patch holds the whole median image (nnU-Net: a quarter of it).
    #: It is the coarse model of two-stage inference (paper §2.6), which sees the whole image at once, as the
    #: reference's 224x224x128 patch at 1.5x1.5x3 mm does for most scans.
    lowres_patch_coverage = 1.0

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "MedalSPlans",
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.lowres_creation_threshold = self.lowres_patch_coverage
        encoder_dir = resolve_encoder_dir(self.text_encoder, field="--text_encoder")
        encoder_id, dim = encoder_identity(encoder_dir)
        self.text_encoder_record = {"id": encoder_id, "dim": dim,
                                    "path": DEFAULT_ENCODER if self.text_encoder in (None, DEFAULT_ENCODER)
                                    else str(encoder_dir)}

    def determine_reader_writer(self):
        """nnU-Net's reader for the dataset, replaced by the canonical-orientation one wherever SimpleITK reads the
        files (see :mod:`nnunetv2_medals.geometry`): the plans name it, so preprocessing, training and stock
        ``nnUNetv2_predict`` all see every image in one orientation, whatever its voxel order."""
        default = super().determine_reader_writer()
        name = canonical_reader_name(default.__name__)
        return default if name == default.__name__ else recursive_find_reader_writer_by_name(name)

    def determine_segmentation_softmax_export_fn(self, *args, **kwargs):
        """Resample exported probabilities with torch (nnU-Net's own ``resample_torch_fornnunet``, as its
        ``_torchres`` planners do): prediction exports one probability map per prompt, and the default
        scikit-image path costs ~4.4 s per map for a 512x512x300 CT on 2 cores against ~0.26 s, with the same values
        (max difference 2e-6). Preprocessing keeps nnU-Net's default resampling."""
        return resample_torch_fornnunet, {"is_seg": False, "force_separate_z": None,
                                          "memefficient_seg_resampling": False}

    def generate_data_identifier(self, configuration_name: str) -> str:
        # ResEnc planners share 'nnUNetPlans_3d_fullres' with the default plans; ours never reuse or clobber it
        return self.plans_identifier + "_" + configuration_name

    def get_plans_for_configuration(self, spacing, median_shape, data_identifier: str,
                                    approximate_n_voxels_dataset: float, _cache: dict) -> dict:
        true_median_shape = median_shape
        if self.max_patch_edge is not None:
            # nnU-Net clips its initial patch to the median shape; clipping that shape caps the patch (the
            # divisibility padding of a <= 48 edge with >= 4-voxel bottleneck maps never exceeds 48)
            median_shape = np.minimum(np.asarray(median_shape), self.max_patch_edge)
        plan = super().get_plans_for_configuration(spacing, median_shape, data_identifier,
                                                   approximate_n_voxels_dataset, _cache)
        # the plans record the real median image size, not the clipped one
        plan["median_image_size_in_voxels"] = [float(s) for s in true_median_shape]
        if self.max_patch_edge is not None and max(plan["patch_size"]) > self.max_patch_edge:
            raise RuntimeError(f"planned patch {plan['patch_size']} exceeds {self.max_patch_edge}")
        if self.fixed_batch_size is not None:
            plan["batch_size"] = self.fixed_batch_size
        if len(spacing) == 3:
            plan["architecture"]["network_class_name"] = NETWORK_CLASS_NAME
            plan["architecture"]["arch_kwargs"].update(
                {"text_embedding_dim": self.text_encoder_record["dim"], **self.query_decoder})
        return plan

    def save_plans(self, plans):
        # Medal S is a 3D method: the 2d configuration nnU-Net always plans is dropped rather than left broken.
        # Where nnU-Net plans a 3d_lowres it stays (the coarse model of two-stage inference, paper §2.6); its
        # cascade follow-up is dropped, because stage 2 gets stage 1's output as spatial prompts, not as one-hot
        # input channels.
        plans["configurations"].pop("2d", None)
        plans["configurations"].pop("3d_cascade_fullres", None)
        if "3d_lowres" in plans["configurations"]:
            plans["configurations"]["3d_lowres"].pop("next_stage", None)
        plans[PLANS_KEY] = {"text_encoder": self.text_encoder_record, "network_class_name": NETWORK_CLASS_NAME}
        super().save_plans(plans)
        # nnU-Net copies dataset.json into the preprocessed folder; the partial-annotation map travels with it
        # so do the partial-annotation map and a split the dataset fixes (e.g. the brain atlas's single subject
        # trains on itself and validates on a perturbed copy); nnU-Net reads splits_final.json from there
        for name in (ANNOTATED_LABELS_FILE, "splits_final.json"):
            source = Path(self.raw_dataset_folder) / name
            target = Path(nnUNet_preprocessed) / self.dataset_name / name
            if source.is_file() and not (name == "splits_final.json" and target.is_file()):
                shutil.copyfile(source, target)


class MedalSPlannerCPU(MedalSPlanner):
    """Narrow CPU preset (plans ``MedalSPlansCPU``): patches <= 48³, features 16..128, batch 2."""

    query_decoder = {"query_dim": 128, "query_heads": 4, "query_layers": 2, "query_ffn_dim": 256,
                     "query_mlp_hidden": 64}
    max_patch_edge = 48
    fixed_batch_size = 2

    def __init__(self, dataset_name_or_id: Union[str, int], gpu_memory_target_in_gb: float = 8,
                 preprocessor_name: str = "DefaultPreprocessor", plans_name: str = "MedalSPlansCPU",
                 overwrite_target_spacing: Union[List[float], Tuple[float, ...]] = None,
                 suppress_transpose: bool = False):
        super().__init__(dataset_name_or_id, gpu_memory_target_in_gb, preprocessor_name, plans_name,
                         overwrite_target_spacing, suppress_transpose)
        self.UNet_base_num_features = 16
        self.UNet_max_features_3d = 128
        self.UNet_blocks_per_stage_encoder = (1, 2, 2, 2, 2, 2, 2, 2, 2, 2)
        self.UNet_blocks_per_stage_decoder = (1,) * 10


PLANNERS = {cls.__name__: cls for cls in (MedalSPlanner, MedalSPlannerCPU)}
