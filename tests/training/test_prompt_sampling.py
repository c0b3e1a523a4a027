"""Training prompts: per-sample sampling and per-query targets."""
import numpy as np
import torch

from nnunetv2_medals.datasets.phantom import phantom_dataset_json
from nnunetv2_medals.datasets.text_prompted import parse_text_prompted_dataset
from nnunetv2_medals.training.prompt_sampling import TargetLookup, case_annotation_mask, sample_training_prompts

PHRASINGS = [[0, 1, 2], [3, 4], [5, 6, 7, 8], [9], [10, 11]]


def test_sampling_positives_negatives_and_fillers():
    rng = np.random.default_rng(0)
    present = np.array([True, True, True, False, False])
    for _ in range(50):
        targets, phrasings = sample_training_prompts(present, np.ones(5, bool), PHRASINGS, 8, rng)
        assert len(targets) == 8
        assert {0, 1, 2} <= set(targets)                      # every positive
        assert sum(t in (3, 4) for t in targets) <= 0        # ⌊0.33·3⌋ = 0 negatives
        assert all(p in PHRASINGS[t] for t, p in zip(targets, phrasings))
    many = np.array([True] * 5)
    targets, _ = sample_training_prompts(many, np.ones(5, bool), PHRASINGS, 3, rng)
    assert len(targets) == 3 and len(set(targets)) == 3


def test_negative_ratio_and_empty_patches():
    rng = np.random.default_rng(1)
    phr = [[i] for i in range(12)]
    present = np.array([True] * 6 + [False] * 6)
    targets, _ = sample_training_prompts(present, np.ones(12, bool), phr, 32, rng)
    assert sum(t >= 6 for t in targets) == 1                 # ⌊0.33·6⌋ = 1
    targets, _ = sample_training_prompts(np.zeros(12, bool), np.ones(12, bool), phr, 32, rng)
    assert len(targets) == 1                                  # background patch: one negative, no fillers


def test_partial_annotation_never_yields_a_negative_for_an_unannotated_class():
    ds = parse_text_prompted_dataset(phantom_dataset_json(3), "dataset.json",
                                     annotated_labels={"case_a": ["left kidney", "spleen"]})
    annotated = case_annotation_mask(ds, ["case_a", "case_b"])
    assert annotated[1].all()
    names = ds.target_names
    allowed = {names.index("left kidney"), names.index("spleen")}
    assert {i for i, a in enumerate(annotated[0]) if a} == allowed
    rng = np.random.default_rng(2)
    phr = [[i] for i in range(len(names))]
    seen_negative = set()
    for _ in range(300):
        present = rng.random(len(names)) < 0.3
        targets, _ = sample_training_prompts(present, annotated[0], phr, 16, rng)
        assert set(targets) <= allowed
        seen_negative |= {t for t in targets if not present[t]}
    assert seen_negative  # negatives do occur, from the annotated classes


def test_target_lookup_builds_region_unions():
    ds = parse_text_prompted_dataset(phantom_dataset_json(3), "dataset.json")
    lookup = TargetLookup(ds.targets)
    seg = torch.zeros(1, 1, 4, 4, 4)
    seg[0, 0, 0] = 3   # liver parenchyma
    seg[0, 0, 1] = 4   # liver tumour
    names = ds.target_names
    idx = torch.tensor([[names.index("liver"), names.index("liver tumour"), names.index("spleen")]])
    masks = lookup.masks(seg, idx)
    assert masks.shape == (1, 3, 4, 4, 4)
    assert masks[0, 0].sum() == 32 and masks[0, 1].sum() == 16 and masks[0, 2].sum() == 0
    presence = lookup.presence(seg)[0].tolist()
    assert presence[names.index("liver")] and not presence[names.index("kidneys")]


def test_negatives_prefer_the_targets_whose_text_is_closest_to_a_positive():
    rng = np.random.default_rng(5)
    phr = [[i] for i in range(6)]
    similarity = np.eye(6)
    similarity[0, 1] = similarity[1, 0] = 0.9   # e.g. "left kidney" / "right kidney"
    present = np.array([True, False, True, True, True, False])   # 4 positives: one negative of {1, 5}
    counts = np.zeros(6)
    for _ in range(400):
        targets, _ = sample_training_prompts(present, np.ones(6, bool), phr, 16, rng, target_similarity=similarity)
        for t in targets:
            if not present[t]:
                counts[t] += 1
    assert counts[1] > 0.9 * counts.sum()
    uniform = np.zeros(6)
    for _ in range(400):
        targets, _ = sample_training_prompts(present, np.ones(6, bool), phr, 16, rng)
        for t in targets:
            if not present[t]:
                uniform[t] += 1
    assert uniform[1] < 0.7 * uniform.sum()
