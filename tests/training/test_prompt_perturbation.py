"""Misplaced-prompt simulation (our addition before Algorithm 1): moved, warped, dilated and eroded masks."""
import json
import textwrap
from dataclasses import replace

import numpy as np
import pytest
import torch

from nnunetv2_medals.training.prompt_perturbation import PromptMisplacement, misplace_prompts
from tests.helpers import run, train_env

STILL = PromptMisplacement(probability=1.0, max_rotation_deg=0, scale=(1, 1), max_shift=0, elastic_probability=0,
                           p_dilate=0, p_erode=0, whole=0.0)


def _masks(batch=2, n=3, shape=(32, 32, 32)):
    m = torch.zeros(batch, n, *shape)
    m[:, 0, 8:20, 10:22, 6:24] = 1
    m[:, 1, 14:26, 4:14, 10:20] = 1
    m[:, 2, 4:28, 18:26, 12:16] = 1
    return m


def _dice(a, b):
    return (2 * (a * b).sum() / (a.sum() + b.sum())).item()


def test_without_any_change_the_masks_come_back_unchanged():
    masks = _masks()
    assert torch.equal(misplace_prompts(masks, params=STILL, generator=np.random.default_rng(0)), masks)
    assert torch.equal(misplace_prompts(masks, params=replace(PromptMisplacement(), probability=0.0)), masks)


@pytest.mark.parametrize("params", [
    replace(STILL, max_rotation_deg=8, scale=(0.92, 1.08), max_shift=4),
    replace(STILL, elastic_probability=1.0, elastic_amplitude=3.0),
], ids=["affine", "elastic"])
def test_a_misplaced_prompt_differs_from_the_target_but_overlaps_it(params):
    masks = _masks()
    out = misplace_prompts(masks, params=params, generator=np.random.default_rng(1))
    assert set(out.unique().tolist()) <= {0.0, 1.0}
    for b in range(2):
        for c in range(3):
            assert not torch.equal(out[b, c], masks[b, c])
            assert 0.3 < _dice(out[b, c], masks[b, c]) < 1.0


def test_a_pure_shift_moves_the_mask_by_at_most_the_maximum_without_changing_its_size():
    masks = _masks(batch=4)
    out = misplace_prompts(masks, params=replace(STILL, max_shift=3.0), generator=np.random.default_rng(2))
    for b in range(4):
        for c in range(3):
            before, after = masks[b, c].nonzero().float().mean(0), out[b, c].nonzero().float().mean(0)
            assert (after - before).abs().max() <= 3.0 + 1e-4
            assert abs(out[b, c].sum() / masks[b, c].sum() - 1) < 0.25
        moved = out[b, 0].nonzero().float().mean(0) - masks[b, 0].nonzero().float().mean(0)
        assert moved.abs().max() >= 0.5  # the shift was applied
    assert torch.equal(masks, _masks(batch=4))  # the targets the loss uses are left as they were


def test_the_affine_is_a_rotation_and_scale_about_the_centre_on_a_non_cubic_patch():
    from nnunetv2_medals.training.prompt_perturbation import _sampling_grid

    spatial = [12, 40, 28]
    params = replace(STILL, max_rotation_deg=8, scale=(0.9, 1.1), max_shift=4)
    grid = _sampling_grid(3, spatial, params, torch.Generator().manual_seed(0), torch.device("cpu"))
    size = torch.tensor(spatial, dtype=torch.float64)
    # grid_sample coordinates (x, y, z), align_corners=False -> voxel coordinates in array order
    source = ((grid.double().flip(-1) + 1) * size - 1) / 2
    target = torch.stack(torch.meshgrid(*[torch.arange(n, dtype=torch.float64) for n in spatial], indexing="ij"), -1)
    centre = (size - 1) / 2
    x = torch.cat([(target - centre).reshape(-1, 3), torch.ones(target[..., :1].numel(), 1, dtype=torch.float64)], 1)
    for k in range(3):
        fit = torch.linalg.lstsq(x, (source[k] - centre).reshape(-1, 3)).solution  # (4, 3): linear part + shift
        linear, shift = fit[:3].T, fit[3]
        gram = linear.T @ linear
        scale2 = gram.diagonal().mean()
        assert torch.allclose(gram, scale2 * torch.eye(3, dtype=torch.float64), atol=1e-6)  # rigid in voxels
        assert 0.9 ** 2 - 1e-6 <= scale2 <= 1.1 ** 2 + 1e-6 and shift.abs().max() <= 4 + 1e-6


