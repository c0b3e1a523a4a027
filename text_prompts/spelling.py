"""Misspelt prompt words ("kidny", "galbladder", "pancreaus"): read as the one word of a model's vocabulary they are
close to, when no phrasing of the challenge's prompt file or of the model uses them as written."""
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
#: words of position and appearance that prompts use and the challenge's phrasings may not ("interior" is not a
#: misspelt "inferior", "bright" not a misspelt "right")
DESCRIPTIVE_WORDS = frozenset("""anterior posterior superior inferior interior exterior internal external medial lateral
    proximal distal central peripheral ventral dorsal cranial caudal rostral bright brighter dark darker dense
    visible entire whole complete outer inner border margin boundary surface around between adjacent inside
    outside behind above below under beneath""".split())


@functools.lru_cache(maxsize=1)
def spelt_right() -> frozenset[str]:
    """Words taken as written: every word of the packaged challenge phrasings (normalised), the words the matcher
    treats specially (filler, scan, kind and side words) and :data:`DESCRIPTIVE_WORDS`."""
    return frozenset(default_canonicaliser().words() | FILLER_WORDS | SCAN_WORDS | KIND_WORDS | DESCRIPTIVE_WORDS |
                     set(SIDES) | {"both"})


def respellings(words: Sequence[str], vocabulary: Iterable[str]) -> dict[str, str]:
    """{misspelt word: vocabulary word} for the normalised ``words`` that neither :func:`spelt_right` nor
    ``vocabulary`` knows and that are close to exactly one ``vocabulary`` word of five letters or more, not a side."""
    known = spelt_right() | set(vocabulary)
    # never into a side (a typo must not make a side) or a short word
    vocabulary = sorted(w for w in set(vocabulary) if len(w) >= MIN_LENGTH and w.isalpha() and w not in SIDES)
    out = {}
    for w in words:
        if len(w) < MIN_LENGTH or not w.isalpha() or w in known:
            continue
        close = difflib.get_close_matches(w, vocabulary, n=2, cutoff=MIN_SIMILARITY)
        if len(close) == 1:
            out[w] = close[0]
    return out
