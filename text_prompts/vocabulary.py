"""What a trained MedalS model knows about words: :class:`ModelVocabulary`.

The trainer builds it once (every phrasing of every target embedded when training starts, never inside a step,
plus each target's typical size) and stores it with the network weights as plain data (``to_state``: the module
extra state of ``MedalSNetwork``); the predictor reads it back (``from_state``) to embed prompts and to find the
trained target a prompt means. Typed access over a plain dict, as nnU-Net's ``ConfigurationManager`` over the plans.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np
import torch

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.network.medals_network import vocabulary_state
from nnunetv2_medals.text_prompts.encoder import DEFAULT_ENCODER, TextEncoder
from nnunetv2_medals.text_prompts.prompt_matching import PromptMatch, VocabularyMatcher


@dataclass(frozen=True)
class VocabularyTarget:
    """One trained target: a label, or a region (a union of labels), and its phrasings."""

    name: str
    label_values: tuple[int, ...]
    instance: bool
    is_region: bool
    phrasings: tuple[str, ...]


@dataclass
class ModelVocabulary:
    """Targets, phrasings and their embeddings of a trained model, and the encoder that made them.

    ``phrasing_embeddings`` (P, L) follow ``phrasings`` (every phrasing of every target, once, in target order);
    ``text_encoder`` is the plans' record (``id``, ``dim``, ``path``); ``target_extent_mm`` maps a target name to
    its median extent (mm, per network axis) over the training cases (dynamic resampling, paper §2.5);
    ``target_side_mm`` maps each sided target to its [leftmost, rightmost] voxel relative to the midline (mm, + =
    the patient's right) over the training cases (the side guard, :mod:`nnunetv2_medals.laterality`).
    """

    targets: tuple[VocabularyTarget, ...]
    phrasings: list[str]
    phrasing_embeddings: np.ndarray
    text_encoder: dict
    modality: str | None = None
    target_extent_mm: dict[str, list[float]] = field(default_factory=dict)
    target_side_mm: dict[str, list[float]] = field(default_factory=dict)

    # ----------------------------------------------------------------- building and storing
    @classmethod
    def embed_targets(cls, targets: Sequence, modality: str | None, encoder_record: Mapping,
                      plans_file: str = "plans", device: str = "cpu") -> "ModelVocabulary":
        """Embed every phrasing of ``targets`` (objects with ``name``, ``label_values``, ``instance``,
        ``is_region``, ``prompts``: a dataset's ``PromptTarget``) with the encoder recorded in the plans; refuse a
        different encoder."""
        encoder = TextEncoder(encoder_record.get("path"), device=device)
        if encoder.id != encoder_record.get("id"):
            raise MedalSInputError(plans_file, "medals.text_encoder.id",
                                   f"the plans were made with text encoder {encoder_record.get('id')!r} but "
                                   f"{encoder.encoder_dir} is {encoder.id!r}; re-plan or restore that encoder")
        phrasings = list(dict.fromkeys(p for t in targets for p in t.prompts))
        return cls(tuple(VocabularyTarget(t.name, tuple(t.label_values), t.instance, t.is_region, tuple(t.prompts))
                         for t in targets), phrasings, encoder.encode(phrasings), dict(encoder_record), modality)

    def to_state(self) -> dict:
        """Plain-data record stored with the network weights (see ``network.medals_network.TrainedTargets``)."""
        return {
            "text_encoder": dict(self.text_encoder),
            "modality": self.modality,
            "targets": [{"name": t.name, "label_values": list(t.label_values), "instance": t.instance,
                         "is_region": t.is_region, "phrasings": list(t.phrasings)} for t in self.targets],
            "phrasings": list(self.phrasings),
            "phrasing_embeddings": self.phrasing_embeddings.astype(np.float32),
            "target_extent_mm": dict(self.target_extent_mm),
            "target_side_mm": dict(self.target_side_mm),
        }

    @classmethod
    def from_state(cls, state: Mapping) -> "ModelVocabulary":
        """The vocabulary of a checkpoint's record (``target_extent_mm``, ``target_side_mm`` may be missing in older
        ones)."""
        targets = tuple(VocabularyTarget(t["name"], tuple(t["label_values"]), bool(t["instance"]),
                                         bool(t["is_region"]), tuple(t["phrasings"])) for t in state["targets"])
        return cls(targets, list(state["phrasings"]), np.asarray(state["phrasing_embeddings"]),
                   dict(state["text_encoder"]), state.get("modality"), dict(state.get("target_extent_mm") or {}),
                   dict(state.get("target_side_mm") or {}))

    @classmethod
    def from_checkpoint(cls, path) -> "ModelVocabulary":
        """The vocabulary stored in an nnU-Net checkpoint of a MedalSTrainer model."""
        state = vocabulary_state(torch.load(path, map_location="cpu", weights_only=False)["network_weights"])
        if not state or not state.get("targets"):
            raise MedalSInputError(path, "network_weights", "holds no MedalS vocabulary; was it trained with "
                                                            "MedalSTrainer?")
        return cls.from_state(state)

    # ----------------------------------------------------------------- training views
    @functools.cached_property
    def target_phrasings(self) -> list[list[int]]:
        """Per target, the ids (rows of ``phrasing_embeddings``) of its phrasings."""
        index = {p: i for i, p in enumerate(self.phrasings)}
        return [[index[p] for p in t.phrasings] for t in self.targets]

    @property
    def class_embeddings(self) -> np.ndarray:
        """(T, L): each target's first phrasing, its stored class embedding (what stock ``nnUNetv2_predict``
        segments with)."""
        return self.phrasing_embeddings[[ids[0] for ids in self.target_phrasings]]

    @functools.cached_property
    def target_similarity(self) -> np.ndarray:
        """(T, T) cosine similarity of the targets' mean phrasing embeddings (for hard-negative sampling)."""
        means = np.stack([self.phrasing_embeddings[ids].mean(0) for ids in self.target_phrasings])
        means /= np.linalg.norm(means, axis=1, keepdims=True).clip(1e-12)
        return means @ means.T

    # ----------------------------------------------------------------- prediction views
    def embed(self, texts: Sequence[str], encoder_override: str | None = None) -> np.ndarray:
        """(N, L) float32 embeddings: trained phrasings from the stored embeddings, new ones with the recorded
        encoder (``encoder_override``: its folder when the recorded one moved; it must be the same model)."""
        known = {p: i for i, p in enumerate(self.phrasings)}
        out = np.zeros((len(texts), self.phrasing_embeddings.shape[1]), np.float32)
        missing = [t for t in texts if t not in known]
        if missing:
            new = dict(zip(missing, self._text_encoder(encoder_override).encode(missing)))
        for i, t in enumerate(texts):
            out[i] = self.phrasing_embeddings[known[t]] if t in known else new[t]
        return out

    def _text_encoder(self, encoder_override: str | None) -> TextEncoder:
        """The recorded encoder, loaded once; another model in its place is refused."""
        encoder = self.__dict__.get("_encoder")
        if encoder is None:
            recorded = self.text_encoder.get("path")
            try:
                encoder = TextEncoder(encoder_override or recorded, device="cpu")
            except MedalSInputError as e:
                if encoder_override or recorded in (None, DEFAULT_ENCODER):
                    raise
                # a model from another machine: its encoder folder stayed there
                raise MedalSInputError(recorded, "text_encoder.path", f"the model's text encoder "
                                                                      f"{self.text_encoder['id']!r} was recorded "
                                                                      f"here, which is not usable on this machine "
                                                                      f"({e.reason}); copy that encoder folder here "
                                                                      f"and pass it with --encoder DIR") from None
            if encoder.id != self.text_encoder["id"]:
                raise MedalSInputError(encoder.encoder_dir, "--encoder",
                                       f"is text encoder {encoder.id!r} but the model was trained with "
                                       f"{self.text_encoder['id']!r}; give that encoder's folder")
            self._encoder = encoder
        return encoder

    # ----------------------------------------------------------------- free text -> trained targets (paper §2.7)
    @functools.cached_property
    def matcher(self) -> VocabularyMatcher:
        """Canonical matching of free text against this vocabulary (:mod:`.prompt_matching`)."""
        return VocabularyMatcher([(t.name, t.phrasings) for t in self.targets], self.phrasings,
                                 self.phrasing_embeddings, self.modality, [t.label_values for t in self.targets])

    def resolve(self, texts: Sequence[str], encoder_override: str | None = None,
                raw: bool = False) -> tuple[np.ndarray, list[PromptMatch]]:
        """(N, L) embeddings the network gets for ``texts`` and how each was read: a prompt matched to a trained
        target (canonically, or side corrected) gets that target's class embedding, any other its own embedding
        (``raw=True``: every prompt its own)."""
        own = self.embed(texts, encoder_override)
        # the encoder ran for every prompt that is no trained phrasing: its vocabulary tells misspelt words
        encoder = self.__dict__.get("_encoder")
        matches = self.matcher.match(texts, own, raw=raw, encoder_words=encoder.whole_words if encoder else None)
        names = [t.name for t in self.targets]
        classes = self.class_embeddings
        out = own.copy()
        for i, m in enumerate(matches):
            if m.target is not None:
                out[i] = classes[names.index(m.target)]
        return out, matches

    def target(self, name: str) -> VocabularyTarget:
        for t in self.targets:
            if t.name == name:
                return t
        raise KeyError(name)

    def target_extent(self, name: str | None) -> np.ndarray | None:
        """Typical extent (mm, per network axis) of target ``name``, ``None`` when not recorded."""
        extent = self.target_extent_mm.get(name) if name is not None else None
        return None if extent is None else np.asarray(extent, float)
