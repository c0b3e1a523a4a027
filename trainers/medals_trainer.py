"""MedalSTrainer: nnU-Net's trainer with text prompts as classes (found through ``nnUNet_extTrainer``).

nnU-Net imports the modules of this folder as top-level names, so everything else is imported absolutely from
``nnunetv2_medals``. What is reused unchanged: Blosc2 data loading, batchgeneratorsv2 augmentation (without
mirroring, see below), checkpoints and ``--c``, the progress plot, the final validation and its Dice summary,
``-num_gpus`` DDP (CUDA only in nnU-Net). What changes: the label handling (one sigmoid channel per target,
regions included), the loss (per-query BCE + Dice), the optimiser (AdamW + cosine, as the reference), and the
train/validation steps (prompt sampling, Algorithm 1, occasional steps without prompt fusion).
"""
import functools
import json
from pathlib import Path
from typing import List, Tuple, Union

import numpy as np
import torch
from batchgenerators.utilities.file_and_folder_operations import load_pickle
from batchgeneratorsv2.transforms.utils.deep_supervision_downsampling import DownsampleSegForDSTransform
from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast
from torch._dynamo import OptimizedModule

from nnunetv2_medals.datasets.text_prompted import parse_text_prompted_dataset
from nnunetv2_medals.geometry import is_canonical
from nnunetv2_medals.laterality import side_extents_mm, widest_side_extents
from nnunetv2_medals.losses import PromptBCEDiceLoss, nnunet_deep_supervision_weights
from nnunetv2_medals.paths import ANNOTATED_LABELS_FILE, PLANS_KEY
from nnunetv2_medals.text_prompts.side_wordings import OPT_OUT_KEY as SIDE_WORDINGS_KEY
from nnunetv2_medals.text_prompts.side_wordings import with_side_wordings
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary
from nnunetv2_medals.training.cpu_memory import ENV as KEEP_FREED_MEMORY_ENV
from nnunetv2_medals.training.cpu_memory import keep_freed_memory
from nnunetv2_medals.training.dynamic_zoom import (box_sizes_mm, case_subset, median_extents_mm,
                                                   zoom_to_smallest_target)
from nnunetv2_medals.training.lr_schedule import CosineLRScheduler
from nnunetv2_medals.training.prompt_perturbation import PromptMisplacement
from nnunetv2_medals.training.prompt_sampling import TargetLookup, case_annotation_mask
from nnunetv2_medals.training.prompted_batch import build_prompted_batch
from nnunetv2_medals.training.short_fov import ShortFieldOfViewTransform


def fused_adamw(device: torch.device) -> bool | None:
    """AdamW's ``fused`` setting for a device: the fused kernel on CPU and CUDA, torch's default elsewhere."""
    return True if device.type in ("cpu", "cuda") else None


def use_fused_adamw(optimizer: torch.optim.Optimizer, fused: bool | None) -> None:
    """Set ``fused`` on every parameter group of a loaded AdamW and move its step counters where the fused kernel
    reads them (float32 on the parameter's device); the moments are already there."""
    for group in optimizer.param_groups:
        group["fused"] = fused
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            if fused and "step" in state:
                state["step"] = torch.as_tensor(state["step"], dtype=torch.float32).to(param.device)


