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


def _reference_loss(logits, targets, valid, smooth=1e-5):
    """The loss composed from torch ops under autograd (paper §2.8 as written): per query BCE + 1 − Dice."""
    x, y = logits.flatten(2), targets.flatten(2)
    bce = torch.nn.functional.binary_cross_entropy_with_logits(x, y, reduction="none").mean(2)
    p = torch.sigmoid(x)
    dice = (2 * (p * y).sum(2) + smooth) / (p.pow(2).sum(2) + y.pow(2).sum(2) + smooth)
    w = valid.float()
    return ((bce + 1 - dice) * w).sum() / w.sum().clamp_min(1)


def test_value_and_gradient_equal_the_composed_formula():
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(2, 5, 6, 7, 8, generator=gen) * 6).double()
    logits[0, 1] += 30  # saturated queries: softplus and sigmoid must stay finite
    logits[1, 2] -= 30
    targets = (torch.rand(2, 5, 6, 7, 8, generator=gen) < 0.3).double()
    targets[0, 3] = 0  # a negative prompt
    valid = torch.tensor([[True, True, True, True, False], [True, True, True, False, False]])
    ours = logits.clone().requires_grad_()
    ref = logits.clone().requires_grad_()
    value = PromptBCEDiceLoss()(ours, targets, valid)
    expected = _reference_loss(ref, targets, valid)
    (value * 3).backward()
    (expected * 3).backward()
    assert torch.isfinite(ours.grad).all()
    torch.testing.assert_close(value.double(), expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours.grad.double(), ref.grad, rtol=1e-4, atol=1e-8)
    assert ours.grad[1, 3:].abs().max() == 0  # padded queries get no gradient


def test_gradient_passes_torch_gradcheck():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    targets = (torch.rand(1, 3, 4, 4, 4, generator=gen) < 0.5).double()
    loss = PromptBCEDiceLoss()
    # the loss computes in float32; gradcheck's finite differences need float64, so compare in float64 through
    # the function's own backward with a tolerance for float32 rounding
    assert torch.autograd.gradcheck(lambda x: loss(x, targets).double(), (logits,), eps=1e-3, atol=1e-3, rtol=1e-2)
