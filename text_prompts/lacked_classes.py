"""Prompts for structures a model does not know: the challenge's class map as world knowledge.

A model's own vocabulary is the map its prompts are canonicalised against (:mod:`.prompt_matching`), so a prompt for a
structure the model lacks could match a shorter variant of one it has ("Vertebrae T6" contains "vertebrae", the
trained region of all vertebrae) or be side corrected into the counterpart of whatever its embedding is nearest to
("Left hip in whole body CT" -> "Right kidney in whole body CT" -> the left kidney). The packaged challenge map (244
classes, merged from its 326 dataset classes) knows far more structures than any one model: a prompt it reads as a
class that none of the model's targets is asks for a structure the model lacks. Two guards against the map's partial
readings: a target is a class only when the class's name says all of the target's wording (:func:`class_of_name`:
"brain stem" is not the class "brain", "left lateral ventricle" not the heart's "left ventricle"), and a prompt that
says more than the class's name counts as the class only when it is no target's wording read in part
(:meth:`LackedClasses.class_of`: "left lateral ventricle" stays the target). This works as far as the map knows a
wording: "sixth thoracic vertebra" or "left clavicle" are no class of it.
"""
from __future__ import annotations

from typing import Collection, Sequence

from nnunetv2_medals.text_prompts.canonical import CanonicalClass, default_canonicaliser, normalise
from nnunetv2_medals.text_prompts.side_wordings import letter_side, spell_out_side
from nnunetv2_medals.text_prompts.word_lists import FILLER_WORDS, SCAN_WORDS, structure_words


def _said(text: str) -> set[str]:
    """What of ``text`` a class's name must say for the text to be that class (filler and scan words aside)."""
    return set(normalise(text).split()) - FILLER_WORDS - SCAN_WORDS


def class_of_name(name: str, modality: str) -> CanonicalClass | None:
    """The challenge class a target's name (or phrasing) is: the class the packaged map reads it as, when that
    class's name says all of it (filler and scan words aside); None otherwise ("brain stem" is not the class
    "brain")."""
    cls = default_canonicaliser().canonicalise(name, modality)
    return cls if cls is not None and _said(name) <= set(normalise(cls.name).split()) else None


class LackedClasses:
    """Which challenge class a prompt asks for that a model has no target for. ``names``: the targets' names;
    ``wordings``: per target, its name and phrasings; ``target_words``: per target, the normalised words of those;
    ``filler``: the words a prompt may add to a name (``VocabularyMatcher``'s); ``modality``: the model's."""

    def __init__(self, names: Sequence[str], wordings: Sequence[Sequence[str]], target_words: Sequence[set[str]],
                 filler: Collection[str], modality: str):
        self.modality = modality
        # each wording's words, so that only those a class's name can say are read with the map (its reading is
        # what costs: ~2 ms each, against ~300 wordings of a model), and each class decided once
        self._wordings = [(w, _said(w)) for ws in wordings for w in ws]
        self._known: dict[CanonicalClass, bool] = {}
        self.filler = frozenset(filler)
        self.name_words = [set(normalise(n).split()) - self.filler for n in names]
        self.joined_names = {"".join(w for w in normalise(n).split() if w not in self.filler) for n in names}
        self.target_words = list(target_words)

    def is_target(self, cls: CanonicalClass) -> bool:
        """Is ``cls`` the class of one of the targets' wordings (:func:`class_of_name`)?"""
        if cls not in self._known:
            name = set(normalise(cls.name).split())
            self._known[cls] = any(said <= name and class_of_name(w, self.modality) == cls
                                   for w, said in self._wordings)
        return self._known[cls]

    def class_of(self, text: str) -> CanonicalClass | None:
        """The class ``text`` asks for when the model has none of it, else None. The map reads the prompt (a lone L/R
        read as its side) as a class no target is, and the prompt is that class's name or not a target's wording
        that the map reads in part: its words are not all one target's ("left lateral ventricle": the map's heart
        ventricle), written together they are not a target's name ("brain stem" for "brainstem"), and what it says
        besides the class's name is not a target's name ("the third ventricle of the brain"). So "brain", "Left
        Ventricle", "left ventricle of the heart", "Vertebrae T6" and "right lacrimal gland in head and neck CT" are
        classes the model lacks when it has none of them. A prompt naming both sides that the map reads as one side
        is left alone when a target has that structure ("left and right kidney" for a model with only a both-kidneys
        target)."""
        words = normalise(text).split()
        said = spell_out_side(words, letter_side(text))
        cls = default_canonicaliser().canonicalise(" ".join(said), self.modality)
        if cls is None or self.is_target(cls):
            return None
        name = set(normalise(cls.name).split())
        structural = structure_words(said)                      # no "brain" of "left lateral ventricle in brain MRI"
        content = [w for w in said if w not in self.filler and w in structural]
        if {"left", "right"} <= set(words) and name & {"left", "right"} and \
                any(name - {"left", "right"} <= own for own in self.target_words):
            return None
        rest = set(content) - name - {"left", "right", "both"}
        if rest and (any(set(content) <= own for own in self.target_words) or "".join(content) in self.joined_names
                     or any(rest <= own for own in self.name_words)):
            return None
        return cls