class MedalSTrainer(nnUNetTrainer):
    #: prompts per sample (reference: 32)
    max_queries = 32
    #: fraction of steps that bypass the prompt fusion (reference: ~10%)
    p_skip_fusion = 0.1
    #: add generated side wordings to the phrasings of targets that name a side (text_prompts.side_wordings; a
    #: dataset opts out with "text_prompt_side_wordings": false). Off in the short CPU schedules: in the 750-iteration
    #: demo they cost the left/right distinction (validation Dice left/right kidney 0.24/0.66 with them; pseudo Dice
    #: 0.93/0.94 by epoch 23 without)
    side_wordings = True
    #: dynamic resampling in training (paper §2.5): share of samples zoomed in on their smallest target, and the
    #: fraction of the patch that target should fill
    dynamic_zoom_probability = 0.2
    dynamic_alpha = 0.5
    #: misplaced mask prompts (our addition, training.prompt_perturbation): share of samples whose prompts are
    #: shifted/rotated/scaled/warped and dilated or eroded, then handed to the network whole instead of going through
    #: Algorithm 1 (``whole``); 0 trains on Algorithm 1 alone (unless ``exact`` > 0: that share of the other
    #: samples hands its true masks over whole; default 0, brain job at 0.15: 0.828 / 0.832). Brain job, full
    #: retrainings (text only / text + misplaced prior): 0 -> 0.844 / 0.818; before Algorithm 1: 0.2 -> 0.844 /
    #: 0.830 and 0.831 / 0.808, 0.5 -> 0.681 / 0.704 (text-only laterality lost on two structures); whole: 0.2 ->
    #: 0.834 / 0.834 and 0.812 / 0.804, 0.4 -> 0.854 / 0.852
    prompt_misplacement = PromptMisplacement(probability=0.2)
    #: short fields of view (our addition, training.short_fov): per sample and axis, the probability that the patch
    #: keeps only a centred slab and the rest is padding, as prediction pads a scan shorter than the patch
    short_fov_probability = 0.1

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        if PLANS_KEY not in self.plans_manager.plans:
            raise RuntimeError(f"plans {self.plans_manager.plans_name} were not made by a MedalS planner; run "
                               f"nnUNetv2_plan_and_preprocess_medals -pl MedalSPlanner (or MedalSPlannerCPU)")
        self.initial_lr = 1e-4
        self.weight_decay = 0.01
        base = self.preprocessed_dataset_folder_base
        annotated = None
        if base is not None:
            ann_file = Path(base) / ANNOTATED_LABELS_FILE
            annotated = json.loads(ann_file.read_text()) if ann_file.is_file() else None
        self.text_dataset = parse_text_prompted_dataset(dataset_json, f"{base}/dataset.json", annotated)
        labels, regions_class_order = self.text_dataset.nnunet_region_labels()
        # one sigmoid channel per target (regions included): this dataset.json goes into the results folder, so
        # stock nnUNetv2_predict builds the same label handling
        self.dataset_json = {**dataset_json, "labels": labels, "regions_class_order": regions_class_order}
        self.label_manager = self.plans_manager.get_label_manager(self.dataset_json)
        self.target_lookup = TargetLookup(self.text_dataset.targets)
        self.rng = np.random.default_rng()
        self.vocabulary = None
        self.phrasing_embeddings = None
        self.target_extents = None

    def _plain_network(self):
        net = self.network.module if self.is_ddp else self.network
        return net._orig_mod if isinstance(net, OptimizedModule) else net

    def initialize(self):
        super().initialize()
        if self.side_wordings and self.dataset_json.get(SIDE_WORDINGS_KEY, True):
            # more ways to say a side than the dataset lists ("kidney on the left side", "left-sided kidney", …)
            self.text_dataset = with_side_wordings(self.text_dataset)
        reader = self.plans_manager.plans["image_reader_writer"]
        if not is_canonical(reader):
            self.print_to_log_file(f"note: these plans read images in their stored voxel order ({reader}); a model "
                                   f"trained on them learns sides of the array, not of the patient. Re-plan with "
                                   f"nnUNetv2_plan_and_preprocess_medals for canonical orientation.")
        self.vocabulary = ModelVocabulary.embed_targets(
            self.text_dataset.targets, self.text_dataset.modality, self.plans_manager.plans[PLANS_KEY]["text_encoder"],
            f"{self.plans_manager.plans_name}.json")
        self._measure_targets(is_canonical(reader))
        self.phrasing_embeddings = torch.from_numpy(self.vocabulary.phrasing_embeddings).to(self.device)
        net = self._plain_network()
        net.set_class_embeddings(torch.from_numpy(self.vocabulary.class_embeddings).to(self.device))
        net.set_text_normalization(self.phrasing_embeddings)
        net.vocabulary = self.vocabulary.to_state()
        self.target_extents = [self.vocabulary.target_extent_mm.get(t.name) for t in self.text_dataset.targets]
        self.print_to_log_file(f"text prompts: {len(self.vocabulary.phrasings)} phrasings of "
                               f"{len(self.text_dataset.targets)} targets, "
                               f"encoder {self.vocabulary.text_encoder['id']}")
        if self.device.type == "cpu" and keep_freed_memory():
            # after the text encoder's one-off work, before the data loaders fork their workers (which inherit
            # it; training.cpu_memory)
            self.print_to_log_file(f"CPU training: freed memory is kept for reuse (glibc malloc settings; "
                                   f"{KEEP_FREED_MEMORY_ENV}=0 turns this off)")

    def _measure_targets(self, canonical: bool) -> None:
        """One read of the training cases (at most 50): each target's median extent (dynamic resampling) and, with
        canonical plans, each sided target's left-right extent from the body's midline (the side guard)."""
        identifiers = self.dataset_class.get_identifiers(self.preprocessed_dataset_folder)
        dataset = self.dataset_class(self.preprocessed_dataset_folder, identifiers)
        targets, spacing = self.text_dataset.targets, self.configuration_manager.spacing
        sizes: dict[str, list] = {}
        sides = []
        for identifier in case_subset(identifiers):
            data, seg = dataset.load_case(identifier)[:2]
            seg = np.asarray(seg[0])
            for name, found in box_sizes_mm(seg, targets, spacing).items():
                sizes.setdefault(name, []).extend(found)
            if canonical:
                sides.append(side_extents_mm(np.asarray(data[0]), seg, targets,
                                             self.plans_manager.transpose_forward.index(2), spacing))
        self.vocabulary.target_extent_mm = median_extents_mm(sizes)
        self.vocabulary.target_side_mm = widest_side_extents(sides)

    def configure_optimizers(self):
        # fused AdamW on CPU and CUDA (one kernel for all parameters): the per-parameter loop's update up to float
        # rounding (~1e-8 after 20 steps) in a fraction of its time (CPU preset: 2 ms vs 14 ms per step on one
        # thread); other devices keep the default
        optimizer = torch.optim.AdamW(self.network.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                      fused=fused_adamw(self.device))
        return optimizer, CosineLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def load_checkpoint(self, filename_or_checkpoint: Union[dict, str]) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        # the optimizer's saved settings replace ours: a checkpoint from before fused AdamW would switch it off
        # (and on CUDA, with the grad scaler, fail at the first step), so the setting is restored after loading
        use_fused_adamw(self.optimizer, fused_adamw(self.device))

    def _build_loss(self):
        loss = PromptBCEDiceLoss()
        if self.enable_deep_supervision:
            n_outputs = len(self._get_deep_supervision_scales())
            loss = DeepSupervisionWrapper(loss, nnunet_deep_supervision_weights(
                n_outputs, ddp=self.is_ddp and not self._do_i_compile()))
        return loss

    def configure_rotation_dummyDA_mirroring_and_inital_patch_size(self):
        rotation, dummy_2d, initial_patch_size, _ = super().configure_rotation_dummyDA_mirroring_and_inital_patch_size()
        # Mirroring swaps left and right: it would teach "left kidney" on right kidneys. No mirroring in training
        # and none as test-time augmentation.
        self.inference_allowed_mirroring_axes = None
        return rotation, dummy_2d, initial_patch_size, None

    def get_training_transforms(self, patch_size, rotation_for_DA, deep_supervision_scales, mirror_axes,
                                do_dummy_2d_data_aug, use_mask_for_norm: List[bool] = None, is_cascaded: bool = False,
                                foreground_labels: Union[Tuple[int, ...], List[int]] = None, regions=None,
                                ignore_label: int = None):
        # nnU-Net's pipeline (a staticmethod there, called through self), with two changes: label maps stay label
        # maps (no region channels: per-query targets are built in the step), and short fields of view are
        # simulated before the deep-supervision downsampling
        transforms = nnUNetTrainer.get_training_transforms(patch_size, rotation_for_DA, deep_supervision_scales,
                                                           mirror_axes, do_dummy_2d_data_aug, use_mask_for_norm,
                                                           is_cascaded, foreground_labels, None, ignore_label)
        if self.short_fov_probability > 0:
            steps = transforms.transforms
            at = next((i for i, t in enumerate(steps) if isinstance(t, DownsampleSegForDSTransform)), len(steps))
            steps.insert(at, ShortFieldOfViewTransform(self.short_fov_probability))
        return transforms

    @staticmethod
    def get_validation_transforms(deep_supervision_scales, is_cascaded: bool = False, foreground_labels=None,
                                  regions=None, ignore_label: int = None):
        return nnUNetTrainer.get_validation_transforms(deep_supervision_scales, is_cascaded, foreground_labels, None,
                                                       ignore_label)

    @functools.lru_cache(maxsize=None)
    def _original_spacing(self, key: str) -> tuple:
        """A training case's original spacing in network axis order (from nnU-Net's preprocessing record)."""
        spacing = load_pickle(str(Path(self.preprocessed_dataset_folder) / f"{key}.pkl"))["spacing"]
        return tuple(float(spacing[i]) for i in self.plans_manager.transpose_forward)

    def _to_device(self, batch: dict):
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        segs = [t.to(self.device, non_blocking=True) for t in (target if isinstance(target, list) else [target])]
        return data, segs

    def _loss(self, output, targets: list, valid: torch.Tensor):
        if self.enable_deep_supervision:
            return self.loss(output, targets, [valid] * len(targets))
        return self.loss(output, targets[0], valid)

    def _autocast(self):
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def train_step(self, batch: dict) -> dict:
        data, segs = self._to_device(batch)
        if self.dynamic_zoom_probability > 0:
            zoom_to_smallest_target(data, segs, self.target_lookup.presence(segs[0]).cpu().numpy(),
                                    self.target_lookup, self.target_extents, self.configuration_manager.spacing,
                                    [self._original_spacing(k) for k in batch["keys"]], self.dynamic_alpha,
                                    self.dynamic_zoom_probability, self.rng)
        prompts = build_prompted_batch(
            segs, case_annotation_mask(self.text_dataset, batch["keys"]), self.target_lookup, self.vocabulary,
            self.phrasing_embeddings, self.max_queries, self.p_skip_fusion, self.prompt_misplacement, self.rng)
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            output = self.network(data, prompts.text, prompts.spatial, prompts.valid, fuse_prompts=prompts.fuse)
            loss = self._loss(output, prompts.targets, prompts.valid)
        # same update as nnUNetTrainer.train_step (AMP scaling, clipping at 12); that method cannot be reused
        # because it calls the network with the image only
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            self.grad_scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.grad_scaler.step(self.optimizer)
            self.grad_scaler.update()
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.network.parameters(), 12)
            self.optimizer.step()
        return {"loss": loss.detach().cpu().numpy()}

    def validation_step(self, batch: dict) -> dict:
        """Every trained target, text only (stored class embeddings), as stock prediction sees it.

        Returns nnU-Net's pseudo-Dice statistics per target; unannotated targets of a case do not count.
        """
        data, segs = self._to_device(batch)
        n_targets = len(self.text_dataset.targets)
        index = torch.arange(n_targets, device=self.device).expand(data.shape[0], -1)
        valid = torch.from_numpy(case_annotation_mask(self.text_dataset, batch["keys"])).to(self.device)
        targets = [self.target_lookup.masks(s, index) for s in segs]
        with self._autocast():
            output = self.network(data)
            loss = self._loss(output, targets, valid)
        logits = output[0] if self.enable_deep_supervision else output
        pred = logits > 0
        truth = targets[0] > 0.5
        weight = valid.float()
        spatial = tuple(range(2, pred.dim()))
        tp = ((pred & truth).sum(spatial) * weight).sum(0)
        fp = ((pred & ~truth).sum(spatial) * weight).sum(0)
        fn = ((~pred & truth).sum(spatial) * weight).sum(0)
        return {"loss": loss.detach().cpu().numpy(), "tp_hard": tp.detach().cpu().numpy(),
                "fp_hard": fp.detach().cpu().numpy(), "fn_hard": fn.detach().cpu().numpy()}


