"""Text canonicalisation (paper §2.7): a free-text prompt -> (modality, class id, canonical class name).

The maps are built from a BiomedSegFM-style prompt file (``{"<dataset>": {"<id>": [phrasings], "instance_label":
0|1}}``; the challenge's own file ships with the package and is the default):

* **class map** per modality: every dataset class becomes a canonical class named after its shortest first phrasing;
  classes of different datasets that share a phrasing (after normalisation) are one class ("Liver" of CT_AMOS and
  of CT_Abdomen1K), and each class gets an id, stable per modality (1-based, in name order);
* **variant map** per modality: every normalised phrasing -> its canonical class.

A sentence is normalised the same way (case, punctuation, plurals, ordinals such as "eleventh"/"11th" -> 11, organ
adjectives such as "renal" -> "kidney", lesion words such as "tumour", "lesions", "carcinoma" -> one lesion token;
contrast phases such as "portal venous phase" dropped)
and the **longest** variant it contains wins (a two-word compound also matches written as one word, and the other
way round: "brainstem" / "brain stem"), subject to two rules: **laterality** (a sentence that says "left"
never maps to a class without that side or with the other side; "left lung" is found from the class "lung" when the
map has it) and **lesion suffixes** (a sentence about a lesion maps to a lesion class, e.g. "hepatic lesion" ->
"liver tumors", not to the organ).
Nothing matched (or only classes ruled out by those rules) gives ``None``: a caller falls back to its generic rule.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Mapping

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import read_json
from nnunetv2_medals.paths import MODALITIES
from nnunetv2_medals.text_prompts.word_lists import (ABBREVIATIONS, CARDINALS, CONTRAST_PHASE, COUNTED_AFTER, IRREGULAR,
                                                      LESION_WORDS, MODALITY_WORDS, NO_PLURAL_ENDINGS, ORDINALS,
                                                      ORGAN_ADJECTIVES, SIDE_SYNONYMS)

PACKAGED_PROMPTS = "biomedsegfm_text_prompts.json"
LESION_TOKEN = "tumor"
SIDES = ("left", "right")


def _singular(word: str) -> str:
    if word in IRREGULAR:
        return IRREGULAR[word]
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]                                 # "masses", "branches", "apexes" (not "masse", "branche")
    if len(word) > 5 and word.endswith("uses"):
        return word[:-2]                                 # "sinuses", "plexuses"
    if len(word) > 3 and word.endswith("s") and not word.endswith(NO_PLURAL_ENDINGS):
        return word[:-1]
    return word


def normalise(text: str) -> str:
    """Lower-case, drop punctuation and possessives, write ordinals and numbering cardinals as numbers ("eleventh",
    "11th", "rib eleven" -> 11; "T-12", "Th12" -> t12), singularise, map organ adjectives, side synonyms ("dexter"
    -> right, "lt" -> left, "bilateral" -> both) and lesion words, and drop contrast phases ("portal venous
    phase": when the scan was taken, not the portal vein)."""
    text = text.lower().replace("'s", " ").replace("’s", " ")
    text = re.sub(r"\bth[\s-]?(\d{1,2})\b", r"t\1", text)         # "Th12" (thoracic, as European reports write it)
    text = re.sub(r"\b([ctls])[\s-](\d{1,2})\b", r"\1\2", text)   # vertebra names: "T-12", "L 1" -> t12, l1
    words = re.sub(r"[^a-z0-9]+", " ", text).split()
    out = []
    for w in words:
        w = re.sub(r"^(\d+)(?:st|nd|rd|th)$", r"\1", w)              # "11th" -> 11
        after = out[-1] if out else ""
        if w in CARDINALS and (after.isdigit() or (after.isalpha() and after not in COUNTED_AFTER) or
                                (after in ("and", "or", "to", "through") and out[-2:-1] and out[-2].isdigit())):
            w = CARDINALS[w]                                       # "rib eleven", "ribs eleven, twelve"
        w = ORDINALS.get(w, w)
        w = _singular(w)
        if w in ABBREVIATIONS and out[-len(ORGAN_ADJECTIVES[w].split()):] == ORGAN_ADJECTIVES[w].split():
            continue                    # an abbreviation after its name says it once ("inferior vena cava (IVC)")
        w = ORGAN_ADJECTIVES.get(w, w)
        w = SIDE_SYNONYMS.get(w, w)
        out.append(LESION_TOKEN if w in LESION_WORDS else w)
    return " ".join(CONTRAST_PHASE.sub(" ", " ".join(out)).split())


def sentence_side(normalised: str) -> str | None:
    """'left' / 'right' when the (normalised) sentence names exactly one side, else None."""
    sides = {s for s in SIDES if re.search(rf"\b{s}\b", normalised)}
    return sides.pop() if len(sides) == 1 else None


def modality_of_dataset(name: str) -> str:
    """Modality of a BiomedSegFM dataset key: ``CT_AMOS`` -> CT, ``MR_*`` -> MRI, ``autoPET`` -> PET …"""
    prefix = name.split("_")[0].lower()
    aliases = {"ct": "CT", "mr": "MRI", "mri": "MRI", "us": "US", "pet": "PET", "autopet": "PET",
               "microscopy": "Microscopy"}
    if prefix not in aliases:
        raise ValueError(f"cannot tell the modality of dataset {name!r} (expected a CT_/MR_/US_/PET/Microscopy_ "
                         f"prefix)")
    return aliases[prefix]


@dataclass(frozen=True)
class CanonicalClass:
    modality: str
    class_id: int
    name: str
    instance: bool = False


@dataclass
class _Group:
    names: list[str]            # first phrasings (lower-cased) of the dataset classes merged here
    variants: set[str]          # normalised phrasings
    instance: bool
    sources: list[tuple[str, str]]  # (dataset, class id)


class Canonicaliser:
    """Class map + variant map per modality, built from a BiomedSegFM-style prompt mapping."""

    def __init__(self, prompt_map: Mapping[str, Mapping], source: str | Path = "<prompts>"):
        self.source = Path(source)
        if not isinstance(prompt_map, Mapping):
            raise MedalSInputError(source, "<root>", "must map dataset names to {class id: [phrasings]}")
        groups: dict[str, list[_Group]] = {m: [] for m in MODALITIES}
        for dataset, classes in prompt_map.items():
            if not isinstance(classes, Mapping):
                raise MedalSInputError(source, dataset, "must map class ids to lists of phrasings")
            try:
                modality = modality_of_dataset(dataset)
            except ValueError as e:
                raise MedalSInputError(source, dataset, str(e)) from None
            instance = bool(classes.get("instance_label", 0))
            for class_id, phrasings in classes.items():
                if class_id == "instance_label":
                    continue
                if isinstance(phrasings, str):
                    phrasings = [phrasings]
                if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) and p.strip()
                                                                               for p in phrasings):
                    raise MedalSInputError(source, f"{dataset}.{class_id}", "must be a non-empty list of phrasings")
                first = re.sub(r"[_\s]+", " ", phrasings[0]).strip().lower()
                groups[modality].append(_Group([first], {normalise(p) for p in phrasings} | {normalise(first)},
                                               instance, [(dataset, class_id)]))
        self._classes: dict[str, dict[str, CanonicalClass]] = {}   # modality -> name -> class
        self._variants: dict[str, list[tuple[str, str]]] = {}      # modality -> [(variant, name)] longest first
        self._normalised_name: dict[tuple[str, str], str] = {}
        self.sources: dict[tuple[str, str], CanonicalClass] = {}   # (dataset, class id) -> class
        for modality, gs in groups.items():
            merged = _merge_sharing_variants(gs)
            names = {}
            for g in merged:
                name = min(g.names, key=lambda n: (len(n), n))
                names[name] = g
            self._classes[modality] = {}
            variants = []
            for class_id, name in enumerate(sorted(names), start=1):
                g = names[name]
                cls = CanonicalClass(modality, class_id, name, g.instance)
                self._classes[modality][name] = cls
                self._normalised_name[(modality, name)] = normalise(name)
                variants += [(v, name) for v in g.variants]
                for src in g.sources:
                    self.sources[src] = cls
            self._variants[modality] = sorted(variants, key=lambda vn: (-len(vn[0]), vn[0]))
        # per modality, the variants of two to four words by their sorted words (a match in another word order), in
        # variant order
        self._reordered: dict[str, dict[tuple[str, ...], list[tuple[str, str]]]] = {m: {} for m in self._variants}
        for m, vs in self._variants.items():
            for v, name in vs:
                if 2 <= len(v.split()) <= 4:
                    self._reordered[m].setdefault(tuple(sorted(v.split())), []).append((v, name))

    @classmethod
    def from_file(cls, path: str | Path) -> "Canonicaliser":
        return cls(read_json(path, "prompt file"), path)

    def classes(self, modality: str) -> list[CanonicalClass]:
        return sorted(self._classes.get(modality, {}).values(), key=lambda c: c.class_id)

    def words(self) -> set[str]:
        """Every word of every normalised phrasing, all modalities."""
        return {w for variants in self._variants.values() for v, _ in variants for w in v.split()}

    def lookup(self, modality: str, name: str) -> CanonicalClass | None:
        return self._classes.get(modality, {}).get(name)

    def canonicalise(self, sentence: str, modality: str | None = None) -> CanonicalClass | None:
        """Map one free-text prompt to its canonical class; ``modality`` restricts the search (else it is read
        from the sentence's words, else all modalities are searched)."""
        return self._match(normalise(sentence), modality)

    def _match(self, norm: str, modality: str | None, skip_variant: str | None = None) -> CanonicalClass | None:
        if modality is not None:
            modalities = [modality] if modality in self._classes else []
        else:
            padded = f" {norm} "
            modalities = [m for m, words in MODALITY_WORDS.items() if any(f" {w} " in padded for w in words)]
            modalities = modalities or list(self._classes)
        side = sentence_side(norm)
        lesion = re.search(rf"\b{LESION_TOKEN}\b", norm) is not None
        padded = f" {norm} "
        # compounds written as one word or two ("brainstem" / "brain stem", "gall bladder" / "gallbladder")
        words = norm.split()
        squashed = {a + b for a, b in zip(words, words[1:])} | set(words)
        candidates = [(v, m, name) for m in modalities for v, name in self._variants[m]
                      if v != skip_variant and (f" {v} " in padded or
                                                (v.count(" ") <= 1 and v.replace(" ", "") in squashed))]
        # the same words in another order in a stretch of the sentence ("left upper lung lobe": "left lung upper lobe")
        windows = {tuple(sorted(words[i:i + n])) for n in (2, 3, 4) for i in range(len(words) - n + 1)}
        both_sides = side is None and any(s in words for s in SIDES)      # reordered, "kidney right left" is no side
        candidates += sorted(((v, m, name) for m in modalities for bag in windows
                              for v, name in self._reordered[m].get(bag, ())
                              if v != skip_variant and not (both_sides and set(bag) & set(SIDES))),
                             key=lambda c: (modalities.index(c[1]), -len(c[0]), c[0]))
        if side is not None:
            # laterality by regex: match with the side words removed ("the kidney on the left side" finds
            # "left kidney" through "kidney"); the rules below keep only classes of that side
            bare = f" {_strip_sides(norm)} "
            candidates += [(v, m, name) for m in modalities for v, name in self._variants[m]
                           if v != skip_variant and _strip_sides(v) and f" {_strip_sides(v)} " in bare]
        # the longest variant wins, but one that carries more of the sentence's numbers first ("first lumbar
        # vertebral body": "1 lumbar vertebra" before the region's "lumbar vertebra body")
        numbers = {w for w in words if any(ch.isdigit() for ch in w)}
        candidates.sort(key=lambda c: (-len(numbers & set(c[0].split())), -len(c[0])))
        for _, m, name in candidates:
            resolved = self._apply_rules(m, name, side, lesion)
            if resolved is not None:
                return resolved
        return None

    def _apply_rules(self, modality: str, name: str, side: str | None, lesion: bool) -> CanonicalClass | None:
        cls = self._classes[modality][name]
        norm = self._normalised_name[(modality, name)]
        if side is not None:
            class_side = sentence_side(norm)
            if class_side is None:
                lateral = self._variant_of(modality, norm, extra=side, want_lesion=self._is_lesion(norm))
                if lateral is not None:
                    cls, norm = lateral, self._normalised_name[(modality, lateral.name)]
                elif not self._is_lesion(norm):
                    return None  # "left kidney" never becomes "kidney"; a left-kidney tumour is a kidney tumour
            elif class_side != side:
                return None
        if lesion and not self._is_lesion(norm):
            return self._variant_of(modality, norm, extra=LESION_TOKEN, want_lesion=True, side=side)
        return cls

    @staticmethod
    def _is_lesion(norm: str) -> bool:
        return LESION_TOKEN in norm.split()

    def _variant_of(self, modality: str, base_norm: str, extra: str, want_lesion: bool,
                    side: str | None = None) -> CanonicalClass | None:
        """The shortest class whose name is ``base`` plus the word ``extra`` (and maybe words around it):
        "kidney" + left -> "left kidney"; "liver" + lesion -> "liver tumors"."""
        base = base_norm.split()
        best = None
        for name, cls in self._classes[modality].items():
            words = self._normalised_name[(modality, name)].split()
            if extra not in words or self._is_lesion(" ".join(words)) != want_lesion:
                continue
            if side is not None and sentence_side(" ".join(words)) != side:
                continue
            rest = [w for w in words if w != extra]
            if _contains(rest, base) and (best is None or len(words) < best[0]):
                best = (len(words), cls)
        return None if best is None else best[1]

    def leave_one_out_accuracy(self, prompt_map: Mapping[str, Mapping]) -> tuple[float, list[tuple[str, str, str]]]:
        """Fraction of descriptive phrasings (all but each class's first, its name) that map to their own class when
        that exact phrasing is removed from the variant map: how well the rules generalise to unseen wording.
        Returns it with the misses as (dataset, phrasing, got)."""
        total, misses = 0, []
        for dataset, classes in prompt_map.items():
            modality = modality_of_dataset(dataset)
            for class_id, phrasings in classes.items():
                if class_id == "instance_label":
                    continue
                own = self.sources[(dataset, class_id)]
                for p in ([phrasings] if isinstance(phrasings, str) else phrasings)[1:]:
                    total += 1
                    got = self._match(normalise(p), modality, skip_variant=normalise(p))
                    if got != own:
                        misses.append((dataset, p, got.name if got else None))
        return 1 - len(misses) / max(total, 1), misses


