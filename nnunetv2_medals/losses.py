"""Per-query BCE + soft Dice (paper §2.8), averaged over valid (non-padded) queries, and nnU-Net's deep-supervision
weights for it."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-row dot products of (R, V) tensors in one pass (a batched matrix product, no elementwise temporary)."""
    return torch.bmm(a.unsqueeze(1), b.unsqueeze(2)).view(-1)


class _BCEDiceSum(torch.autograd.Function):
    """``Σ_q w_q · [BCE_q + 1 − Dice_q]`` over rows q of (R, V) logits/targets with its gradient written out.

    The same value and gradient as composing ``binary_cross_entropy_with_logits``, ``sigmoid``, products and
    powers under autograd, in about half the passes over the (R, V) tensors: forward is one sigmoid, one softplus
    and four row dot products; backward forms ``dL/dx = w (p − y) / V − w (a y − b p) p (1 − p)`` with the per-row
    constants of the Dice quotient (``a = 2 / U``, ``b = 2 (2 I + ε) / U²``, ``I = Σ p y``, ``U = Σ p² + Σ y² + ε``).
    On 2 × 32 prompts of 32 × 48 × 48 voxels each pass is a few milliseconds, and the loss at full resolution
    was a tenth of a CPU training step (``benchmarks/train_step.py``).
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, smooth: float):
        voxels = logits.shape[1]
        probs = torch.sigmoid(logits)
        # BCE with logits summed over voxels: softplus(x) − x·y (stable for any x)
        bce = (F.softplus(logits).sum(1) - _dot(logits, targets)) / voxels
        inter = _dot(probs, targets)
        union = _dot(probs, probs) + _dot(targets, targets) + smooth
        dice = (2 * inter + smooth) / union
        ctx.save_for_backward(probs, targets, weights, inter, union)
        ctx.smooth = smooth
        return ((bce + 1 - dice) * weights).sum()

    @staticmethod
    def backward(ctx, grad_output: torch.Tensor):
        probs, targets, weights, inter, union = ctx.saved_tensors
        w = (weights * grad_output)[:, None]
        a = (2 / union)[:, None]
        b = (2 * (2 * inter + ctx.smooth) / union.pow(2))[:, None]
        # d Dice / dp = a·y − b·p, times dp/dx = p − p²
        slope = torch.addcmul(targets * a, probs, b, value=-1)
        slope.mul_(torch.addcmul(probs, probs, probs, value=-1))
        grad = (probs - targets).mul_(w / probs.shape[1])
        grad.addcmul_(slope, w, value=-1)
        return grad, None, None, None


class PromptBCEDiceLoss(nn.Module):
    """``L = mean over valid queries of [BCE(P, Y) + 1 − (2ΣPY + ε) / (ΣP² + ΣY² + ε)]`` (squared denominator).

    ``logits``/``targets``: (B, N, *S); ``valid``: (B, N) bool. Each query is its own binary problem, so an empty
    target (a negative prompt) is learnt as "predict nothing". Computed in float32 (also under autocast) by
    :class:`_BCEDiceSum`.
    """

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        self.smooth = smooth

    def forward(self, logits: torch.Tensor, targets: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        rows = logits.shape[0] * logits.shape[1]
        if valid is None:
            weights = torch.full((rows,), 1.0 / rows, device=logits.device)
        else:
            weights = valid.reshape(rows).float()
            weights = weights / weights.sum().clamp_min(1)
        with torch.autocast(logits.device.type, enabled=False):
            return _BCEDiceSum.apply(logits.float().reshape(rows, -1), targets.float().reshape(rows, -1),
                                     weights, self.smooth)


def nnunet_deep_supervision_weights(n_outputs: int, ddp: bool) -> np.ndarray:
    """nnU-Net's deep-supervision weights: 1/2^i, the lowest output off (1e-6 under DDP so it stays in the graph)."""
    weights = np.array([1 / (2 ** i) for i in range(n_outputs)])
    weights[-1] = 1e-6 if ddp else 0
    return weights / weights.sum()