def test_dilation_grows_and_erosion_shrinks_the_boundary():
    masks = _masks()
    grown = misplace_prompts(masks, params=replace(STILL, p_dilate=1.0, max_boundary=1))
    shrunk = misplace_prompts(masks, params=replace(STILL, p_erode=1.0, max_boundary=1))
    assert torch.equal(grown * masks, masks) and (grown.sum((2, 3, 4)) > masks.sum((2, 3, 4))).all()
    assert torch.equal(shrunk * masks, shrunk) and (shrunk.sum((2, 3, 4)) < masks.sum((2, 3, 4))).all()
    # one voxel each way on a 12 x 12 x 18 box: 14 x 14 x 20 and 10 x 10 x 16
    assert grown[0, 0].sum() == 14 * 14 * 20 and shrunk[0, 0].sum() == 10 * 10 * 16
    two = misplace_prompts(masks, params=replace(STILL, p_dilate=1.0, max_boundary=2),
                           generator=np.random.default_rng(0))
    assert {int(v) for v in two[:, 0].sum((1, 2, 3))} <= {14 * 14 * 20, 16 * 16 * 22}


def test_erosion_never_empties_a_small_mask():
    masks = torch.zeros(1, 1, 16, 16, 16)
    masks[0, 0, 7:9, 7:9, 7:9] = 1
    out = misplace_prompts(masks, params=replace(STILL, p_erode=1.0, max_boundary=2))
    assert out.sum() > 0


def test_empty_masks_and_invalid_queries_stay_empty():
    masks = _masks()
    masks[:, 1] = 0
    valid = torch.tensor([[True, True, False], [True, False, True]])
    params = replace(PromptMisplacement(), probability=1.0, p_dilate=1.0, p_erode=0.0)
    out = misplace_prompts(masks, valid, params=params, generator=np.random.default_rng(3))
    assert out[:, 1].sum() == 0 and out[0, 2].sum() == 0
    assert out[0, 0].sum() > 0 and out[1, 2].sum() > 0


def test_two_dimensional_masks():
    masks = _masks()[..., 16]
    out = misplace_prompts(masks, params=replace(STILL, max_rotation_deg=10, max_shift=3),
                           generator=np.random.default_rng(4))
    assert out.shape == masks.shape and 0.3 < _dice(out, masks) < 1.0


