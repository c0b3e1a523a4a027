"""One training batch's prompts, targets and spatial prompts: what MedalSTrainer.train_step hands the network
(shared with ``benchmarks/train_step.py``, so the benchmark times the trainer's own work)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch

from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary
from nnunetv2_medals.training.prompt_perturbation import (PromptMisplacement, draw_exact_samples,
                                                          draw_misplaced_samples, draw_whole_samples,
                                                          misplace_prompts)
from nnunetv2_medals.training.prompt_sampling import TargetLookup, sample_query_batch
from nnunetv2_medals.training.spatial_prompts import simulate_spatial_prompts


@dataclass
class PromptedBatch:
    """The network's prompt inputs and the loss's targets for one batch.

    ``text`` (B, N, L) phrasing embeddings; ``targets`` per-query binary masks (B, N, *S_k) at every
    deep-supervision scale; ``spatial`` (B, N, *S) simulated mask prompts, None in steps without prompt fusion;
    ``valid`` (B, N) bool (False = padding); ``fuse`` whether the step uses the prompt fusion.
    """

    text: torch.Tensor
    targets: list[torch.Tensor]
    spatial: torch.Tensor | None
    valid: torch.Tensor
    fuse: bool


def build_prompted_batch(segs: Sequence[torch.Tensor], annotated: np.ndarray, lookup: TargetLookup,
                         vocabulary: ModelVocabulary, phrasing_embeddings: torch.Tensor, max_queries: int,
                         p_skip_fusion: float, misplacement: PromptMisplacement, rng: np.random.Generator,
                         mark: Callable[[str], None] | None = None) -> PromptedBatch:
    """Prompt sampling (DESIGN §5), per-query targets, and for a share ``1 - p_skip_fusion`` of the steps the
    spatial prompts: misplaced masks (:func:`misplace_prompts`) degraded by Algorithm 1
    (:func:`simulate_spatial_prompts`), except for a share ``misplacement.whole`` of the misplaced samples and a
    share ``misplacement.exact`` of the others, whose masks are handed over complete.

    ``segs``: label maps (B, 1, *S_k) per deep-supervision scale, highest resolution first; ``annotated``: (B, T)
    bool, which targets each case annotates. ``mark(part)``, when given, is called after each part (profiling).
    """
    mark = mark or (lambda part: None)
    device = segs[0].device
    presence = lookup.presence(segs[0]).cpu().numpy()
    queries = sample_query_batch(presence, annotated, vocabulary, max_queries, rng, device)
    text = phrasing_embeddings[queries.phrasing_index]
    mark("prompt sampling")
    targets = [lookup.masks(s, queries.target_index) for s in segs]
    mark("per-query targets")
    fuse = rng.random() >= p_skip_fusion
    spatial = None
    if fuse:
        moved = draw_misplaced_samples(len(targets[0]), misplacement, rng)
        misplaced = misplace_prompts(targets[0], queries.valid, misplacement, rng, samples=moved)
        spatial = simulate_spatial_prompts(misplaced, queries.valid, generator=rng)
        # complete masks, as a registration prior (moved) or a manual annotation (exact) gives them; the exact
        # samples were not moved, so ``misplaced`` holds their targets (invalid queries are empty already)
        whole = np.concatenate([draw_whole_samples(moved, misplacement, rng),
                                draw_exact_samples(len(targets[0]), moved, misplacement, rng)])
        if len(whole):
            index = torch.from_numpy(whole).to(device)
            spatial[index] = misplaced[index]
    mark("spatial prompts (misplacement + Alg. 1)")
    return PromptedBatch(text, targets, spatial, queries.valid, fuse)
