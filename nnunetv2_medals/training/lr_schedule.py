"""The learning-rate schedule of MedalSTrainer (cosine, as the reference).

Not torch's ``CosineAnnealingLR``: nnU-Net steps its scheduler with the epoch number at the start of every epoch
(``lr_scheduler.step(self.current_epoch)``, which is also how ``--c`` resumes without scheduler state). torch
deprecated ``step(epoch)`` and warns on every such call, and warns again because the first step comes before the
first ``optimizer.step()``. This class computes the closed form from the epoch number, as nnU-Net's own
``PolyLRScheduler`` does.
"""
from __future__ import annotations

import math

import torch


class CosineLRScheduler(torch.optim.lr_scheduler._LRScheduler):
    """Cosine decay from ``initial_lr`` to 0 over ``max_steps`` epochs, stepped by nnU-Net with the epoch number."""

    def __init__(self, optimizer, initial_lr: float, max_steps: int, current_step: int | None = None):
        self.initial_lr = initial_lr
        self.max_steps = max_steps
        self.ctr = 0
        super().__init__(optimizer, current_step if current_step is not None else -1)

    def step(self, current_step: int | None = None):
        if current_step is None or current_step == -1:
            current_step = self.ctr
            self.ctr += 1
        lr = 0.5 * self.initial_lr * (1 + math.cos(math.pi * min(current_step, self.max_steps) / self.max_steps))
        for group in self.optimizer.param_groups:
            group["lr"] = lr
