"""Prompted prediction with a trained MedalS model, on top of nnU-Net's predictor.

nnU-Net's own machinery is reused for everything it already does: reading images, preprocessing (transpose, crop,
resample, normalise), the Gaussian sliding window, the fold ensemble, resampling back and writing. What changes
per case is the prompt set: its text embeddings, its optional mask prompts (appended to the image as extra
channels so nnU-Net's sliding window cuts them into the same tiles) and the number of output channels. All N
prompts of a tile go through one backbone forward (``sequential=True`` runs one prompt per forward instead, for
comparison).

Python API (one session object, a few verbs)::

    session = MedalSPredictor(device=torch.device("cpu"))
    session.initialize_from_trained_model_folder(model_dir, use_folds=(0,))
    session.set_image(["case_0000.nii.gz"])
    session.add_text_prompt("left kidney", label=1)
    session.add_text_prompt("spleen", label=2, mask="spleen_hint.nii.gz")   # hybrid: a mask prompt
    result = session.predict()      # PromptedPrediction: label map, instances, probabilities, summary
"""
from __future__ import annotations

import copy
import os
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from nnunetv2.inference.export_prediction import convert_predicted_logits_to_segmentation_with_correct_shape
from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
from nnunetv2.utilities.label_handling.label_handling import LabelManager

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import atomic_write_json
from nnunetv2_medals.postprocessing import postprocess_label_map
from nnunetv2_medals.prompts import self_refine
from nnunetv2_medals.resampling import dynamic_spacing
from nnunetv2_medals.text_prompts.encoder import TextEncoder
from nnunetv2_medals.text_prompts.prompt_file import Prompt


@dataclass
class PromptedPrediction:
    """One case's result, in the input image's geometry.

    ``label_map`` (*S) holds the prompts' label values; ``instances[label]`` numbers the components of instance
    prompts; ``probabilities`` (N, *S) follow ``prompts``; ``summary`` is what the per-case JSON holds.
    """

    label_map: np.ndarray
    instances: dict
    probabilities: np.ndarray
    prompts: tuple
    properties: dict
    summary: dict = field(default_factory=dict)


def prompt_label_manager(labels: Sequence[int]) -> LabelManager:
    """nnU-Net label handling for one prompt set: one sigmoid channel per prompt (region mode)."""
    label_dict = {"background": 0}
    for i, label in enumerate(labels):
        label_dict[f"prompt_{i}"] = [int(label), int(label)]  # two entries: nnU-Net's switch to region mode
    return LabelManager(label_dict, [int(v) for v in labels])