def _variant(name: str, doc: str, **settings):
    """A MedalSTrainer subclass that only changes attributes (nnU-Net's variant style). ``__init__`` keeps the
    explicit signature because nnU-Net records its named parameters for checkpoints."""

    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        MedalSTrainer.__init__(self, plans, configuration, fold, dataset_json, device)
        for key, value in settings.items():
            setattr(self, key, value)

    return type(name, (MedalSTrainer,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


MedalSTrainer_CPUDemo = _variant(
    "MedalSTrainer_CPUDemo", "750 iterations at lr 1e-3, 16 prompts/sample: the README demo with the CPU preset "
                             "(no training-time zoom or short fields of view, misplaced prompts at 0.5: its 750 "
                             "iterations are tuned and measured so).",
    num_epochs=30, num_iterations_per_epoch=25, num_val_iterations_per_epoch=4, initial_lr=1e-3, max_queries=16,
    dynamic_zoom_probability=0.0, side_wordings=False, short_fov_probability=0.0,
    prompt_misplacement=PromptMisplacement(probability=0.5))
MedalSTrainer_CPUDemo_100epochs = _variant(
    "MedalSTrainer_CPUDemo_100epochs", "The CPU demo settings for 2500 iterations: the models of the two-stage "
                                       "benchmark (a 1.5 mm fine model needs more than the demo's 750).",
    num_epochs=100, num_iterations_per_epoch=25, num_val_iterations_per_epoch=4, initial_lr=1e-3, max_queries=16,
    dynamic_zoom_probability=0.0, side_wordings=False, short_fov_probability=0.0)
MedalSTrainer_smoke = _variant("MedalSTrainer_smoke", "One epoch of 3 iterations: checks an installation end to end "
                                                      "(every sample zoomed, so that path runs too).",
                               num_epochs=1, num_iterations_per_epoch=3, num_val_iterations_per_epoch=2,
                               dynamic_zoom_probability=1.0)
MedalSTrainer_CPUBrain = _variant(
    "MedalSTrainer_CPUBrain", "1250 iterations at lr 1e-3, 32 prompts/sample: the brain-atlas job with the CPU preset.",
    num_epochs=50, num_iterations_per_epoch=25, num_val_iterations_per_epoch=4, initial_lr=1e-3, max_queries=32,
    side_wordings=False, short_fov_probability=0.0)
MedalSTrainer_2epochs = _variant("MedalSTrainer_2epochs", "MedalSTrainer for 2 epochs.", num_epochs=2)
MedalSTrainer_5epochs = _variant("MedalSTrainer_5epochs", "MedalSTrainer for 5 epochs.", num_epochs=5)
MedalSTrainer_10epochs = _variant("MedalSTrainer_10epochs", "MedalSTrainer for 10 epochs.", num_epochs=10)
MedalSTrainer_50epochs = _variant("MedalSTrainer_50epochs", "MedalSTrainer for 50 epochs.", num_epochs=50)
MedalSTrainer_100epochs = _variant("MedalSTrainer_100epochs", "MedalSTrainer for 100 epochs.", num_epochs=100)
MedalSTrainer_250epochs = _variant("MedalSTrainer_250epochs", "MedalSTrainer for 250 epochs.", num_epochs=250)
MedalSTrainer_500epochs = _variant("MedalSTrainer_500epochs", "MedalSTrainer for 500 epochs.", num_epochs=500)
MedalSTrainer_CPUCT = _variant(
    "MedalSTrainer_CPUCT", "2500 iterations at lr 1e-3, 32 prompts/sample: the real-CT job (ct-example, 3 x 6 x 6 mm) "
                           "with the CPU preset (a checkpoint every 10 epochs; 500 iterations left the validation "
                           "pseudo-Dice still rising).",
    num_epochs=100, num_iterations_per_epoch=25, num_val_iterations_per_epoch=4, initial_lr=1e-3, max_queries=32,
    side_wordings=False, save_every=10)
MedalSTrainer_CPUDemoEveryEpoch = _variant(
    "MedalSTrainer_CPUDemoEveryEpoch", "The CPU demo's 750 iterations in epochs of 10, validated and saved "
                                       "(checkpoint_latest.pth) after each: benchmarks/finetune.py compares runs at "
                                       "equal iterations from it.",
    num_epochs=75, num_iterations_per_epoch=10, num_val_iterations_per_epoch=4, initial_lr=1e-3, max_queries=16,
    dynamic_zoom_probability=0.0, side_wordings=False, save_every=1, short_fov_probability=0.0)
