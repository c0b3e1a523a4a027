"""Misspelt prompt words ("kidny", "galbladder", "amygdla"): read as the one word of a model's vocabulary they are
close to, when neither the text encoder's vocabulary nor the challenge's phrasings know them as written."""
from __future__ import annotations

import difflib
import functools
from typing import Iterable, Sequence

from nnunetv2_medals.text_prompts.canonical import SIDES, default_canonicaliser
from nnunetv2_medals.text_prompts.word_lists import FILLER_WORDS, KIND_WORDS, SCAN_WORDS

#: difflib's similarity (2 x matching letters / all letters) a misspelling must reach to its vocabulary word: one
#: letter dropped, added or changed in a word of five letters or more passes ("kidny" 0.91, "splen" 0.91,
#: "galbladder" 0.95); "ilium" for "ileum" (0.80) and "psoas" for "iliopsoas" (0.71) do not
MIN_SIMILARITY = 0.85
#: shorter words are never respelt, nor respelt into (too many real words are one letter apart: "lobe", "globe")
MIN_LENGTH = 5


@functools.lru_cache(maxsize=1)
def spelt_right() -> frozenset[str]:
    """Words taken as written whatever the encoder: every word of the packaged challenge phrasings (normalised) and
    the words the matcher treats specially (filler, scan, kind and side words)."""
    return frozenset(default_canonicaliser().words() | FILLER_WORDS | SCAN_WORDS | KIND_WORDS | set(SIDES) | {"both"})


def spelling_candidates(vocabulary: Iterable[str]) -> list[str]:
    """The words of a model's vocabulary a misspelt word may be read as: five letters or more, letters only, and
    not a side (a typo must never make a side: "rightt" stays unread)."""
    return sorted(w for w in set(vocabulary) if len(w) >= MIN_LENGTH and w.isalpha() and w not in SIDES)


def respellings(words: Sequence[str], candidates: Sequence[str], encoder_words: frozenset[str]) -> dict[str, str]:
    """{misspelt word: candidate} for the normalised ``words`` of five letters or more that neither
    :func:`spelt_right`, nor ``encoder_words`` (whole words of the text encoder's vocabulary: "interior",
    "bright", "ladder" are words, not misspelt "inferior", "right", "bladder"), nor ``candidates`` know and that
    are close to exactly one of ``candidates`` (:func:`spelling_candidates`)."""
    out = {}
    for w in words:
        if len(w) < MIN_LENGTH or not w.isalpha() or w in encoder_words or w in candidates or w in spelt_right():
            continue
        close = difflib.get_close_matches(w, candidates, n=2, cutoff=MIN_SIMILARITY)
        if len(close) == 1:
            out[w] = close[0]
    return out
