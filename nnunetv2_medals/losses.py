"""Per-query BCE + soft Dice (paper §2.8), averaged over valid (non-padded) queries, and nnU-Net's deep-supervision
weights for it."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


class PromptBCEDiceLoss(nn.Module):
    """``L = mean over valid queries of [BCE(P, Y) + 1 − (2ΣPY + ε) / (ΣP² + ΣY² + ε)]`` (squared denominator).

    ``logits``/``targets``: (B, N, *S); ``valid``: (B, N) bool. Each query is its own binary problem, so an empty
    target (a negative prompt) is learnt as "predict nothing".
    """

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        logits = logits.float().flatten(2)
        targets = targets.float().flatten(2)
        bce = F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(2)
        probs = torch.sigmoid(logits)
        dice = (2 * (probs * targets).sum(2) + self.smooth) / \
            (probs.pow(2).sum(2) + targets.pow(2).sum(2) + self.smooth)
        per_query = bce + 1 - dice
        if valid is None:
            return per_query.mean()
        valid = valid.to(per_query.dtype)
        return (per_query * valid).sum() / valid.sum().clamp_min(1)


def nnunet_deep_supervision_weights(n_outputs: int, ddp: bool) -> np.ndarray:
    """nnU-Net's deep-supervision weights: 1/2^i, the lowest output off (1e-6 under DDP so it stays in the graph)."""
    weights = np.array([1 / (2 ** i) for i in range(n_outputs)])
    weights[-1] = 1e-6 if ddp else 0
    return weights / weights.sum()