class MedalSPredictor(nnUNetPredictor):
    """nnUNetPredictor for MedalS models with text and mask prompts (see the module docstring).

    Args beyond nnU-Net's: ``refinement_rounds`` (Algorithm 2 rounds in text-only mode, 0 = off),
    ``sequential`` (one prompt per forward), ``max_prompts_per_forward`` (chunk prompts when memory demands; the
    backbone still runs once per tile), ``encoder`` (folder of the text encoder when the recorded one moved; it
    must be the same model), ``dynamic_alpha`` (dynamic resampling, paper §2.5: each case is resampled for its
    smallest prompted structure so that it fills this fraction of the patch; ``None`` = the plans' spacing).
    """

    def __init__(self, tile_step_size: float = 0.5, use_gaussian: bool = True, perform_everything_on_device: bool = True,
                 device: torch.device = torch.device("cuda"), verbose: bool = False, allow_tqdm: bool = False,
                 refinement_rounds: int = 0, sequential: bool = False, max_prompts_per_forward: int | None = None,
                 encoder: str | None = None, seed: int = 0, dynamic_alpha: float | None = None):
        super().__init__(tile_step_size, use_gaussian, False, perform_everything_on_device, device, verbose, False,
                         allow_tqdm)
        self.dynamic_alpha = dynamic_alpha
        self.refinement_rounds = refinement_rounds
        self.sequential = sequential
        self.max_prompts_per_forward = max_prompts_per_forward
        self.encoder_override = encoder
        self.rng = np.random.default_rng(seed)
        self._encoder: TextEncoder | None = None
        self._text: torch.Tensor | None = None
        self._n_image_channels = 0
        self._image: tuple | None = None
        self._prompts: list[Prompt] = []

    # ----------------------------------------------------------------- model
    @property
    def vocabulary(self) -> dict:
        return self.list_of_parameters[0].get("_extra_state") or {}

    def initialize_from_trained_model_folder(self, model_training_output_dir: str, use_folds=None,
                                             checkpoint_name: str = "checkpoint_final.pth"):
        # nnU-Net finds the trainer class (for build_network_architecture) through nnUNet_extTrainer; the Python
        # API should not depend on the user having exported it
        from nnunetv2_medals.cli import trainer_dir

        ours = str(trainer_dir())
        paths = [p for p in os.environ.get("nnUNet_extTrainer", "").split(os.pathsep) if p]
        if ours not in paths:
            os.environ["nnUNet_extTrainer"] = os.pathsep.join([*paths, ours])
        super().initialize_from_trained_model_folder(model_training_output_dir, use_folds, checkpoint_name)
        self.model_folder, self.checkpoint_name = str(model_training_output_dir), checkpoint_name
        self.use_folds = use_folds
        if not self.vocabulary.get("targets"):
            raise MedalSInputError(model_training_output_dir, checkpoint_name,
                                   "holds no MedalS vocabulary; was it trained with MedalSTrainer?")
        self.allowed_mirroring_axes = None  # mirroring swaps left and right

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        """(N, L) embeddings: trained phrasings from the checkpoint, new ones with the model's recorded encoder."""
        vocab = self.vocabulary
        known = {p: i for i, p in enumerate(vocab["phrasings"])}
        out = np.zeros((len(texts), vocab["phrasing_embeddings"].shape[1]), np.float32)
        missing = [t for t in texts if t not in known]
        if missing:
            if self._encoder is None:
                record = vocab["text_encoder"]
                self._encoder = TextEncoder(self.encoder_override or record.get("path"), device="cpu")
                if self._encoder.id != record["id"]:
                    raise MedalSInputError(self._encoder.encoder_dir, "--encoder",
                                           f"is text encoder {self._encoder.id!r} but the model was trained with "
                                           f"{record['id']!r}; give that encoder's folder")
            new = dict(zip(missing, self._encoder.encode(missing)))
        for i, t in enumerate(texts):
            out[i] = vocab["phrasing_embeddings"][known[t]] if t in known else new[t]
        return torch.from_numpy(out)

    def prompt_extents(self, texts: Sequence[str], min_similarity: float = 0.6) -> list[np.ndarray | None]:
        """Typical extent (mm, per axis) of the trained structure each prompt means: the target of the nearest
        trained phrasing (cosine of the text embeddings), ``None`` when nothing is near enough or the model has no
        recorded extents."""
        vocab = self.vocabulary
        extents = vocab.get("target_extent_mm") or {}
        if not extents:
            return [None] * len(texts)
        target_of = {p: t["name"] for t in vocab["targets"] for p in t["phrasings"]}
        names = [target_of[p] for p in vocab["phrasings"]]
        known = vocab["phrasing_embeddings"] / np.linalg.norm(vocab["phrasing_embeddings"], axis=1, keepdims=True)
        query = self.embed(texts).numpy()
        query = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
        cos = query @ known.T
        out = []
        for row in cos:
            best = int(np.argmax(row))
            name = names[best]
            out.append(np.asarray(extents[name], float) if row[best] >= min_similarity and name in extents else None)
        return out

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
        self._text = self.embed([p.text for p in prompts]).to(self.device)
        self._n_image_channels = data.shape[0]
        self.label_manager = prompt_label_manager(labels)
        probs = self._probabilities(data, mask_prompts)
        if mask_prompts is None and self.refinement_rounds > 0:
            probs = self_refine(lambda sp: self._probabilities(data, sp), probs, self.refinement_rounds, rng=self.rng)
        with self.network_spacing(properties.get("network_spacing")):
            probabilities, label_map = self._to_image_geometry(probs, properties, labels)
        label_map, instances = postprocess_label_map(label_map, probabilities, labels, [p.instance for p in prompts])
        spacing = properties["spacing"]
        voxel_ml = float(np.prod(spacing)) / 1000.0
        summary = {"prompts": [
            {"text": p.text, "label": p.label, "instance": p.instance, "mask": str(p.mask) if p.mask else None,
             "voxels": int((label_map == p.label).sum()), "volume_ml": round(float((label_map == p.label).sum())
                                                                              * voxel_ml, 3),
             **({"instances": int(instances[p.label].max())} if p.instance else {})} for p in prompts],
            "spacing": [float(s) for s in spacing],
            **({"network_spacing": properties["network_spacing"]} if properties.get("network_spacing") else {})}
        return PromptedPrediction(label_map, instances, probabilities, tuple(prompts), properties, summary)

    # voxels per float32 copy that the export may hold at once (nnU-Net's export keeps ~3 copies of what it is given)
    export_voxel_budget = 2 ** 26

    def _to_image_geometry(self, probs: torch.Tensor, properties: dict, labels: Sequence[int]):
        """Network-grid probabilities (N, *grid) -> image-geometry probabilities (N, *S) float16 and the label map.

        nnU-Net's export (resampling with the plans' function, un-cropping, un-transposing) runs on a few prompts at
        a time: given all N at once it holds about three float32 copies of N image-sized volumes (24 prompts of a
        512x512x300 CT: ~22 GB). The label map (argmax where >= 0.5, as :func:`probabilities_to_label_map`) is
        updated chunk by chunk in float32; the stored probabilities are float16 (Algorithm 3 and
        ``--save_probabilities`` need no more).
        """
        n = probs.shape[0]
        logits = torch.logit(probs.clamp(1e-6, 1 - 1e-6))
        image_voxels = int(np.prod(properties["shape_before_cropping"]))
        chunk = max(1, min(n, self.export_voxel_budget // max(image_voxels, 1)))
        out = best = best_index = None
        for start in range(0, n, chunk):
            part = slice(start, min(start + chunk, n))
            _, p = convert_predicted_logits_to_segmentation_with_correct_shape(
                logits[part], self.plans_manager, self.configuration_manager, prompt_label_manager(labels[part]),
                properties, return_probabilities=True, num_threads_torch=torch.get_num_threads())
            p = torch.from_numpy(p) if isinstance(p, np.ndarray) else p  # a transposed view: torch keeps strides
            if out is None:
                out = torch.empty((n, *p.shape[1:]), dtype=torch.float16)
                best = torch.full(p.shape[1:], -1.0)
                best_index = torch.zeros(p.shape[1:], dtype=torch.int64 if n > 255 else torch.uint8)
            for j in range(p.shape[0]):
                # four passes over the image per prompt (store, compare, index, running max); on ties the earlier
                # prompt wins, as a global argmax would
                channel = p[j]
                out[start + j] = channel
                better = channel > best
                best_index.masked_fill_(better, start + j)
                torch.maximum(best, channel, out=best)
            del p
        lookup = torch.as_tensor(np.asarray(labels, dtype=np.int64))
        label_map = torch.where(best >= 0.5, lookup[best_index.long()], 0).numpy().astype(np.uint16)
        return out.numpy(), label_map

    def preprocess_case(self, image_files: Sequence[str], prompts: Sequence[Prompt]):
        """Read and preprocess one case and its mask prompts (all in the image's native geometry)."""
        rw = self.plans_manager.image_reader_writer_class()
        for f in image_files:
            if not Path(f).is_file():
                raise MedalSInputError(f, "image", "file not found")
        image, props = rw.read_images(list(image_files))
        if image.size == 0 or not np.isfinite(image).all():
            raise MedalSInputError(image_files[0], "image", "is empty or contains NaN/infinite values")
        masks = []
        for i, p in enumerate(prompts):
            if p.mask is None:
                masks.append(None)
                continue
            mask, mask_props = rw.read_seg(str(p.mask))
            if mask.shape[1:] != image.shape[1:]:
                raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"shape {mask.shape[1:]} does not match "
                                                                    f"the image's {image.shape[1:]}")
            if not np.allclose(mask_props["spacing"], props["spacing"], rtol=1e-3):
                raise MedalSInputError(p.mask, f"prompts[{i}].mask", f"spacing {mask_props['spacing']} does "
                                                                    f"not match the image's {props['spacing']}")
            masks.append(mask[0] > 0)
        data, properties, mask_prompts = self._preprocess(image, props, prompts, masks)
        properties["source"] = str(image_files[0])
        return data, properties, mask_prompts

    def _preprocess(self, image: np.ndarray, props: dict, prompts: Sequence[Prompt],
                    masks: Sequence[np.ndarray | None] | None = None):
        """nnU-Net's preprocessing of one image (C, *S) and its native-geometry mask prompts (one per prompt or
        None), at the case's spacing (:meth:`case_spacing`)."""
        spacing = self.case_spacing(props["spacing"], prompts)
        dynamic = spacing != [float(s) for s in self.configuration_manager.spacing]
        preprocessor = self.configuration_manager.preprocessor_class(verbose=False)
        with self.network_spacing(spacing):
            data, _, properties = preprocessor.run_case_npy(image.copy(), None, copy.deepcopy(props),
                                                            self.plans_manager, self.configuration_manager,
                                                            self.dataset_json)
            mask_prompts = None
            if masks is not None and any(m is not None for m in masks):
                mask_prompts = torch.zeros((len(prompts), *data.shape[1:]), dtype=torch.float32)
                for i, m in enumerate(masks):
                    if m is None:
                        continue
                    _, seg, _ = preprocessor.run_case_npy(image.copy(), m[None].astype(np.int8), copy.deepcopy(props),
                                                          self.plans_manager, self.configuration_manager,
                                                          self.dataset_json)
                    mask_prompts[i] = torch.from_numpy((seg[0] > 0).astype(np.float32))
        if dynamic:
            properties["network_spacing"] = spacing
        return data, properties, mask_prompts

    def predict_array(self, image: np.ndarray, spacing: Sequence[float], prompts: Sequence[Prompt],
                      source: str = "array", masks: Sequence[np.ndarray | None] | None = None) -> PromptedPrediction:
        """Predict an in-memory image: (*S) or (C, *S), ``spacing`` in the array's axis order (mm); ``masks``
        optionally holds one native-geometry mask prompt (or None) per prompt."""
        image = np.asarray(image, dtype=np.float32)
        image = image[None] if image.ndim == 3 else image
        if image.size == 0 or not np.isfinite(image).all():
            raise MedalSInputError(source, "imgs", "is empty or contains NaN/infinite values")
        if len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise MedalSInputError(source, "spacing", f"needs three positive values, got {list(spacing)}")
        if masks is not None and len(masks) != len(prompts):
            raise MedalSInputError(source, "masks", f"{len(masks)} mask prompts for {len(prompts)} prompts")
        data, properties, mask_prompts = self._preprocess(image, {"spacing": [float(s) for s in spacing]}, prompts,
                                                          masks)
        properties["source"] = source
        return self.predict_preprocessed(data, properties, prompts, mask_prompts)

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
        """Write the label map (nnU-Net's writer), instance maps, the summary JSON, optionally the probabilities
        and a PNG overlay (three orthogonal slices through each found structure).

        Every file goes through a temporary name and a rename, so a crash leaves no half-written output.
        """
        rw = self.plans_manager.image_reader_writer_class()
        ending = self.dataset_json["file_ending"]
        out = Path(output_file_truncated)
        out.parent.mkdir(parents=True, exist_ok=True)

        def write_seg(array, target: Path):
            tmp = target.with_name(f".tmp_{os.getpid()}_{target.name}")
            rw.write_seg(array, str(tmp), result.properties)
            os.replace(tmp, target)

        write_seg(result.label_map, out.with_name(out.name + ending))
        for label, numbered in result.instances.items():
            write_seg(numbered, out.with_name(f"{out.name}_instances_label{label}{ending}"))
        if save_probabilities:
            tmp = out.with_name(f".tmp_{out.name}_probabilities.npz")
            np.savez_compressed(tmp, probabilities=result.probabilities.astype(np.float16),
                                labels=np.array([p.label for p in result.prompts]))
            os.replace(tmp, out.with_name(out.name + "_probabilities.npz"))
        if overlay:
            from nnunetv2_medals.overlay import write_overlay_png

            image, props = rw.read_images([result.properties["source"]])
            write_overlay_png(image[0], result.label_map, {p.label: p.text for p in result.prompts},
                              out.with_name(out.name + "_overlay.png"), props["spacing"])
        atomic_write_json(out.with_name(out.name + ".json"), result.summary)


def load_model(model_dir: str, folds=None, checkpoint: str = "checkpoint_final.pth", **kwargs) -> MedalSPredictor:
    """A ready :class:`MedalSPredictor` for a trained model folder (``…/Trainer__Plans__configuration``)."""
    predictor = MedalSPredictor(**kwargs)
    predictor.initialize_from_trained_model_folder(model_dir, folds, checkpoint)
    return predictor


def coarse_model_folder(fine_model_folder: str, coarse_configuration: str) -> str:
    """The folder of another configuration of the same dataset, trainer and plans (``…/T__P__3d_lowres``)."""
    folder = Path(fine_model_folder)
    trainer, plans, _ = folder.name.split("__")
    coarse = folder.with_name(f"{trainer}__{plans}__{coarse_configuration}")
    if not coarse.is_dir():
        raise MedalSInputError(coarse, "--two_stage", f"no trained {coarse_configuration!r} model next to "
                                                      f"{folder.name}; train it with nnUNetv2_train D "
                                                      f"{coarse_configuration} F -tr {trainer} -p {plans}")
    return str(coarse)


def predict_prompted_files(predictor: MedalSPredictor, prompt_file, source_folder: str, output_folder: str,
                           save_probabilities: bool = False, overwrite: bool = True, num_parts: int = 1,
                           part_id: int = 0, overlay: bool = False, coarse: MedalSPredictor | None = None,
                           roi_scale: float = 1.25) -> list[str]:
    """Predict every case of ``source_folder`` (nnU-Net's ``CASE_XXXX.ext`` naming) with its prompts.

    Cases are split over ``num_parts`` machines as nnU-Net does (``part_id::num_parts``). With a ``coarse``
    predictor every case runs two-stage (paper §2.6, ``predictor`` is the fine stage). Returns the written
    label-map paths.
    """
    from nnunetv2.utilities.utils import create_lists_from_splitted_dataset_folder

    ending = predictor.dataset_json["file_ending"]
    every_case = {os.path.basename(files[0])[:-(len(ending) + 5)]
                  for files in create_lists_from_splitted_dataset_folder(source_folder, ending)}
    unknown = sorted(set(prompt_file.cases) - every_case)
    if unknown:
        raise MedalSInputError(prompt_file.source, f"cases.{unknown[0]}",
                               f"no such case in {source_folder} (cases there: {', '.join(sorted(every_case))})")
    if coarse is not None and any(p.mask is not None for ps in [prompt_file.prompts, *prompt_file.cases.values()]
                                  for p in ps):
        raise MedalSInputError(prompt_file.source, "mask", "two-stage prediction makes its own spatial prompts from "
                                                           "stage 1; drop --two_stage or the mask prompts")
    lists, outputs, _ = predictor._manage_input_and_output_lists(source_folder, output_folder, None, overwrite,
                                                                 part_id, num_parts, save_probabilities)
    written = []
    for files, out in zip(lists, outputs):
        case = os.path.basename(out)
        prompts = prompt_file.prompts_for(case)
        if coarse is not None:
            from nnunetv2_medals.inference.two_stage import predict_two_stage, read_image

            image, props = read_image(predictor, files)
            result = predict_two_stage(coarse, predictor, image, props, prompts, roi_scale, source=str(files[0]))
        else:
            data, properties, masks = predictor.preprocess_case(files, prompts)
            result = predictor.predict_preprocessed(data, properties, prompts, masks)
        predictor.write(result, out, save_probabilities, overlay)
        found = ", ".join(f"{p['text']}={p['volume_ml']} mL" for p in result.summary["prompts"])
        print(f"{case}: {found}")
        written.append(out + ending)
    return written