def test_the_same_seed_gives_the_same_prompts():
    masks = _masks()
    params = replace(PromptMisplacement(), probability=1.0, elastic_probability=1.0)
    a = misplace_prompts(masks, params=params, generator=np.random.default_rng(7))
    b = misplace_prompts(masks, params=params, generator=np.random.default_rng(7))
    c = misplace_prompts(masks, params=params, generator=np.random.default_rng(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_only_the_chosen_share_of_samples_moves():
    masks = _masks(batch=64, shape=(16, 16, 16))
    out = misplace_prompts(masks, params=replace(STILL, probability=0.5, max_shift=4),
                           generator=np.random.default_rng(5))
    moved = (out != masks).flatten(1).any(1).float().mean().item()
    assert 0.3 < moved < 0.7


def test_wrong_dimensionality_is_refused():
    with pytest.raises(ValueError, match="spatial axes"):
        misplace_prompts(torch.zeros(2, 3, 4))


def test_the_trainer_misplaces_the_prompts_it_hands_to_algorithm_1(preprocessed_phantom, tmp_path):
    ext = tmp_path / "ext"
    ext.mkdir()
    record = tmp_path / "calls.jsonl"
    (ext / "medals_misplacement_probe.py").write_text(textwrap.dedent("""
        import json, os
        import torch
        import nnunetv2_medals.training.prompted_batch as module
        from nnunetv2_medals.training.prompt_perturbation import PromptMisplacement
        from nnunetv2_medals.trainers.medals_trainer import MedalSTrainer_smoke

        misplace, algorithm_1 = module.misplace_prompts, module.simulate_spatial_prompts
        seen = {}

        def misplace_probe(masks, valid, params, generator, **kwargs):
            out = misplace(masks, valid, params, generator, **kwargs)
            seen["out"] = out
            with open(os.environ["MISPLACEMENT_RECORD"], "a") as f:
                f.write(json.dumps({"shape": list(masks.shape), "probability": params.probability,
                                    "changed": bool((out != (masks > 0).float()).any())}) + "\\n")
            return out

        def algorithm_1_probe(masks, *args, **kwargs):
            with open(os.environ["MISPLACEMENT_RECORD"], "a") as f:
                f.write(json.dumps({"algorithm_1_input_is_misplaced": masks is seen.get("out")}) + "\\n")
            return algorithm_1(masks, *args, **kwargs)

        module.misplace_prompts, module.simulate_spatial_prompts = misplace_probe, algorithm_1_probe

        class MedalSTrainer_misplacementProbe(MedalSTrainer_smoke):
            prompt_misplacement = PromptMisplacement(probability=1.0, whole=0.0)

            def __init__(self, plans, configuration, fold, dataset_json, device=torch.device("cuda")):
                super().__init__(plans, configuration, fold, dataset_json, device)
                self.num_iterations_per_epoch = 2
                self.num_val_iterations_per_epoch = 1
                self.p_skip_fusion = 0.0
                self.dynamic_zoom_probability = 0.0
    """))
    env = train_env(preprocessed_phantom, ext, MISPLACEMENT_RECORD=record)
    run(["nnUNetv2_train", "901", "3d_fullres", "2", "-tr", "MedalSTrainer_misplacementProbe", "-p",
         "MedalSPlansCPU", "-device", "cpu"], env)
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    calls = [c for c in lines if "shape" in c]
    assert len(calls) == 2 and all(c["probability"] == 1.0 and c["changed"] for c in calls)
    assert all(len(c["shape"]) == 5 for c in calls)
    assert [c["algorithm_1_input_is_misplaced"] for c in lines if "shape" not in c] == [True, True]


def test_the_nearest_voxel_lookup_equals_grid_sample_and_the_box_moves_equal_max_pooling():
    """The fast paths (one index per sample gathered for all channels; shifted maxima on bytes) give exactly what
    torch's grid_sample (nearest, zero padding) and 3-voxel max-pooling give."""
    from nnunetv2_medals.training.prompt_perturbation import _box_dilate, _nearest_resample, _sampling_grid

    torch_rng = torch.Generator().manual_seed(0)
    for spatial in ([20, 24, 28], [33, 17, 40], [26, 31]):
        masks = (torch.rand(3, 5, *spatial, generator=torch_rng) < 0.3).float()
        grid = _sampling_grid(3, spatial, PromptMisplacement(max_shift=6.0, elastic_amplitude=3.0), torch_rng,
                              masks.device)
        expected = torch.nn.functional.grid_sample(masks, grid, mode="nearest", padding_mode="zeros",
                                                   align_corners=False)
        assert torch.equal(_nearest_resample(masks, grid).float(), expected)
        pool = torch.nn.functional.max_pool3d if len(spatial) == 3 else torch.nn.functional.max_pool2d
        flat = masks.flatten(0, 1)
        assert torch.equal(_box_dilate(flat.bool()).float(), pool(flat[:, None], 3, 1, 1)[:, 0])
        assert torch.equal((~_box_dilate(~flat.bool())).float(), -pool(-flat[:, None], 3, 1, 1)[:, 0])


def _prompted_batch(misplacement, seed):
    """One training batch's prompt work (MedalSTrainer.train_step's) on a phantom label map, every step fused."""
    from nnunetv2_medals.datasets.phantom import phantom_dataset_json
    from nnunetv2_medals.datasets.text_prompted import parse_text_prompted_dataset
    from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary, VocabularyTarget
    from nnunetv2_medals.training.prompt_sampling import TargetLookup
    from nnunetv2_medals.training.prompted_batch import build_prompted_batch

    dataset = parse_text_prompted_dataset(phantom_dataset_json(1), "phantom/dataset.json")
    phrasings = dataset.all_phrasings()
    vocab = ModelVocabulary(tuple(VocabularyTarget(t.name, t.label_values, t.instance, t.is_region, t.prompts)
                                  for t in dataset.targets),
                            phrasings, np.random.default_rng(0).standard_normal((len(phrasings), 8)).astype(np.float32),
                            {})
    seg = torch.zeros(4, 1, 24, 24, 24)
    for label in range(1, 7):  # six labelled cubes per sample
        z = 2 + 3 * label
        seg[:, :, z:z + 3, 4:20, 4:20] = label
    return build_prompted_batch([seg], np.ones((4, len(dataset.targets)), dtype=bool), TargetLookup(dataset.targets),
                                vocab, torch.from_numpy(vocab.phrasing_embeddings), 8, 0.0, misplacement,
                                np.random.default_rng(seed))


def _true_prompts(batch):
    """The (B, N, *S) bool masks a complete, unmoved prompt would be: the targets of the valid queries."""
    return batch.targets[0].bool() & batch.valid[:, :, None, None, None]


def _recorded(monkeypatch, module, name):
    """Replace ``module.name`` (a sample-drawing function) by one that also appends each draw to the returned list."""
    draws, draw = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: draws.append(draw(*a)) or draws[-1])
    return draws


def test_whole_misplaced_prompts_reach_the_network_complete_and_the_rest_go_through_algorithm_1(monkeypatch):
    """``whole``: a misplaced sample's masks are handed over as a registration prior gives them, complete; the other
    samples' masks go through Algorithm 1, which drops blocks of them (a fifth of a mask kept on average). Whole is
    the default."""
    import nnunetv2_medals.training.prompted_batch as module

    assert PromptMisplacement().whole == 1.0
    drawn = _recorded(monkeypatch, module, "draw_whole_samples")
    kinds = set()
    for seed in range(6):  # half the samples misplaced (without moving them), all of those whole
        batch = _prompted_batch(replace(STILL, probability=0.5, whole=1.0), seed)
        truth = _true_prompts(batch)
        for b in range(len(truth)):
            complete = torch.equal(batch.spatial[b].bool(), truth[b])
            assert complete == (b in drawn[-1]), (seed, b, drawn[-1])
            kinds.add(complete)
    assert kinds == {True, False}
    # whole = 0: every misplaced sample goes through Algorithm 1 (none complete here)
    for seed in range(3):
        batch = _prompted_batch(STILL, seed)
        truth = _true_prompts(batch)
        assert not any(torch.equal(batch.spatial[b].bool(), truth[b]) for b in range(len(truth)))
    # whole misplaced prompts are moved (the misplacement still applies), not the true masks
    moved = _prompted_batch(replace(PromptMisplacement(probability=1.0, whole=1.0), p_dilate=0, p_erode=0), 0)
    truth = _true_prompts(moved)
    assert not torch.equal(moved.spatial.bool(), truth)
    assert moved.spatial.sum() > 0.7 * truth.sum()  # complete masks, moved: about as many voxels as the truth


def test_exact_samples_reach_the_network_complete_and_in_place(monkeypatch):
    """``exact``: a share of the samples that are *not* misplaced hand their true masks over complete, as a manual
    annotation gives them; misplaced samples are never among them, and with ``exact = 0`` nothing is drawn (the
    random stream of the steps stays as it was)."""
    import nnunetv2_medals.training.prompted_batch as module

    assert PromptMisplacement().exact == 0.0
    draw_exact = module.draw_exact_samples
    moved_drawn = _recorded(monkeypatch, module, "draw_misplaced_samples")
    exact_drawn = _recorded(monkeypatch, module, "draw_exact_samples")
    # misplaced samples really move (shift, no boundary change), exact ones do not
    params = PromptMisplacement(probability=0.5, max_rotation_deg=0, scale=(1, 1), max_shift=4, elastic_probability=0,
                                p_dilate=0, p_erode=0, whole=1.0, exact=0.5)
    kinds = set()
    for seed in range(8):
        batch = _prompted_batch(params, seed)
        truth = _true_prompts(batch)
        moved, exact = set(moved_drawn[-1].tolist()), set(exact_drawn[-1].tolist())
        assert not moved & exact
        for b in range(len(truth)):
            complete = torch.equal(batch.spatial[b].bool(), truth[b])
            if b in exact:
                assert complete, (seed, b)
            kinds.add("exact" if b in exact else "moved" if b in moved else "algorithm 1")
            if b not in exact and b not in moved:
                assert not complete  # Algorithm 1 drops blocks of these
    assert kinds == {"exact", "moved", "algorithm 1"}
    # exact = 0: no draw at all, so the steps' random stream is the one from before the option existed
    rng = np.random.default_rng(3)
    assert draw_exact(4, np.zeros(0, np.int64), replace(params, exact=0.0), rng).size == 0
    assert rng.random() == np.random.default_rng(3).random()
