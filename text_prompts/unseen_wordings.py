"""The challenge's own phrasings as wordings a model never saw (the packaged prompt file; no job trains on it): what
``benchmarks/challenge_wordings.py`` and the tests read a model's vocabulary with."""
from __future__ import annotations

from typing import Collection, Sequence

from nnunetv2_medals.text_prompts.canonical import CanonicalClass, default_canonicaliser, packaged_prompt_map
from nnunetv2_medals.text_prompts.lacked_classes import class_of_name


def challenge_phrasings(names: Sequence[str], modality: str,
                        exclude: Collection[str] = ()) -> dict[tuple[str, ...], list[str]]:
    """``names`` (a model's targets) grouped by the challenge class each is (:func:`class_of_name`) -> every
    phrasing of that class in the packaged prompt file but ``exclude`` (the model's trained phrasings), sorted, each
    once: wordings of its structures the model never saw. Several names share a class when a model has two for it
    ("liver", "liver parenchyma")."""
    challenge, prompts = default_canonicaliser(), packaged_prompt_map()
    names_of: dict[CanonicalClass, list[str]] = {}
    for name in names:
        cls = class_of_name(name, modality)
        if cls is not None:
            names_of.setdefault(cls, []).append(name)
    out = {}
    for cls, ours in names_of.items():
        texts = sorted({t for (dataset, class_id), c in challenge.sources.items() if c == cls
                        for t in prompts[dataset][class_id]} - set(exclude))
        if texts:
            out[tuple(ours)] = texts
    return out


def unknown_structure_phrasings(names: Sequence[str], modality: str, exclude: Collection[str] = ()) -> list[str]:
    """Every phrasing in the packaged prompt file of the challenge's ``modality`` classes that none of ``names`` (a
    model's targets) canonicalises to, but ``exclude``, sorted, each once: wordings of structures the model does not
    know, which it must not answer with one of its targets."""
    challenge, prompts = default_canonicaliser(), packaged_prompt_map()
    known = {class_of_name(name, modality) for name in names} - {None}
    return sorted({t for (dataset, class_id), cls in challenge.sources.items()
                   if cls.modality == modality and cls not in known for t in prompts[dataset][class_id]}
                  - set(exclude))
