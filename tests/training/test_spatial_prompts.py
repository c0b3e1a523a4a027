"""Algorithm 1: simulated spatial prompts from ground-truth masks, against the paper's listing."""
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


def _per_block(out, block):
    """(N, *S) -> (N, blocks, voxels per block)."""
    blocks = out.unfold(1, block, block).unfold(2, block, block).unfold(3, block, block)
    return blocks.reshape(blocks.shape[0], -1, block ** 3)


def test_p_zero_gives_all_empty_prompts():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=1.0, p_add=(1, 1)))
    assert out.sum() == 0


def test_channel_zeroing():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=0, p_channel_zero=1.0,
                                                                            p_add=(0, 0)))
    assert out.sum() == 0


def test_channels_are_zeroed_before_blocks_are_added():
    # line 4 zeroes channels, line 17 adds blocks afterwards: every channel zeroed, p_drop 0, p_add 1 -> B_add is
    # every block and each block goes to at least one channel, so the union covers the whole patch
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=1.0, block_sizes=(8,), p_drop=(0, 0), p_add=(1, 1))
    out = simulate_spatial_prompts(_masks(), params=params, generator=np.random.default_rng(0))
    assert out.amax(1).all()


def test_added_blocks_never_land_on_dropped_blocks():
    # line 12: B_add = (rand < p_a) ∧ ¬B_drop. Every block dropped (p_d = 1) -> nothing can be added (p_a = 1)
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, block_sizes=(8,), p_drop=(1, 1), p_add=(1, 1))
    out = simulate_spatial_prompts(torch.ones(2, 3, 32, 32, 32), params=params, generator=np.random.default_rng(0))
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
def test_one_drop_grid_is_shared_by_all_channels_and_kept_blocks_go_to_channel_subsets(block):
    # all-ones masks, N = 6, p_d = 0.5, no additions: a block is on in some channel iff it was kept (one grid for
    # all channels: ~1 - p_d = 0.5 of the blocks; independent per-channel drops would leave 1 - 0.5^6 = 0.98 on in
    # some channel), and each kept block is in a channel with probability (N + 1) / (2N) = 7/12
    n = 6
    masks = torch.ones(2, n, 32, 32, 32)
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, block_sizes=(block,), p_drop=(0.5, 0.5),
                                     p_add=(0, 0))
    out = simulate_spatial_prompts(masks, params=params, generator=np.random.default_rng(3))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    on_any, per_channel = [], []
    for sample in out:
        blocks = _per_block(sample, block)
        assert torch.all(blocks.amin(-1) == blocks.amax(-1))       # each block all-kept or all-dropped
        kept = blocks[..., 0].bool()                                 # (N, blocks)
        on_any.append(kept.any(0).float())
        per_channel.append(kept[:, kept.any(0)].float().mean(0))
    on_any, per_channel = torch.cat(on_any), torch.cat(per_channel)
    assert abs(on_any.mean().item() - 0.5) < 0.1
    assert abs(per_channel.mean().item() - 7 / 12) < 0.08
    assert not torch.equal(out[0, 0], out[0, 1])                     # channels keep different subsets


def test_added_blocks_appear_outside_the_mask():
    masks = torch.zeros(1, 2, 32, 32, 32)
    params = SpatialPromptSimulation(p_zero=0, p_channel_zero=0, block_sizes=(8,), p_drop=(0, 0), p_add=(0.2, 0.2))
    out = simulate_spatial_prompts(masks, params=params, generator=np.random.default_rng(4))
    assert out.sum() > 0 and out.sum() % 512 == 0   # whole 8³ blocks


def test_same_generator_state_gives_the_same_prompts():
    params = SpatialPromptSimulation(p_zero=0)
    a = simulate_spatial_prompts(_masks(), params=params, generator=np.random.default_rng(7))
    b = simulate_spatial_prompts(_masks(), params=params, generator=np.random.default_rng(7))
    assert torch.equal(a, b)


def test_union_channel_is_the_union_of_prompts():
    out = simulate_spatial_prompts(_masks(), params=SpatialPromptSimulation(p_zero=0, p_channel_zero=0))
    union = prompt_union_channel(out, torch.zeros(2, 1, 32, 32, 32))
    assert torch.equal(union[:, 0], (out.amax(1) > 0).float())
    assert prompt_union_channel(None, torch.zeros(2, 1, 8, 8, 8)).sum() == 0