def _strip_sides(norm: str) -> str:
    return " ".join(w for w in norm.split() if w not in SIDES)


def _contains(words: list[str], sub: list[str]) -> bool:
    n = len(sub)
    return n > 0 and any(words[i:i + n] == sub for i in range(len(words) - n + 1))


def _merge_sharing_variants(groups: list[_Group]) -> list[_Group]:
    """Union of classes that share a normalised phrasing (the same structure named in two datasets)."""
    parent = list(range(len(groups)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    owner: dict[str, int] = {}
    for i, g in enumerate(groups):
        for v in g.variants:
            if v in owner:
                parent[find(i)] = find(owner[v])
            else:
                owner[v] = i
    merged: dict[int, _Group] = {}
    for i, g in enumerate(groups):
        root = find(i)
        if root not in merged:
            merged[root] = _Group([], set(), False, [])
        m = merged[root]
        m.names += g.names
        m.variants |= g.variants
        m.instance = m.instance or g.instance
        m.sources += g.sources
    return list(merged.values())


@functools.lru_cache(maxsize=1)
def packaged_prompt_map() -> dict:
    """The challenge's prompt file that ships with the package (read once; do not modify)."""
    return json.loads(resources.files("nnunetv2_medals.text_prompts").joinpath(PACKAGED_PROMPTS).read_text())


@functools.lru_cache(maxsize=1)
def default_canonicaliser() -> Canonicaliser:
    """The canonicaliser of the challenge's prompt file that ships with the package."""
    return Canonicaliser(packaged_prompt_map(), PACKAGED_PROMPTS)


def canonicalise(sentence: str, modality: str | None = None) -> CanonicalClass | None:
    """sentence -> (modality, class id, canonical name) with the packaged maps; see :class:`Canonicaliser`."""
    return default_canonicaliser().canonicalise(sentence, modality)
