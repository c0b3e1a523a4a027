"""Free text at prediction -> the model's own vocabulary (paper §2.7, against the targets a model was trained on).

The paper canonicalises free text before it reaches the model. We do it against *the model's* vocabulary: its
targets and their trained phrasings become the class and variant maps of a :class:`Canonicaliser`, so the same
rules apply (normalisation, longest variant, laterality, lesion words). For each prompt:

1. **canonical**: the prompt's canonical class is a trained target -> the prompt is answered with that target's
   trained class embedding (its first phrasing: what validation measured). "the left-sided kidney",
   "dexter kidney", "the tumour inside the liver" become "left kidney", "right kidney", "liver tumour". A prompt
   whose words (minus filler words) are part of exactly one target's name, side included, counts too: "the right
   caudate" -> "right caudate nucleus"; so does one whose words are at least half of a trained phrasing of exactly
   one target ("left suprarenal" -> "left adrenal gland" through "left suprarenal gland").
   Report shorthand counts too: "L putamen" -> "left putamen" (a single l/r read as a side only when that gives a
   canonical match to a target of that side), and so does both sides of a structure ("both erector spinae
   muscles" -> the trained region whose label values are exactly its left and right targets'). A misspelt word
   (:mod:`.spelling`: "kidny left") is read as the trained word it is close to, with a warning.
2. **nearest embedding**: otherwise the prompt's own (raw) embedding is used, and the nearest trained phrasing
   (cosine) is reported. If the prompt names a side and that nearest phrasing belongs to the *other* side's
   target, the same-side counterpart's class embedding is used instead (``side corrected``): a prompt that says
   left is never answered by a right target. With no counterpart the prompt is refused (an error naming it).
3. A prompt whose nearest cosine is below :data:`FAR_COSINE` gets a warning: it is far from everything the model
   knows (foreign script, emoji, an unseen structure), and its answer is a guess.

A canonical match is not taken when the prompt says more than its target: both sides for a one-sided target
("left and right putamen"), or a word only *other* targets use ("lymph node near the left kidney", "left kidney
and spleen"); such prompts keep their own embedding.

Nor is a prompt for a structure the model does not know read as one it does (:mod:`.lacked_classes`: the
challenge's class map as world knowledge): "Vertebrae T6" is not the trained region "the vertebrae", "Left hip in
whole body CT" not the left kidney its side correction would give; it keeps its own embedding, is warned about,
and is kept on its side by the side guard when its nearest target has one (:meth:`VocabularyMatcher.structure_of`).

``raw=True`` skips 1 and 2 (every prompt keeps its own embedding) but still reports and warns.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.canonical import SIDES, Canonicaliser, default_canonicaliser, normalise, sentence_side
from nnunetv2_medals.text_prompts.lacked_classes import LackedClasses
from nnunetv2_medals.text_prompts.prompt_match import PromptMatch
from nnunetv2_medals.text_prompts.side_wordings import letter_side, spell_out_side, split_side
from nnunetv2_medals.text_prompts.spelling import respellings, spelling_candidates
from nnunetv2_medals.text_prompts.word_lists import (BEYOND_ORGAN, CONNECTIVES, FILLER_WORDS, KIND_WORDS, PART_WORDS,
                                                      SCAN_WORDS, SIDE_NOUNS, kind_words, scan_context, structure_words)

#: below this cosine to every trained phrasing a prompt is reported as far from the model's vocabulary (default
#: encoder: unrelated anatomy ~0.2-0.45, trained paraphrases >= 0.6)
FAR_COSINE = 0.5
_MODALITY_PREFIX = {"CT": "CT", "MRI": "MR", "PET": "PET", "US": "US", "Microscopy": "Microscopy"}


class VocabularyMatcher:
    """Canonical matching of prompts against trained targets.

    ``targets``: (name, phrasings) per target in the model's order; ``phrasings``/``embeddings`` (P, L): every
    trained phrasing and its embedding; ``modality``: the model's (None: the rules run without one);
    ``label_values``: per target, its labels (which region is a left/right pair; None: no both-sides rule).
    """

    def __init__(self, targets: Sequence[tuple[str, Sequence[str]]], phrasings: Sequence[str],
                 embeddings: np.ndarray, modality: str | None = None,
                 label_values: Sequence[Sequence[int]] | None = None):
        self.names = [name for name, _ in targets]
        self.modality = modality if modality in _MODALITY_PREFIX else "CT"
        prefix = _MODALITY_PREFIX[self.modality]
        prompt_map = {f"{prefix}_model": {str(i + 1): [name, *ps] for i, (name, ps) in enumerate(targets)}}
        self.canonicaliser = Canonicaliser(prompt_map, "model vocabulary")
        self._targets_of_class: dict[str, list[int]] = {}
        for (_, class_id), cls in self.canonicaliser.sources.items():
            self._targets_of_class.setdefault(cls.name, []).append(int(class_id) - 1)
        self.phrasings = list(phrasings)
        target_of = {p: i for i, (_, ps) in enumerate(targets) for p in ps}
        self._phrasing_target = [target_of.get(p, -1) for p in self.phrasings]
        self._name_words = [set(normalise(n).split()) for n in self.names]
        self._filler = FILLER_WORDS | (SCAN_WORDS - set().union(*self._name_words))
        self._phrasing_words = [structure_words(normalise(p).split()) - self._filler for p in self.phrasings]
        norms = np.linalg.norm(embeddings, axis=1, keepdims=True).clip(1e-12)
        self._unit = np.asarray(embeddings, np.float32) / norms
        self._sides = [split_side(n) for n in self.names]
        # the side each name's words name (the partial-name rule compares prompts with them and their words)
        self._name_side = [sentence_side(normalise(n)) for n in self.names]
        # the words each target's name and phrasings use, and the words only other targets use
        self._phrasings_of = [[name, *ps] for name, ps in targets]
        self._target_words = [set(normalise(" ".join(ps)).split()) for ps in self._phrasings_of]
        self._all_words = set().union(*self._target_words) if self._target_words else set()
        self._other_words = [(self._all_words - own) - self._filler - {"left", "right"} for own in self._target_words]
        self._spelling = spelling_candidates(self._all_words)
        self._lacked = LackedClasses(self.names, self._phrasings_of, self._target_words, self._filler, self.modality)
        # (left target, right target) -> the trained region that is exactly the two (``label_values`` tell)
        self._pair_regions: dict[tuple[int, int], int] = {}
        labels = [frozenset(v) for v in label_values] if label_values is not None else []
        for i, right in ((i, self.counterpart(i, "right")) for i, (s, _) in enumerate(self._sides) if s == "left"):
            for region, own in enumerate(labels):
                if right is not None and region not in (i, right) and own == labels[i] | labels[right]:
                    self._pair_regions[(i, right)] = region

    def counterpart(self, target: int, side: str) -> int | None:
        """The target of the same structure on ``side`` ("right kidney" for "left kidney", side right)."""
        other_side, structure = self._sides[target]
        if other_side is None:
            return None
        for i, (s, st) in enumerate(self._sides):
            if s == side and st == structure:
                return i
        return None

    def match(self, texts: Sequence[str], embeddings: np.ndarray, raw: bool = False,
              encoder_words: frozenset[str] | None = None) -> list[PromptMatch]:
        """One :class:`PromptMatch` per prompt; ``embeddings`` (N, L) are the prompts' own embeddings.
        ``encoder_words``: the whole words of the text encoder's vocabulary, taken as spelt right (no respelling
        without them)."""
        query = np.asarray(embeddings, np.float32)
        query = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)
        cos = query @ self._unit.T
        out = []
        for text, row in zip(texts, cos):
            best = int(np.argmax(row))
            nearest_target = self._phrasing_target[best]
            nearest = dict(nearest_phrasing=self.phrasings[best], cosine=float(row[best]),
                           nearest_target=self.names[nearest_target] if nearest_target >= 0 else "")
            warning = None
            if row[best] < FAR_COSINE:
                warning = (f"prompt {text!r} is far from everything the model was trained on (nearest: "
                           f"{self.phrasings[best]!r}, cosine {row[best]:.2f}); its result is a guess")
            unknown = self._lacked.class_of(text)
            if raw:
                out.append(PromptMatch(text, None, "raw", warning=warning,
                                       lacked_class=None if unknown is None else unknown.name, **nearest))
                continue
            words = normalise(text).split()
            # misspelt words ("kidny left", "L hipocampus", "liver tumuor"): read as the vocabulary word they are
            # close to and said so (instead of a far-prompt warning: the prompt's own embedding is not used); as
            # written when that matches nothing
            fixes = {} if encoder_words is None else respellings(words, self._spelling, encoder_words)
            respelt = [fixes.get(w, w) for w in words]
            if unknown is not None and fixes and self._lacked.class_of(" ".join(respelt)) is None:
                unknown = None                      # a target's misspelt name, not another structure
            target = None
            if fixes and unknown is None:
                target = self._target_of(text, respelt, row)
                if target is not None:
                    warning = f"prompt {text!r}: read " + ", ".join(f"{a!r} as {b!r}" for a, b in fixes.items())
            if target is None and unknown is None:
                target = self._target_of(text, words, row)
            if target is not None:
                out.append(PromptMatch(text, self.names[target], "canonical", warning=warning, **nearest))
                continue
            norm = normalise(text)
            words = set(norm.split())
            if ({"left", "right"} <= words and warning is None and nearest_target >= 0
                    and self._sides[nearest_target][0] is not None):
                warning = (f"prompt {text!r} names both sides and no trained target of both sides matches it; its "
                           f"own embedding decides (ask for each side separately)")
            prompt_kinds = kind_words(norm.split())
            kinds = sorted(prompt_kinds - self._all_words)
            if kinds and warning is None:
                article = "an" if kinds[0][0] in "aeiou" else "a"
                warning = (f"prompt {text!r} asks for {article} {kinds[0]}, and no trained target is one; its result "
                           f"is the nearest thing the model knows ({self.phrasings[best]!r}, cosine {row[best]:.2f})")
            if unknown is not None and warning is None:
                warning = (f"prompt {text!r} asks for {unknown.name!r} (the challenge's class map), which the model "
                           f"was not trained on; its result is the nearest thing the model knows "
                           f"({self.phrasings[best]!r}, cosine {row[best]:.2f})")
            # a cyst, vessel, ... its nearest target is not: never answered with that organ's embedding (the side
            # guard keeps a lesion on the side it names, :meth:`structure_of`)
            other_kind = bool(nearest_target >= 0 and prompt_kinds - self._target_words[nearest_target])
            # the side it names: side words, else report shorthand ("R kidney": a lone R reads as right here, where
            # the answer would otherwise be the nearest target whatever its side)
            side = sentence_side(norm) or letter_side(text)
            if side is not None and nearest_target >= 0 and not other_kind:
                target_side = self._sides[nearest_target][0]
                if target_side is not None and target_side != side:
                    other = self.counterpart(nearest_target, side)
                    if other is None:
                        lacks = "" if unknown is None else f"asks for {unknown.name!r}, which the model was not " \
                                                           f"trained on, and "
                        raise MedalSInputError("prompts", text, f"{lacks}names the {side} side, but the nearest thing "
                                                                f"the model knows is {self.names[nearest_target]!r} "
                                                                f"and it has no {side} counterpart")
                    if unknown is None:          # (a structure the model lacks: the side guard keeps it on its side)
                        out.append(PromptMatch(text, self.names[other], "side corrected", warning=warning, **nearest))
                        continue
            out.append(PromptMatch(text, None, "nearest embedding", warning=warning, other_kind=other_kind,
                                   lacked_class=None if unknown is None else unknown.name, **nearest))
        return out

    def _target_of(self, text: str, words: list[str], cosines: np.ndarray) -> int | None:
        """The target a prompt (raw ``text``, normalised ``words``) names, by the rules in order: shorthand sides
        (:meth:`_letter_side_target`), canonical (:meth:`_canonical_target`), both sides
        (:meth:`_both_sides_target`)."""
        target = self._letter_side_target(text, cosines, words)
        target = self._canonical_target(" ".join(words), cosines) if target is None else target
        return self._both_sides_target(words, cosines) if target is None else target

    def _both_sides_target(self, words: list[str], cosines: np.ndarray) -> int | None:
        """A prompt for both sides of a structure ("both erector spinae muscles", "renal parenchyma bilaterally",
        "left and right suprarenal") whose words, said of each side, match its left and its right target: the
        trained region that is exactly those two. None without such a region or when a side matches nothing."""
        if not self._pair_regions or not ("both" in words or {"left", "right"} <= set(words)) or \
                sentence_side(" ".join(words)) is not None:
            return None                                  # "left kidney, both poles" is the left kidney's
        # without the side words and the "and" of "left and right" (another "and" still joins two structures)
        sides = (["left"], ["right"])
        rest = [w for i, w in enumerate(words) if w not in ("left", "right", "both") and not (
            w in CONNECTIVES and words[i - 1:i] in sides and words[i + 1:i + 2] in sides)]
        left, right = (self._canonical_target(" ".join([side, *rest]), cosines) for side in SIDES)
        return self._pair_regions.get((left, right))

    def _letter_side_target(self, text: str, cosines: np.ndarray, words: list[str] | None = None) -> int | None:
        """Report shorthand "L putamen", "R hippocampus": a single letter l/r (and no side word) is read as that side
        when the prompt then matches a trained target of that side canonically. Single letters are no sides
        elsewhere ("R/O", "L-spine"), and a target without a side is not reached this way. ``words``: the prompt's
        normalised words when they are not ``normalise(text)`` (respelt)."""
        words = normalise(text).split() if words is None else words
        side = letter_side(text)
        if side is None:
            return None
        target = self._canonical_target(" ".join(spell_out_side(words, side)), cosines)
        return target if target is not None and self._sides[target][0] == side else None

    def _canonical_target(self, text: str, cosines: np.ndarray) -> int | None:
        """The canonical class's target, unless the prompt says more than that target: both sides for a target of
        one side ("left and right putamen"), or a word of another trained target that this one lacks ("lymph node
        near the left kidney", "left kidney and spleen") — such prompts are not reduced to one of their parts."""
        found = self.canonicaliser.canonicalise(text, self.modality)
        target = None if found is None else self._class_target(found.name, cosines)
        if target is None or self._says_more(text, target):
            # the canonical class is a part of what the prompt says ("lower lobe of the left lung": "left lung"
            # is no target and "lower lobe" names another): the words may still name one target
            target = self._partial_name_target(text)
        return None if target is None or self._says_more(text, target) else target

    def _says_more(self, text: str, target: int, kinds: frozenset = KIND_WORDS) -> bool:
        """Does ``text`` say more than target ``target``: both sides for a target of one side, a word of another
        trained target that this one lacks, a kind of structure in ``kinds`` (:func:`kind_words`: "cyst", "artery")
        that this one is not, or a connective before a word the target does not use ("liver and heart" when the model
        knows no heart, "aorta or IVC")?"""
        # "left hemisphere hippocampus": the noun of a side phrase names the side, not a structure; nor does the
        # region of a scan ("thoracic CT", "head and neck CT")
        said = normalise(text).split()
        said = [w for i, w in enumerate(said) if not (w in SIDE_NOUNS and i and said[i - 1] in ("left", "right"))]
        context = scan_context(said)
        ordered = [w for i, w in enumerate(said) if i not in context]
        words, own = set(ordered), self._target_words[target]
        if {"left", "right"} <= words and not {"left", "right"} <= own and self._name_side[target] is not None:
            return True
        if (words - own - self._filler) & (self._other_words[target] | kinds):
            return True
        plain = self._filler | {"left", "right", "both"}
        following = [next((x for x in said[i + 1:] if x not in plain), None)
                     for i, w in enumerate(said) if w in CONNECTIVES and i not in context]
        return any(x is not None and x not in own for x in following)

    def side_of(self, match: PromptMatch) -> str | None:
        """The side a prompt names: its side words, or report shorthand ("L putamen", "R kidney cyst") when the
        structure it asks for (:meth:`structure_of`) has that side. What the side guard keeps the answer to."""
        words = normalise(match.text).split()
        said = sentence_side(" ".join(words))
        if said is not None:
            return said
        letter, target = letter_side(match.text), self.structure_of(match)
        return letter if letter is not None and target in self.names and \
            self._sides[self.names.index(target)][0] == letter else None

    def structure_of(self, match: PromptMatch, min_cosine: float = 0.6) -> str | None:
        """The trained target a prompt asks for and nothing more: its matched target, or for a prompt answered
        with its own embedding the nearest phrasing's target (cosine >= ``min_cosine``) when the prompt uses no word
        that only other targets use ("the right psoas muscle" -> "right iliopsoas"; "left kidney and liver" ->
        None). Used by the side guard, which must not cut what a prompt asks for besides its nearest target; a
        lesion of that target ("left kidney cyst") lies on its side, a vessel or duct ("left renal vein") need not;
        a sided prompt for a structure the model lacks (``lacked_class``) gets its nearest target, or that target's
        counterpart on the side it names, whatever the cosine."""
        if match.target is not None:
            return match.target
        if match.method != "nearest embedding":
            return None
        if match.other_kind:
            # a lesion lies in the organ its other words name ("R kidney cyst" -> right kidney); a vessel need not
            words = normalise(match.text).split()
            if kind_words(words) & BEYOND_ORGAN:
                return None
            organ_words = " ".join(w for w in words if w not in KIND_WORDS)
            unknown = np.zeros(len(self.phrasings))
            organ = self._letter_side_target(organ_words, unknown)
            organ = self._canonical_target(organ_words, unknown) if organ is None else organ
            return None if organ is None else self.names[organ]
        if match.lacked_class is not None and match.nearest_target:
            # a structure the model lacks, whatever its cosine ("Left hip in whole body CT" -> "Right kidney in
            # whole body CT"): guarded as its nearest target's counterpart on the side it names, so its answer stays
            # on that side
            nearest = self.names.index(match.nearest_target)
            side = sentence_side(normalise(match.text)) or letter_side(match.text)
            if self._says_more(match.text, nearest, kinds=BEYOND_ORGAN):
                return None                 # "left hip and liver": the liver must not be cut as the left kidney
            if side is None or self._sides[nearest][0] in (None, side):
                return match.nearest_target if side is not None else None
            other = self.counterpart(nearest, side)
            return None if other is None else self.names[other]
        if not match.nearest_target or match.cosine < min_cosine:
            return None
        nearest = self.names.index(match.nearest_target)
        return None if self._says_more(match.text, nearest, kinds=BEYOND_ORGAN) else match.nearest_target

    def _class_target(self, name: str, cosines: np.ndarray) -> int | None:
        candidates = self._targets_of_class.get(name, [])
        if len(candidates) <= 1:
            return candidates[0] if candidates else None
        # targets merged into one class (they share a normalised phrasing): the one with the nearest phrasing
        best = {t: max((c for c, pt in zip(cosines, self._phrasing_target) if pt == t), default=-1.0)
                for t in candidates}
        return max(best, key=best.get)

    def _partial_name_target(self, text: str) -> int | None:
        """A prompt whose words (minus filler words) are part of exactly one target's name, side included:
        "the right caudate" -> "right caudate nucleus"; failing that, at least half the words of a trained phrasing
        of exactly one target, of the prompt's side: "left suprarenal" -> "left adrenal gland" (phrasing "left
        suprarenal gland"). Ambiguous ("kidney" with two kidneys; "suprarenal" with a left and a right one; "12" with
        rib 12 and the twelfth thoracic vertebra) or one generic word of a long description -> None. Nor is a whole
        a part of it (the words the prompt lacks name a part: "right lung" is not "right lung lower lobe"), nor a
        structure the challenge's class map knows as another one ("bladder" is not the gallbladder, though one of
        its phrasings is "gall bladder")."""
        words = set(normalise(text).split()) - self._filler
        if not words - {"left", "right"}:
            return None                                  # a side alone names no structure
        side = sentence_side(" ".join(words))
        hits = [i for i, (known, named) in enumerate(zip(self._name_words, self._name_side))
                if words <= known and named == side and not (known - words) & PART_WORDS]
        if hits:
            return hits[0] if len(hits) == 1 and self._may_be_short_for(text, hits[0]) else None
        found = {target for target, known in zip(self._phrasing_target, self._phrasing_words) if target >= 0 and
                 words <= known and 2 * len(words) >= len(known) and not (known - words) & PART_WORDS}
        if len(found) != 1:
            return None                                  # ambiguity counts targets of every side
        (target,) = found
        return target if self._name_side[target] == side and self._may_be_short_for(text, target) else None

    def _may_be_short_for(self, text: str, target: int) -> bool:
        """False when ``text`` is the full name of a structure of the challenge's class map that none of the target's
        name and phrasings is ("bladder" vs the gallbladder's "gall bladder"; "right lung" vs "right lung lower
        lobe"); a prompt the class map reads only in part ("lower lobe of the left lung": "left lung") may be."""
        challenge = default_canonicaliser()
        said = challenge.canonicalise(text, self.modality)
        content = set(normalise(text).split()) - self._filler
        if said is None or set(normalise(said.name).split()) - self._filler != content:
            return True
        return said in {challenge.canonicalise(p, self.modality) for p in self._phrasings_of[target]}
