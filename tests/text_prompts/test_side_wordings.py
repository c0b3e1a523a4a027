"""Generated side wordings: every target with a side, and left/right pair regions, get more ways to say it."""
from __future__ import annotations

from types import SimpleNamespace

from nnunetv2_medals.text_prompts.canonical import normalise, sentence_side
from nnunetv2_medals.text_prompts.side_wordings import generated_wordings, plural, split_side


def _target(name, prompts, values, region=False):
    return SimpleNamespace(name=name, prompts=tuple(prompts), label_values=tuple(values), is_region=region,
                           instance=False)


TARGETS = [
    _target("kidneys", ["kidneys", "both kidneys"], (1, 2), region=True),
    _target("left kidney", ["left kidney", "kidney, left"], (1,)),
    _target("right kidney", ["right kidney", "the right kidney"], (2,)),
    _target("spleen", ["spleen"], (3,)),
    _target("liver", ["liver"], (4, 5), region=True),
    _target("liver parenchyma", ["liver parenchyma"], (4,)),
    _target("liver tumour", ["liver tumour"], (5,)),
]


def test_split_side():
    assert split_side("left kidney") == ("left", "kidney")
    assert split_side("Kidney, right") == ("right", "kidney")
    assert split_side("left and right kidney") == (None, "left and right kidney")
    assert split_side("spleen") == (None, "spleen")
    assert plural("hippocampus") == "hippocampi" and plural("kidney") == "kidneys" and plural("ovary") == "ovaries"


def test_every_side_target_gets_wordings_of_its_own_side_only():
    extra = generated_wordings(TARGETS, "CT")
    assert set(extra) == {"kidneys", "left kidney", "right kidney"}
    for name in ("left kidney", "right kidney"):
        side = name.split()[0]
        assert len(extra[name]) >= 5
        assert all(sentence_side(normalise(w)) == side for w in extra[name]), extra[name]
        assert "the kidney on the %s side" % side in extra[name]
        assert "%s-sided kidney" % side in extra[name]
    # a wording a target already has is not generated again, for it or any other target
    assert "the right kidney" not in extra["right kidney"]
    assert "both kidneys" not in extra["kidneys"] and "kidneys on both sides" in extra["kidneys"]
    owner = {}
    for name, phrasings in [(t.name, t.prompts) for t in TARGETS] + list(extra.items()):
        for p in phrasings:
            assert owner.setdefault(normalise(p), name) == name, f"{p!r} would mean two targets"
    # "bilateral" reads as "both" in matching, but stays a phrasing of its own to train on
    assert "bilateral kidneys" in extra["kidneys"]


def test_mri_targets_also_get_hemisphere_wordings():
    extra = generated_wordings([_target("right hippocampus", ["right hippocampus"], (1,))], "MRI")
    assert "hippocampus of the right hemisphere" in extra["right hippocampus"]
