"""Prompted prediction with a trained MedalS model, on top of nnU-Net's predictor: the model session.

nnU-Net's own machinery is reused for everything it already does: preprocessing (transpose, crop, resample,
normalise), the Gaussian sliding window, the fold ensemble, resampling back. What changes per case is the prompt
set: its text embeddings, its optional mask prompts (appended to the image as extra channels so nnU-Net's sliding
window cuts them into the same tiles) and the number of output channels. All N prompts of a tile go through one
backbone forward (``sequential=True`` runs one prompt per forward instead, for comparison). Export to the image
geometry and writing live in :mod:`.export`, reading files in :mod:`.case_files`, the folder loop in :mod:`.folders`.

Python API (one session object, a few verbs)::

    session = load_model(model_dir, folds=(0,), device=torch.device("cpu"))
    session.set_image(["case_0000.nii.gz"])
    session.add_text_prompt("left kidney", label=1)
    session.add_text_prompt("spleen", label=2, mask="spleen_hint.nii.gz")   # hybrid: a mask prompt
    result = session.predict()      # PromptedPrediction: label map, instances, probabilities, summary
    session.write(result, "out/case")
"""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.geometry import is_canonical, plans_reader_writer
from nnunetv2_medals.inference.case_files import read_case
from nnunetv2_medals.inference.export import (EXPORT_VOXEL_BUDGET, PromptedPrediction, export_prediction,
                                              prompt_label_manager, write_prediction)
from nnunetv2_medals.inference.mask_grid import mask_prompts_on_grid
from nnunetv2_medals.inference.self_refinement import complementary_prompt_prediction, self_refine
from nnunetv2_medals.laterality import MIDLINE_KEY, Midline, find_midline, guard_case
from nnunetv2_medals.network.medals_network import vocabulary_state
from nnunetv2_medals.postprocessing import is_multi_part, min_instance_volume_mm3
from nnunetv2_medals.paths import trainer_dir
from nnunetv2_medals.resampling import dynamic_spacing
from nnunetv2_medals.text_prompts.prompt_file import Prompt
from nnunetv2_medals.text_prompts.prompt_matching import PromptMatch
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary


class MedalSPredictor(nnUNetPredictor):
    """nnUNetPredictor for MedalS models with text and mask prompts (see the module docstring).

    Args beyond nnU-Net's: ``refinement_rounds`` (Algorithm 2 rounds after the first pass, 0 = off; its prompts,
    the listing's initial S_p: zero, the user's masks, or stage-1 masks after their complementary pass),
    ``sequential`` (one prompt per forward), ``max_prompts_per_forward`` (chunk prompts when memory demands; the
    backbone still runs once per tile), ``encoder`` (the text encoder's folder when the recorded one moved; same
    model), ``dynamic_alpha`` (paper §2.5: each case resampled so that its smallest prompted structure fills this
    fraction of the patch; ``None`` = the plans' spacing), ``raw_text`` (every prompt keeps its own embedding; by
    default a prompt that canonicalises to a trained target gets that target's, paper §2.7, ``prompt_matching``),
    ``side_guard`` (a prompt naming a side is not answered on the other side of the body, :mod:`..laterality`).
    """

    #: voxels per float32 copy nnU-Net's export may hold at once (:func:`.export.to_image_geometry`)
    export_voxel_budget = EXPORT_VOXEL_BUDGET
    #: mask prompts are appended as extra input channels
    accepts_mask_prompts = True
    #: "slab": label maps straight from the network grid, on ``device`` (:mod:`.slab_export`); "nnunet": old path
    export_method = "slab"

    def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, perform_everything_on_device: bool = True,
                 device: torch.device = torch.device("cuda"), verbose: bool = False, allow_tqdm: bool = False,
                 refinement_rounds: int = 0, sequential: bool = False, max_prompts_per_forward: int | None = None,
                 encoder: str | None = None, seed: int = 0, dynamic_alpha: float | None = None,
                 raw_text: bool = False, side_guard: bool = True):
        super().__init__(tile_step_size, use_gaussian, False, perform_everything_on_device, device, verbose, False,
                         allow_tqdm)
        self.dynamic_alpha = dynamic_alpha
        self.refinement_rounds = refinement_rounds
        self.sequential = sequential
        self.max_prompts_per_forward = max_prompts_per_forward
        self.encoder_override = encoder
        self.raw_text = raw_text
        self.side_guard = side_guard
        #: mask prompts are a prediction (two-stage: stage 1's masks), not a user's hint: each voxel then comes from
        #: the pass of Algorithm 2's two that did not see its own prompt
        self.prompts_from_prediction = False
        self._warned: set[str] = set()
        self.rng = np.random.default_rng(seed)
        #: what the checkpoint knows about words (read from the first fold's weights)
        self.vocabulary: ModelVocabulary | None = None
        self._text: torch.Tensor | None = None
        self._n_image_channels = 0
        self._image: tuple | None = None
        self._prompts: list[Prompt] = []

    # ----------------------------------------------------------------- model
    def initialize_from_trained_model_folder(self, model_training_output_dir: str, use_folds=None,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        # nnU-Net finds the trainer class (for build_network_architecture) through nnUNet_extTrainer; the Python
        # API should not depend on the user having exported it
        ours = str(trainer_dir())
        paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        if ours not in paths:
            os.environ["nnUNet_extTrainer"] = os.pathsep.join([*paths, ours])
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        self.model_folder, self.checkpoint_name = str(model_training_output_dir), checkpoint_name
        self.use_folds = use_folds
        state = vocabulary_state(self.list_of_parameters[0]) or {}
        if not state.get("targets"):
            raise MedalSInputError(model_training_output_dir, checkpoint_name,
                                   "holds no MedalS vocabulary; was it trained with MedalSTrainer?")
        self.vocabulary = ModelVocabulary.from_state(state)
        self.allowed_mirroring_axes = None  # mirroring swaps left and right
        reader = self.plans_manager.plans["image_reader_writer"]
        if not is_canonical(reader):
            print(f"note: {model_training_output_dir} was planned before canonical orientation (reader {reader}): it "
                  f"reads images in their stored voxel order, so left/right are only right for scans stored like "
                  f"its training data; re-plan with nnUNetv2_plan_and_preprocess_medals and retrain to fix that")

    def resolve_prompts(self, texts: Sequence[str]) -> tuple[torch.Tensor, list[PromptMatch]]:
        """(N, L) embeddings the network gets and how each prompt was matched to the model's vocabulary; a prompt
        far from everything the model knows is reported once per session."""
        embeddings, matches = self.vocabulary.resolve(texts, self.encoder_override, raw=self.raw_text)
        for m in matches:
            if m.warning and m.text not in self._warned:
                self._warned.add(m.text)
                print(f"warning: {m.warning}")
        return torch.from_numpy(embeddings), matches

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, L) embeddings: trained phrasings from the checkpoint, new ones with the model's recorded encoder."""
        return torch.from_numpy(self.vocabulary.embed(texts, self.encoder_override))

    def prompt_extents(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        """Typical extent (mm, per axis) of the trained structure each prompt means (the nearest trained target),
        ``None`` when nothing is near enough or the model has no recorded extents."""
        if not self.vocabulary.target_extent_mm:
            return [None] * len(texts)
        _, matches = self.vocabulary.resolve(texts, self.encoder_override, raw=self.raw_text)
        return [self.vocabulary.target_extent(m.meant_target()) for m in matches]

    def min_instance_volume_mm3(self) -> float:
        """Instances smaller than this (mm³) are dropped: derived from the smallest trained instance target's median
        extent when the checkpoint records it, else a constant (:func:`.postprocessing.min_instance_volume_mm3`)."""
        return min_instance_volume_mm3([self.vocabulary.target_extent(t.name) for t in self.vocabulary.targets
                                        if t.instance and self.vocabulary.target_extent(t.name) is not None])

    def case_spacing(self, image_spacing: Sequence[float], prompts: Sequence[Prompt]) -> list[float]:
        """The spacing a case is resampled to: the plans' unless dynamic resampling is on (paper §2.5, driven by the
        smallest prompted structure)."""
        target = [float(s) for s in self.configuration_manager.spacing]
        if self.dynamic_alpha is None or not prompts:
            return target
        extents = [e for e in self.prompt_extents([p.text for p in prompts]) if e is not None]
        if not extents:
            return target
        smallest = min(extents, key=lambda e: float(np.prod(e)))
        image_spacing = [float(image_spacing[i]) for i in self.plans_manager.transpose_forward]
        return list(dynamic_spacing(image_spacing, target, self.configuration_manager.patch_size, smallest,
                                    self.dynamic_alpha))

    @contextmanager
    def network_spacing(self, spacing: Sequence[float] | None):
        """Preprocess/export at ``spacing`` instead of the plans' (nnU-Net reads it from the configuration)."""
        config = self.configuration_manager.configuration
        original = config["spacing"]
        if spacing is not None:
            config["spacing"] = [float(s) for s in spacing]
        try:
            yield
        finally:
            config["spacing"] = original

    # ----------------------------------------------------------------- network calls
    @torch.inference_mode()
    def _internal_maybe_mirror_and_predict(self, x: torch.Tensor) -> torch.Tensor:
        image, prompts = x[:, :self._n_image_channels], x[:, self._n_image_channels:]
        has_prompts = prompts.shape[1] > 0 and bool(prompts.any())
        text = self._text.to(x.device)[None]
        net = self.network
        if self.sequential:
            outputs = []
            for i in range(text.shape[1]):
                sp = prompts[:, i:i + 1] if has_prompts else None
                outputs.append(net(image, text[:, i:i + 1], sp))
            return torch.cat(outputs, 1)
        union = (prompts.sum(1, keepdim=True) > 0).to(image.dtype) if has_prompts else torch.zeros_like(image[:, :1])
        skips, features = net.forward_features(image, union)
        chunk = self.max_prompts_per_forward or text.shape[1]
        while True:
            try:
                outputs = [net.forward_prompts(skips, features, text[:, s:s + chunk],
                                               prompts[:, s:s + chunk] if has_prompts else None)
                           for s in range(0, text.shape[1], chunk)]
                return torch.cat(outputs, 1)
            except torch.OutOfMemoryError:
                if chunk == 1:
                    raise
                # more prompts than fit: halve the chunk (the backbone features are reused) and remember it
                chunk = self.max_prompts_per_forward = max(1, chunk // 2)
                print(f"out of memory with all prompts in one forward; continuing with chunks of {chunk}")

    def _probabilities(self, data: torch.Tensor, spatial: torch.Tensor | None) -> torch.Tensor:
        """Sliding-window sigmoid probabilities (N, *S) on the network grid; ``spatial`` (N, *S) mask prompts."""
        n = self._text.shape[0]
        if spatial is None:
            spatial = torch.zeros((0, *data.shape[1:]), dtype=data.dtype)
        stacked = torch.cat((data, spatial.to(data.dtype)), 0)
        logits = self.predict_logits_from_preprocessed_data(stacked)
        assert logits.shape[0] == n
        return torch.sigmoid(logits.float())

    # ----------------------------------------------------------------- cases
    def predict_preprocessed(self, data: np.ndarray | torch.Tensor, properties: dict, prompts: Sequence[Prompt],
                             mask_prompts: torch.Tensor | None = None) -> PromptedPrediction:
        """Predict one preprocessed case (nnU-Net's network grid) and bring it back to the image geometry."""
        if not prompts:
            raise MedalSInputError("prompts", "prompts", "no prompts given")
        labels = [p.label for p in prompts]
        if len(set(labels)) != len(labels):
            raise MedalSInputError("prompts", "label", f"duplicate label values {labels}")
        data = torch.from_numpy(data) if isinstance(data, np.ndarray) else data
        if not torch.isfinite(data).all():
            raise MedalSInputError(properties.get("source", "image"), "image", "contains NaN or infinite values")
        text, matches = self.resolve_prompts([p.text for p in prompts])
        self._text = text.to(self.device)
        self._n_image_channels = data.shape[0]
        self.label_manager = prompt_label_manager(labels)
        if mask_prompts is not None and self.prompts_from_prediction:
            probs = complementary_prompt_prediction(lambda sp: self._probabilities(data, sp), mask_prompts,
                                                    rng=self.rng)
        else:
            probs = self._probabilities(data, mask_prompts)
        if self.refinement_rounds > 0:
            probs = self_refine(lambda sp: self._probabilities(data, sp), probs, self.refinement_rounds, rng=self.rng)
        guarded = [{} for _ in prompts]
        if self.guards_sides():
            m = self.vocabulary.matcher
            guarded = guard_case(probs, properties, [m.side_of(x) for x in matches], [m.structure_of(x) for x in matches],
                                 self.vocabulary.target_side_mm, self.plans_manager.transpose_forward)
        with self.network_spacing(properties.get("network_spacing")):
            return export_prediction(probs, properties, prompts, self.plans_manager, self.configuration_manager,
                                     self.export_voxel_budget, self._multi_part(prompts, matches),
                                     [{"match": m.to_json(), **g} for m, g in zip(matches, guarded)],
                                     min_instance_volume_mm3=self.min_instance_volume_mm3(),
                                     method=self.export_method, device=self.device)

    def guards_sides(self) -> bool:
        """Whether the side guard runs: on, canonical plans, and a checkpoint that records where sided targets lie."""
        return bool(self.side_guard and self.vocabulary is not None and self.vocabulary.target_side_mm
                    and is_canonical(self.plans_manager.plans["image_reader_writer"]))

    def _multi_part(self, prompts: Sequence[Prompt], matches: Sequence[PromptMatch]) -> list[bool]:
        """Per prompt: is its structure several parts (Algorithm 3 leaves it whole)? Judged from the matched target
        (a region, an instance target, its name), else the nearest trained target (cosine >= 0.6), else the prompt."""
        out = []
        for p, m in zip(prompts, matches):
            name = m.meant_target()
            target = self.vocabulary.target(name) if name else None
            out.append(is_multi_part(target.name if target else p.text, bool(target and target.is_region),
                                     p.instance or bool(target and target.instance)))
        return out

    def preprocess(self, image: np.ndarray, props: dict, prompts: Sequence[Prompt],
                   masks: Sequence[np.ndarray | None] | None = None):
        """nnU-Net's preprocessing of one image (C, *S) and its native-geometry mask prompts (one per prompt or
        None), at the case's spacing (:meth:`case_spacing`). The image is preprocessed once; each mask is brought
        onto the same grid (:func:`.mask_grid.mask_to_network_grid`)."""
        spacing = self.case_spacing(props["spacing"], prompts)
        dynamic = spacing != [float(s) for s in self.configuration_manager.spacing]
        midline = props.get(MIDLINE_KEY)    # a caller that crops the image gives the whole image's
        if MIDLINE_KEY not in props and self.guards_sides():
            midline = find_midline(image[0], props["spacing"], lr_axis=2).to_json()
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        with self.network_spacing(spacing):
            data, _, properties = preprocessor.run_case_npy(image.copy(), None, copy.deepcopy(props),
                                                            self.plans_manager, self.configuration_manager,
                                                            self.dataset_json)
            mask_prompts = None
            if masks is not None and any(m is not None for m in masks):
                mask_prompts = mask_prompts_on_grid(image, masks, properties, data.shape[1:], self.plans_manager,
                                                    self.configuration_manager)
        if dynamic:
            properties["network_spacing"] = spacing
        properties[MIDLINE_KEY] = midline
        return data, properties, mask_prompts

    def predict_image(self, image: np.ndarray, properties: dict, prompts: Sequence[Prompt],
                      masks: Sequence[np.ndarray | None] | None = None, source: str = "array") -> PromptedPrediction:
        """Predict an image (C, *S) with its reader ``properties`` (at least ``spacing``, array order) and optional
        native-geometry mask prompts (one per prompt, or None)."""
        data, properties, mask_prompts = self.preprocess(image, properties, prompts, masks)
        properties["source"] = source
        return self.predict_preprocessed(data, properties, prompts, mask_prompts)

    def predict_array(self, image: np.ndarray, spacing: Sequence[float], prompts: Sequence[Prompt],
                      source: str = "array", masks: Sequence[np.ndarray | None] | None = None,
                      midline: Midline | None = None) -> PromptedPrediction:
        """Predict an in-memory image: (*S) or (C, *S), ``spacing`` in the array's axis order (mm); ``masks``
        optionally holds one native-geometry mask prompt (or None) per prompt.

        The array must be in the orientation the model reads (canonical RAS for models planned by our planners:
        ``geometry.canonical_image(sitk_image)`` gives array and properties for :meth:`predict_image`, and
        ``geometry.stored_order_image`` turns a label map back); an array taken as stored, e.g. an LPS scan's
        ``sitk.GetArrayFromImage``, is mirrored left/right relative to what the model learnt. ``midline``: the side
        guard's midline when the array is a crop of a larger image (found on the array itself otherwise)."""
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 3 else image
        if image.size == 0 or not np.isfinite(image).all():
            raise MedalSInputError(source, "imgs", "is empty or contains NaN/infinite values")
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise MedalSInputError(source, "spacing", f"needs three positive values, got {list(spacing)}")
        if masks is not None and len(masks) != len(prompts):
            raise MedalSInputError(source, "masks", f"{len(masks)} mask prompts for {len(prompts)} prompts")
        props = {"spacing": [float(s) for s in spacing]}
        if midline is not None:
            props[MIDLINE_KEY] = midline.to_json()
        return self.predict_image(image, props, prompts, masks, source)

    def preprocess_case(self, image_files: Sequence[str], prompts: Sequence[Prompt]):
        """Read (:func:`.case_files.read_case`) and preprocess one case and its mask prompts."""
        image, props, masks = read_case(self, image_files, prompts)
        data, properties, mask_prompts = self.preprocess(image, props, prompts, masks)
        properties["source"] = str(image_files[0])
        return data, properties, mask_prompts

    # ----------------------------------------------------------------- session verbs
    def set_image(self, image_files: Sequence[str]) -> None:
        self._image = tuple(str(f) for f in image_files)
        self._prompts = []

    def add_text_prompt(self, text: str, label: int, instance: bool = False, mask: str | None = None) -> None:
        self._prompts.append(Prompt(text, int(label), instance, Path(mask) if mask else None))

    def predict(self) -> PromptedPrediction:
        if self._image is None:
            raise RuntimeError("call set_image() first")
        data, properties, masks = self.preprocess_case(self._image, self._prompts)
        return self.predict_preprocessed(data, properties, self._prompts, masks)

    def write(self, result: PromptedPrediction, output_file_truncated: str, save_probabilities: bool = False,
              overlay: bool = False) -> None:
        """Write a result with this model's reader/writer and file ending (:func:`.export.write_prediction`)."""
        write_prediction(result, output_file_truncated, plans_reader_writer(self.plans_manager),
                         self.dataset_json["file_ending"], save_probabilities, overlay)


def load_model(model_dir: str, folds=None, checkpoint: str = "checkpoint_final.pth", **kwargs) -> MedalSPredictor:
    """A ready :class:`MedalSPredictor` for a trained model folder (``…/Trainer__Plans__configuration``)."""
    predictor = MedalSPredictor(**kwargs)
    predictor.initialize_from_trained_model_folder(model_dir, folds, checkpoint)
    return predictor
