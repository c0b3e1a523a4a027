"""More ways to say a side: generated phrasings for every target with a side, and for left/right pair regions;
and report shorthand, a lone L/R (:func:`letter_side`).

A model trained on "left kidney", "CT of the left kidney" and "kidney, left" has never read "the left-sided
kidney" or "the kidney on the left side"; the text embeddings of such wordings can sit closer to the *other* side's
phrasings (cos("the kidney on the left side", "left kidney") = 0.86 vs 0.82 to "right kidney" with the default
encoder), so an unseen wording may be drawn on the wrong side. MedalSTrainer therefore adds the wordings below to
the phrasing pool of every target whose name names exactly one side ("left kidney" -> "kidney on the left side",
"left-sided kidney", …) and of every region that is a left/right pair of one structure ("both kidneys",
"bilateral kidneys", …), unless the dataset opts out with ``"text_prompt_side_wordings": false`` in dataset.json.
A generated wording already used by any target is skipped (a phrasing means one target only).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Sequence

from nnunetv2_medals.text_prompts.canonical import SIDES, normalise, sentence_side

#: dataset.json key that turns the generation off
OPT_OUT_KEY = "text_prompt_side_wordings"

_SIDE_TEMPLATES = ("{s} on the {side} side", "{side}-sided {s}", "{s} ({side})", "{s}, {side}", "the {side} {s}",
                   "{s} on the {side}", "{side} side {s}", "the {s} on the {side} side")
_PAIR_TEMPLATES = ("both {p}", "bilateral {p}", "left and right {s}", "{p} on both sides", "the two {p}")
_IRREGULAR_PLURALS = {"hippocampus": "hippocampi", "thalamus": "thalami", "nucleus": "nuclei",
                      "vertebra": "vertebrae", "accumbens": "accumbens", "pallidus": "pallidus"}


def split_side(name: str) -> tuple[str | None, str]:
    """``"left kidney"`` -> ``("left", "kidney")``; ``"Kidney, right"`` -> ``("right", "kidney")``; a name without
    exactly one side word -> ``(None, name)``."""
    words = re.sub(r"[^A-Za-z0-9]+", " ", name).lower().split()
    sides = [w for w in words if w in SIDES]
    if len(set(sides)) != 1:
        return None, name
    structure = " ".join(w for w in words if w not in SIDES)
    return (sides[0], structure) if structure else (None, name)


def plural(structure: str) -> str:
    """A readable plural of a structure name (last word): kidney -> kidneys, hippocampus -> hippocampi."""
    *head, last = structure.split()
    if last in _IRREGULAR_PLURALS:
        last = _IRREGULAR_PLURALS[last]
    elif last.endswith(("s", "x")):
        last = last
    elif last.endswith("y") and len(last) > 2 and last[-2] not in "aeiou":
        last = last[:-1] + "ies"
    else:
        last = last + "s"
    return " ".join([*head, last])


def side_wordings(structure: str, side: str, modality: str | None = None) -> list[str]:
    """Generated wordings of one side of a structure."""
    out = [t.format(s=structure, side=side) for t in _SIDE_TEMPLATES]
    if modality == "MRI":
        out.append(f"{structure} of the {side} hemisphere")
    return out


def pair_wordings(structure: str) -> list[str]:
    """Generated wordings of a left/right pair of one structure."""
    return [t.format(s=structure, p=plural(structure)) for t in _PAIR_TEMPLATES]


def _key(text: str) -> str:
    """What makes two phrasings the same for training: their normalised words, except that "bilateral" stays its own
    word (matching reads it as "both", but "bilateral kidneys" is a phrasing of its own to train on)."""
    return normalise(re.sub(r"\bbilateral\b", "bilateralword", text, flags=re.IGNORECASE))


def generated_wordings(targets: Sequence, modality: str | None = None) -> dict[str, list[str]]:
    """target name -> new phrasings for the targets that name a side and for left/right pair regions.

    ``targets`` are ``PromptTarget``-like (``name``, ``label_values``, ``prompts``, ``is_region``); a region is a
    pair when its labels are exactly one target of each side with the same structure.
    """
    by_values = {tuple(t.label_values): t for t in targets if not t.is_region}
    used = {_key(p) for t in targets for p in (t.name, *t.prompts)}
    out: dict[str, list[str]] = {}

    def take(name: str, wordings: list[str]) -> None:
        new = []
        for w in wordings:
            key = _key(w)
            if key not in used:
                used.add(key)
                new.append(w)
        if new:
            out[name] = new

    for t in targets:
        if t.is_region:
            members = [by_values.get((v,)) for v in t.label_values]
            if len(members) != 2 or any(m is None for m in members):
                continue
            (side_a, struct_a), (side_b, struct_b) = split_side(members[0].name), split_side(members[1].name)
            if {side_a, side_b} == set(SIDES) and struct_a == struct_b:
                take(t.name, pair_wordings(struct_a))
            continue
        side, structure = split_side(t.name)
        if side is not None and sentence_side(normalise(t.name)) == side:
            take(t.name, side_wordings(structure, side, modality))
    return out


def with_side_wordings(dataset):
    """A ``TextPromptedDataset`` whose targets' phrasings include :func:`generated_wordings` (appended: the first
    phrasing, the stored class embedding, stays)."""
    extra = generated_wordings(dataset.targets, dataset.modality)
    targets = tuple(dataclasses.replace(t, prompts=(*t.prompts, *extra.get(t.name, ()))) for t in dataset.targets)
    return dataclasses.replace(dataset, targets=targets)


#: a letter L/R standing alone in the raw text: not part of a word ("Rückenmuskulatur", "lóbulo"), an elision
#: ("l'autochtone") or a hyphenated or slashed token ("L-spine", "R/O", "L/S"); parentheses are fine ("kidney (R)")
_LONE_LETTER = re.compile(r"(?<![\w'’/-])([LRlr])(?![\w'’/-])")


def letter_side(text: str) -> str | None:
    """Report shorthand: the side of the one lone letter L/R of a prompt that names no side in words ("L putamen",
    "R kidney cyst", "hippocampus L"); None for none, several, a side word, or a letter inside a token."""
    words = normalise(text).split()
    letters = _LONE_LETTER.findall(text)
    if len(letters) != 1 or [w for w in words if w in ("l", "r")] != [letters[0].lower()] or \
            sentence_side(" ".join(words)) is not None:
        return None
    return "left" if letters[0].lower() == "l" else "right"


def spell_out_side(words: list[str], side: str | None) -> list[str]:
    """Normalised ``words`` with the lone letter of ``side`` (:func:`letter_side`) written as the side word: "l
    putamen" -> "left putamen"; unchanged for no side."""
    return words if side is None else [side if w == side[0] else w for w in words]
