"""The word lists of text normalisation (:func:`nnunetv2_medals.text_prompts.canonical.normalise`): lesion words,
organ adjectives, side synonyms, number words, irregular plurals, modality keywords and contrast phases."""
from __future__ import annotations

import re

LESION_WORDS = {"tumor", "tumour", "lesion", "cancer", "carcinoma", "neoplasm", "metastasis", "metastase",
                "malignancy", "mass", "met"}  # "met": "mets", report shorthand for metastases
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
                    "cerebellar": "cerebellum", "pallidum": "globus pallidus"}  # FreeSurfer's "Left-Pallidum"
# other words for a side: Latin (anatomical nomenclature) and radiology-report abbreviations
# (single letters are not sides: "R/O", "L-spine", "L1")
SIDE_SYNONYMS = {"bilateral": "both",
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
             "foci": "focus", "thalami": "thalamus", "bronchi": "bronchus", "amygdalae": "amygdala",
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
