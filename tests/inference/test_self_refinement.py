"""Algorithm 2 (paper §2.4): complementary block masks and self-refinement, on hand-built arrays."""
import numpy as np
import pytest
import torch

from nnunetv2_medals.inference.self_refinement import (complementary_block_masks, complementary_prompt_prediction,
                                                       self_refine)


def test_complementary_block_masks_partition_the_volume():
    a, b = complementary_block_masks((10, 12, 9), 4, np.random.default_rng(0))
    assert a.shape == (10, 12, 9) and not (a & b).any() and (a | b).all()
    assert 0 < a.float().mean() < 1


@pytest.mark.parametrize("seed", range(5))
def test_block_masks_select_exactly_half_of_the_blocks_of_b_voxels(seed):
    # b is the block edge in voxels (N_h = ceil(H / b)): (10, 12, 9) with b = 4 -> 3 x 3 x 3 = 27 blocks, of which
    # N_selected = floor(27 / 2) = 13 form M (Algorithm 2, line 11)
    mask, _ = complementary_block_masks((10, 12, 9), 4, np.random.default_rng(seed))
    padded = torch.zeros(12, 12, 12, dtype=torch.bool)
    padded[:10, :12, :9] = mask
    blocks = padded.reshape(3, 4, 3, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(27, -1)
    first = blocks[:, 0]
    # within the image every block is all-in or all-out (the padding is not part of the image)
    inside = torch.zeros(12, 12, 12, dtype=torch.bool)
    inside[:10, :12, :9] = True
    inside = inside.reshape(3, 4, 3, 4, 3, 4).permute(0, 2, 4, 1, 3, 5).reshape(27, -1)
    assert torch.all(blocks[inside.all(1)] == first[inside.all(1), None])
    assert int(first.sum()) == 13
    # a single block: max(1, floor(1/2)) = 1 -> M is everything, M_c nothing
    one, other = complementary_block_masks((3, 3, 3), 4, np.random.default_rng(seed))
    assert one.all() and not other.any()


def test_each_voxel_takes_the_pass_in_which_its_prompt_was_hidden():
    # a "model" that copies its prompt: under P = P1·M_c + P2·M it can copy nothing (its own prompt is hidden in the
    # pass each voxel is taken from), so the refined prediction is 0 everywhere; averaging the two passes would give
    # 0.5 on the foreground
    probs = torch.zeros(2, 8, 8, 8)
    probs[0, :4] = 0.9
    probs[1, :, 2:6] = 0.7
    out = self_refine(lambda prompts: prompts.clone(), probs, rounds=1, block_sizes=(4,), rng=np.random.default_rng(1))
    assert out.abs().max() == 0


def test_complementary_prediction_combines_first_pass_on_m_c_and_second_on_m():
    seen = []

    def predict(prompts):
        seen.append(prompts.clone())
        return torch.full_like(prompts, 0.2 if len(seen) == 1 else 0.9)

    prompts = torch.ones(1, 8, 8, 8)
    out = complementary_prompt_prediction(predict, prompts, block_sizes=(4,), rng=np.random.default_rng(2))
    mask = seen[0][0] > 0                       # the first pass saw the prompt on M
    assert torch.equal(seen[0] + seen[1], prompts) and 0 < mask.float().mean() < 1
    assert torch.all(out[0][mask] == 0.9) and torch.all(out[0][~mask] == 0.2)


def test_self_refinement_feeds_each_half_of_the_prediction_back():
    seen = []

    def predict(prompts):
        seen.append(prompts.clone())
        return prompts.clamp(0.2, 0.8) + 0.1

    probs = torch.zeros(2, 8, 8, 8)
    probs[0, :4] = 0.9
    out = self_refine(predict, probs, rounds=1, block_sizes=(4,), rng=np.random.default_rng(1))
    assert len(seen) == 2
    assert torch.equal(seen[0] + seen[1], (probs >= 0.5).float())   # complementary halves of the mask
    assert not seen[0].equal(seen[1])
    assert out.shape == probs.shape
    assert self_refine(predict, probs, rounds=0).equal(probs)
