"""Per-query BCE + Dice and nnU-Net's deep-supervision weights."""
import numpy as np
import torch

from nnunetv2_medals.losses import PromptBCEDiceLoss, nnunet_deep_supervision_weights


def test_perfect_prediction_scores_near_zero_and_wrong_scores_high():
    target = torch.zeros(1, 2, 8, 8, 8)
    target[0, 0, :4] = 1  # query 1 is a negative (empty target)
    loss = PromptBCEDiceLoss()
    good = loss(target * 40 - 20, target)
    bad = loss(20 - target * 40, target)
    assert good < 1e-3 and bad > 1.5


def test_padded_queries_do_not_count():
    target = torch.zeros(1, 3, 4, 4, 4)
    target[0, 0] = 1
    logits = torch.full_like(target, 20.0)
    logits[0, 2] = -20.0  # query 2 is padding with an arbitrary value
    valid = torch.tensor([[True, False, False]])
    assert PromptBCEDiceLoss()(logits, target, valid) < 1e-3
    assert PromptBCEDiceLoss()(logits, target) > 1


def test_deep_supervision_weights_match_nnunet():
    w = nnunet_deep_supervision_weights(4, ddp=False)
    np.testing.assert_allclose(w, np.array([1, 0.5, 0.25, 0]) / 1.75)
    assert nnunet_deep_supervision_weights(4, ddp=True)[-1] > 0
