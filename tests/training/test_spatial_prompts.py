"""Algorithm 1: simulated spatial prompts from ground-truth masks."""
import numpy as np
import pytest
import torch

from nnunetv2_medals.network.medals_network import prompt_union_channel
from nnunetv2_medals.training.spatial_prompts import SpatialPromptSimulation, simulate_spatial_prompts


def _masks(n=3, shape=(32, 32, 32), seed=0):
    g = torch.Generator().manual_seed(seed)
    m = torch.zeros(2, n, *shape)
    m[:, :, 4:28, 4:28, 4:28] = (torch.rand(2, n, 24, 24, 24, generator=g) > 0.3).float()
    return m


def test_p_zero_gives_all_empty_prompts():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=1.0))
    assert out.sum() == 0


def test_channel_zeroing():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=0, p_channel_zero=1.0))
    assert out.sum() == 0


def test_no_drop_no_add_reproduces_the_mask_and_invalid_queries_stay_empty():
    masks = _masks()
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, p_drop=(0, 0), p_add=(0, 0))
    out = simulate_spatial_prompts(masks, params=params)
    assert torch.equal(out, masks)
    valid = torch.tensor([[True, False, True], [True, True, True]])
    out = simulate_spatial_prompts(masks, valid, params=params)
    assert out[0, 1].sum() == 0 and torch.equal(out[0, 0], masks[0, 0])


@pytest.mark.parametrize("block", [4, 8])
def test_dropped_blocks_are_aligned_blocks_of_the_mask_chosen_per_channel(block):
    masks = torch.ones(1, 6, 32, 32, 32)
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, block_sizes=(block,), p_drop=(0.5, 0.5),
                                     p_add=(0, 0))
    out = simulate_spatial_prompts(masks, params=params, generator=np.random.default_rng(3))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    blocks = out[0].unfold(1, block, block).unfold(2, block, block).unfold(3, block, block)
    per_block = blocks.reshape(*blocks.shape[:4], -1)
    assert torch.all((per_block.amin(-1) == per_block.amax(-1)))   # each block all-kept or all-dropped
    kept = per_block[..., 0].float().mean().item()
    assert 0.35 < kept < 0.65
    assert not torch.equal(out[0, 0], out[0, 1])                   # channels keep different blocks


def test_added_blocks_appear_outside_the_mask():
    masks = torch.zeros(1, 2, 32, 32, 32)
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, block_sizes=(8,), p_drop=(0, 0), p_add=(0.2, 0.2))
    out = simulate_spatial_prompts(masks, params=params, generator=np.random.default_rng(4))
    assert out.sum() > 0 and out.sum() % 512 == 0   # whole 8³ blocks


def test_union_channel_is_the_union_of_prompts():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=0, p_channel_zero=0))
    union = prompt_union_channel(out, torch.zeros(2, 1, 32, 32, 32))
    assert torch.equal(union[:, 0], (out.amax(1) > 0).float())
    assert prompt_union_channel(None, torch.zeros(2, 1, 8, 8, 8)).sum() == 0
