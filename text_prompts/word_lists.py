"""The word lists of text normalisation (:func:`nnunetv2_medals.text_prompts.canonical.normalise`): lesion words,
organ adjectives, side synonyms, number words, irregular plurals, modality keywords and contrast phases; and the
words :mod:`.prompt_matching` treats specially (filler, scan and kind words)."""
from __future__ import annotations

import re
from typing import Sequence

# lesion words; "met" is "mets", report shorthand for metastases, and "foci" are foci of disease (one "focus" stays
# a word: "focus on the liver")
LESION_WORDS = {"tumor", "tumour", "lesion", "cancer", "carcinoma", "neoplasm", "metastasis", "metastase",
                "malignancy", "mass", "met", "foci"}
# adjective -> the organ noun the class maps use; applied to sentences and variants alike
ORGAN_ADJECTIVES = {"renal": "kidney", "hepatic": "liver", "splenic": "spleen", "pulmonary": "lung",
                    "cardiac": "heart", "gastric": "stomach", "pancreatic": "pancreas", "prostatic": "prostate",
                    "cerebral": "brain", "vertebral": "vertebra", "thyroidal": "thyroid", "esophageal": "esophagus",
                    "oesophageal": "esophagus", "oesophagus": "esophagus", "colonic": "colon", "aortic": "aorta",
                    "nephric": "kidney", "duodenal": "duodenum", "sacral": "sacrum", "humeral": "humerus",
                    "femoral": "femur", "scapular": "scapula", "clavicular": "clavicula", "venous": "vein",
                    "arterial": "artery", "vesical": "bladder", "caval": "cava", "cecal": "cecum",
                    "appendiceal": "appendix", "tracheal": "trachea", "bronchial": "bronchus",
                    "myocardial": "myocardium", "uterine": "uterus", "cervical": "cervix",
                    # abbreviations the challenge phrasings use
                    "ivc": "inferior vena cava", "svc": "superior vena cava", "ivd": "intervertebral disc",
                    "hippocampal": "hippocampus", "amygdaloid": "amygdala", "thalamic": "thalamus", "pontine": "pons",
                    "cerebellar": "cerebellum", "pallidum": "globus pallidus",  # FreeSurfer's "Left-Pallidum"
                    # radiology-report abbreviations of one structure each
                    "lul": "left upper lobe", "lll": "left lower lobe", "rul": "right upper lobe",
                    "rml": "right middle lobe", "rll": "right lower lobe", "gb": "gallbladder",
                    "cbd": "common bile duct", "sma": "superior mesenteric artery", "smv": "superior mesenteric vein",
                    # one noun for one organ ("large intestine" is the large bowel, the colon's phrasing)
                    "intestine": "bowel", "intestinal": "bowel"}
#: the abbreviations among them (said after the name they stand for, they say it once: "inferior vena cava (IVC)")
ABBREVIATIONS = frozenset({"ivc", "svc", "ivd", "lul", "lll", "rul", "rml", "rll", "gb", "cbd", "sma", "smv"})
# other words for a side: Latin (anatomical nomenclature) and radiology-report abbreviations
# (single letters are not sides: "R/O", "L-spine", "L1")
SIDE_SYNONYMS = {"bilateral": "both", "bilaterally": "both", "lh": "left", "rh": "right",  # FreeSurfer's hemispheres
                 "dexter": "right", "dextra": "right", "dextrum": "right", "dextral": "right", "rt": "right",
                 "sinister": "left", "sinistra": "left", "sinistrum": "left", "sinistral": "left", "lt": "left"}
# ordinals -> the number ("eleventh rib", "11th rib" and "rib 11" name one rib; "first lumbar vertebra" -> "1 ...")
ORDINAL_WORDS = ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
                 "eleventh", "twelfth", "thirteenth", "fourteenth", "fifteenth", "sixteenth", "seventeenth",
                 "eighteenth", "nineteenth", "twentieth")
ORDINALS = {w: str(i) for i, w in enumerate(ORDINAL_WORDS, start=1)}
# cardinals from three on after the word they number ("rib eleven", "ventricle four"); "one" and "two" stay words
# ("the two kidneys"), and so does a count ("the five lumbar vertebrae", "all twelve ribs", "twelve left ribs")
CARDINALS = {w: str(i) for i, w in enumerate("three four five six seven eight nine ten eleven twelve thirteen "
                                              "fourteen fifteen sixteen seventeen eighteen nineteen twenty".split(), 3)}
COUNTED_AFTER = frozenset("the all a an of and or these those its their both left right".split())
IRREGULAR = {"vertebrae": "vertebra", "nuclei": "nucleus", "hippocampi": "hippocampus", "metastases": "metastasis",
             "thalami": "thalamus", "bronchi": "bronchus", "amygdalae": "amygdala",
             "putamina": "putamen", "cortices": "cortex", "globi": "globus", "pallidi": "pallidus",
             "thrombi": "thrombus", "emboli": "embolus"}
NO_PLURAL_ENDINGS = ("ss", "us", "is", "as", "os")
MODALITY_WORDS = {
    "CT": ("ct", "computed tomography", "cta", "cect"),
    "MRI": ("mri", "mr", "magnetic resonance", "flair", "t1", "t2", "t1w", "t2w", "dwi", "adc", "t1c"),
    "PET": ("pet", "positron emission", "fdg"),
    "US": ("ultrasound", "sonography", "ultrasonography", "echocardiography", "sonographic"),
    "Microscopy": ("microscopy", "microscopic", "micrograph", "electron microscopy", "fluorescence"),
}
# contrast phases name when a scan was taken, not a structure ("liver, portal venous phase", "arterial-phase
# spleen", "kidneys in the delayed and excretory phases"): normalise() drops them. Written as normalise() writes
# them by then ("venous" -> vein, "arterial" -> artery, "pancreatic" -> pancreas, "phases" -> phase).
_PHASE = (r"(?:(?:portal|late|early)\s)?(?:vein|artery|pancreas|delayed|delay|late|early|equilibrium|nephrographic|"
          r"excretory|pyelographic|urographic|corticomedullary|parenchymal|washout|native|unenhanced|noncontrast|"
          r"non\scontrast|precontrast|pre\scontrast|postcontrast|post\scontrast|contrast)")
CONTRAST_PHASE = re.compile(rf"\b{_PHASE}(?:\s(?:and|or)\s{_PHASE})*\sphase\b")

# ---- words the matching of prompts against a model's vocabulary (prompt_matching) treats specially
#: words a prompt may add to a target's name and still mean it ("the right caudate" for "right caudate nucleus")
FILLER_WORDS = frozenset({"the", "a", "an", "of", "on", "in", "at", "side", "sided", "part", "region", "structure",
                          "segment", "area", "field", "show", "find", "image", "scan", "ct", "mri", "mr", "please",
                          "me"})
#: words that describe the scan, not a structure ("left kidney on abdominal CT", "liver in a whole-body scan"): filler
#: too, unless a trained target's name uses one ("abdominal wall", "chest wall"); a trained *phrasing* that
#: uses one ("abdominal aorta") does not make it a structure word
SCAN_WORDS = frozenset({"abdominal", "abdomen", "chest", "thorax", "pelvic", "pelvis", "whole", "body", "imaging",
                        "study", "exam", "examination", "series", "slice", "view", "axial", "coronal", "sagittal",
                        "contrast", "enhanced", "unenhanced", "protocol", "volume", "computed", "tomography", "cect",
                        "cta", "with", "oral"})
#: words that name another kind of structure than the organ they go with ("left kidney cyst", "right renal artery",
#: "left lung nodule"): a target whose name and phrasings lack the word is not what the prompt asks for
KIND_WORDS = frozenset({"artery", "vein", "vessel", "duct", "nerve", "node", "cyst", "nodule", "polyp", "stone",
                        "calculus", "calculi", "aneurysm", "thrombus", "embolus", "abscess", "hematoma", "haematoma",
                        "hemorrhage", "haemorrhage", "infarct", "fracture", "effusion", "calcification", "plaque",
                        "stent", "implant"})


def kind_words(words) -> set[str]:
    """The :data:`KIND_WORDS` among normalised ``words`` (a contrast phase, "arterial phase", is no vessel:
    ``normalise`` has dropped it)."""
    return {w for w in words if w in KIND_WORDS}


#: kind words of things that extend beyond their organ (a renal artery reaches the aorta): the side guard does not
#: take such a prompt for its organ (:meth:`VocabularyMatcher.structure_of`)
BEYOND_ORGAN = frozenset({"artery", "vein", "vessel", "duct", "nerve", "node"})
#: words that name a part of a structure ("lower lobe", "head", "tail"): a prompt without them is not a shortened
#: name of a target with them ("right lung" is not "right lung lower lobe"; "the right caudate" is "right caudate
#: nucleus")
PART_WORDS = frozenset({"lobe", "upper", "lower", "middle", "segment", "head", "tail", "horn", "apex", "base", "root",
                        "wall", "hilum"})
#: nouns that make a side phrase with a side word before them ("left hemisphere hippocampus", "the right half of
#: the liver"): they name the side, not a structure
SIDE_NOUNS = ("hemisphere", "half")
#: body regions that say where a scan was taken when a scan word follows ("thoracic computed tomography", "chest and
#: abdomen CT", "head and neck CT"), even when a trained target's name uses one ("thoracic vertebrae")
REGION_WORDS = frozenset({"thoracic", "abdominal", "pelvic", "chest", "abdomen", "pelvis", "thorax", "head", "neck",
                          "cranial", "cardiac", "whole", "body", "brain"})
_SCAN_FOLLOWERS = frozenset({"ct", "mri", "mr", "computed", "tomographic", "tomography", "imaging", "image", "scan"})


def scan_context(words: Sequence[str]) -> set[int]:
    """Positions of normalised ``words`` that name the scan's body region, not a structure."""
    out: set[int] = set()
    for i, w in enumerate(words):
        if w not in REGION_WORDS:
            continue
        pair = words[i + 1:i + 3]                            # "chest and abdomen CT"
        end = i + 2 if len(pair) == 2 and pair[0] == "and" and pair[1] in REGION_WORDS else i
        if end + 1 < len(words) and words[end + 1] in _SCAN_FOLLOWERS:
            out.update(range(i, end + 1))
    return out


def structure_words(words: Sequence[str]) -> set[str]:
    """Normalised ``words`` without the scan's body region (:func:`scan_context`): what of a trained phrasing may name
    a structure ("the left cerebellar cortex in brain MRI" has no "brain", so "left cerebral cortex", whose
    "cerebral" normalises to "brain", is not half of it)."""
    context = scan_context(words)
    return {w for i, w in enumerate(words) if i not in context}


#: words that join two structures ("liver and heart", "kidney or adrenal", "aorta plus IVC")
CONNECTIVES = frozenset({"and", "or", "plus"})
