"""Free text against a model's vocabulary: canonical matches, side correction, far-prompt warnings."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.prompt_matching import PromptMatch, VocabularyMatcher

PHANTOM = [("kidneys", ["kidneys", "both kidneys"]), ("liver", ["liver", "the whole liver"]),
           ("left kidney", ["left kidney", "kidney, left"]), ("right kidney", ["right kidney", "kidney, right"]),
           ("liver parenchyma", ["liver parenchyma"]), ("liver tumour", ["liver tumour", "hepatic lesion"]),
           ("spleen", ["spleen", "splenic tissue"])]
BRAIN = [("left hippocampus", ["left hippocampus", "hippocampus on the left"]),
         ("right hippocampus", ["right hippocampus", "hippocampus on the right"]),
         ("left lateral ventricle", ["left lateral ventricle"]), ("right lateral ventricle", ["right lateral ventricle"]),
         ("right caudate nucleus", ["right caudate nucleus"]), ("left caudate nucleus", ["left caudate nucleus"])]

ADRENALS = [("left adrenal gland", ["left adrenal gland", "left suprarenal gland"]),
            ("right adrenal gland", ["right adrenal gland", "right suprarenal gland"]),
            ("left rib 11", ["left rib 11", "left eleventh rib"]), ("left rib 12", ["left rib 12", "left twelfth rib"])]

FREESURFER = BRAIN + [("left globus pallidus", ["left globus pallidus", "globus pallidus, left"]),
                      ("right globus pallidus", ["right globus pallidus"]),
                      ("left nucleus accumbens", ["left nucleus accumbens"]),
                      ("right nucleus accumbens", ["right nucleus accumbens"]),
                      ("left cerebellar cortex", ["left cerebellar cortex"]),
                      ("right cerebellar cortex", ["right cerebellar cortex"]),
                      ("left amygdala", ["left amygdala"]), ("right amygdala", ["right amygdala"]),
                      ("both amygdalae", ["both amygdalae"])]
SPINE_AND_LUNGS = ADRENALS + [("left ribs", ["left ribs", "ribs on the left"]),
                              ("T12 vertebra", ["T12 vertebra", "twelfth thoracic vertebra"]),
                              ("left lung upper lobe", ["left lung upper lobe", "lung upper lobe, left"]),
                              ("left lung lower lobe", ["left lung lower lobe", "lung lower lobe, left"]),
                              ("right lung lower lobe", ["right lung lower lobe", "lung lower lobe, right"]),
                              ("left lung", ["left lung"]), ("thoracic vertebrae", ["thoracic vertebrae"]),
                              ("L5 vertebra", ["L5 vertebra", "fifth lumbar vertebra"]),
                              ("lumbar vertebrae", ["lumbar vertebrae"])]


def _matcher(targets, encoder, modality):
    phrasings = [p for _, ps in targets for p in ps]
    return VocabularyMatcher(targets, phrasings, encoder.encode(phrasings), modality)


@pytest.mark.parametrize("targets,modality,prompt,expected", [
    (PHANTOM, "CT", "the left-sided kidney", "left kidney"),
    (PHANTOM, "CT", "dexter kidney", "right kidney"),
    (PHANTOM, "CT", "Lt kidney", "left kidney"),
    (PHANTOM, "CT", "the kidney on the right side", "right kidney"),
    (PHANTOM, "CT", "the tumour inside the liver", "liver tumour"),
    (PHANTOM, "CT", "both kidneys", "kidneys"),
    (BRAIN, "MRI", "the hippocampus on the right side", "right hippocampus"),
    (BRAIN, "MRI", "right-sided lateral ventricle", "right lateral ventricle"),
    (BRAIN, "MRI", "the right caudate", "right caudate nucleus"),
    (BRAIN + [("both hippocampi", ["both hippocampi", "hippocampus"])], "MRI", "R hippocampus", "right hippocampus"),
    (PHANTOM, "CT", "L kidney", "left kidney"),                      # report shorthand
    (PHANTOM, "CT", "R/O liver lesion", "liver tumour"),             # "R/O" is no side
    (PHANTOM, "CT", "liver mets", "liver tumour"),                   # report shorthand for metastases
    (ADRENALS, "CT", "left suprarenal", "left adrenal gland"),       # words of one target's phrasings
    (ADRENALS, "CT", "the suprarenal on the right", "right adrenal gland"),
    # FreeSurfer's names (aseg), adjectives and Latin plurals
    (FREESURFER, "MRI", "Left-Pallidum", "left globus pallidus"),
    (FREESURFER, "MRI", "Left-Accumbens-area", "left nucleus accumbens"),
    (FREESURFER, "MRI", "Left-Cerebellum-Cortex", "left cerebellar cortex"),
    (FREESURFER, "MRI", "left hippocampal formation", "left hippocampus"),
    (FREESURFER, "MRI", "right amygdaloid body", "right amygdala"),
    (FREESURFER, "MRI", "bilateral amygdala", "both amygdalae"),
    (FREESURFER, "MRI", "lh hippocampus", "left hippocampus"),           # FreeSurfer's hemisphere prefixes
    (FREESURFER + [("both cerebellar hemispheres", ["cerebellar hemispheres"])], "MRI",
     "left hemisphere hippocampus", "left hippocampus"),                  # a side phrase, not a structure word
    # numbers as words and European vertebra names; a canonical class that is only part of what the prompt says
    (SPINE_AND_LUNGS, "CT", "rib eleven left", "left rib 11"),        # was the region of all left ribs
    (SPINE_AND_LUNGS, "CT", "Th12", "T12 vertebra"),
    (SPINE_AND_LUNGS, "CT", "thoracic vertebra 12", "T12 vertebra"),
    (SPINE_AND_LUNGS, "CT", "lower lobe of the left lung", "left lung lower lobe"),
    # a count is no number of one structure
    (SPINE_AND_LUNGS, "CT", "the five lumbar vertebrae", "lumbar vertebrae"),
    (SPINE_AND_LUNGS, "CT", "all twelve thoracic vertebrae", "thoracic vertebrae"),
    (SPINE_AND_LUNGS, "CT", "the twelve ribs on the left", "left ribs"),
    # a contrast phase names no vessel
    (PHANTOM, "CT", "liver in the arterial phase", "liver"),
    (PHANTOM, "CT", "venous phase spleen", "spleen"),
    (PHANTOM + [("portal vein", ["portal vein"])], "CT", "liver, portal venous phase", "liver"),
    # words that describe the scan are no structure, though a trained phrasing uses one ("abdominal aorta")
    (PHANTOM + [("aorta", ["aorta", "abdominal aorta"])], "CT", "left kidney on abdominal CT", "left kidney"),
    (PHANTOM, "CT", "kidneys in a whole-body scan with contrast", "kidneys"),
    # ... unless a trained target's name uses it
    ([("abdominal aorta", ["abdominal aorta"]), ("thoracic aorta", ["thoracic aorta"])], "CT",
     "aorta, abdominal part", "abdominal aorta"),
    # the same words in another order; a scan's region and "and" name no structure
    (SPINE_AND_LUNGS, "CT", "the left upper lung lobe", "left lung upper lobe"),
    (SPINE_AND_LUNGS + [("spinal cord", ["spinal cord"])], "CT", "spinal cord on thoracic computed tomography",
     "spinal cord"),
    (PHANTOM + [("portal vein and splenic vein", ["portal vein and splenic vein"])], "CT",
     "liver on a chest and abdomen CT", "liver"),
    (SPINE_AND_LUNGS + [("spinal cord", ["spinal cord"])], "CT", "spinal cord in head and neck CT", "spinal cord"),
    (PHANTOM + [("inferior vena cava", ["inferior vena cava", "IVC"])], "CT", "inferior vena cava (IVC)",
     "inferior vena cava"),                                               # an abbreviation after its name
    # report abbreviations
    (SPINE_AND_LUNGS, "CT", "LUL", "left lung upper lobe"),
    (PHANTOM + [("gallbladder", ["gallbladder", "gall bladder"])], "CT", "GB", "gallbladder"),
])
def test_unseen_wordings_find_their_trained_target(text_encoder, targets, modality, prompt, expected):
    (found,) = _matcher(targets, text_encoder, modality).match([prompt], text_encoder.encode([prompt]))
    assert found.target == expected and found.method == "canonical"


@pytest.mark.parametrize("prompt", ["left kidney and right kidney", "lymph node near the left kidney",
                                    "left kidney and spleen", "right", "r",
                                    # a connective before a structure the target is not, known to the model
                                    # or not
                                    "left kidney plus both kidneys", "liver and heart", "spleen or pancreas",
                                    "left and right kidney and right heart"])
def test_prompts_that_say_more_than_one_target_are_not_reduced_to_it(text_encoder, prompt):
    targets = PHANTOM + [("lymph node", ["lymph node", "enlarged lymph nodes"])]
    (found,) = _matcher(targets, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]))
    assert found.target is None and found.method == "nearest embedding"


def test_the_structure_a_prompt_asks_for_and_nothing_more(text_encoder):
    """What the side guard may cut: a matched target, or an unmatched prompt's nearest target when the prompt
    names nothing that only other targets name."""
    targets = PHANTOM + [("lymph node", ["lymph node", "enlarged lymph nodes"])]
    matcher = _matcher(targets, text_encoder, "CT")
    texts = ["the kidney on the left side", "left kidney and spleen", "lymph node near the left kidney",
             "left kidney and right kidney"]
    found = {t: matcher.structure_of(m) for t, m in zip(texts, matcher.match(texts, text_encoder.encode(texts)))}
    assert found["the kidney on the left side"] == "left kidney"
    assert found["left kidney and spleen"] is None and found["lymph node near the left kidney"] is None
    assert found["left kidney and right kidney"] is None
    # an unmatched prompt answered with its own embedding: its nearest target when close and nothing else is named
    near = PromptMatch("the left kidney thing", None, "nearest embedding", "left kidney", "left kidney", 0.7)
    assert matcher.structure_of(near) == "left kidney"
    assert matcher.structure_of(dataclasses.replace(near, cosine=0.5)) is None
    assert matcher.structure_of(dataclasses.replace(near, text="the left kidney with the liver")) is None


def test_far_prompts_are_reported_and_keep_their_own_embedding(text_encoder):
    matcher = _matcher(PHANTOM, text_encoder, "CT")
    texts = ["左肾", "🙂🙂", "spleen"]
    far, emoji, near = matcher.match(texts, text_encoder.encode(texts))
    assert far.target is None and far.warning and "far from" in far.warning
    assert emoji.warning
    assert near.target == "spleen" and near.warning is None and near.cosine > 0.99


def _unit(*values):
    v = np.asarray(values, np.float32)
    return v / np.linalg.norm(v)


def test_a_side_is_never_answered_by_the_other_sides_target():
    """No canonical match ("ren" is no trained word) and the nearest phrasing is the right kidney's: a prompt that
    says left gets the left kidney, one that says nothing keeps its own embedding."""
    targets = [("left kidney", ["left kidney"]), ("right kidney", ["right kidney"]), ("spleen", ["spleen"])]
    embeddings = np.stack([_unit(1, 0.2, 0), _unit(1, -0.2, 0), _unit(0, 0, 1)])
    matcher = VocabularyMatcher(targets, ["left kidney", "right kidney", "spleen"], embeddings, "CT")
    query = np.stack([_unit(1, -0.3, 0)] * 2)
    left, plain = matcher.match(["ren on the left", "ren"], query)
    assert left.nearest_target == "right kidney"
    assert left.target == "left kidney" and left.method == "side corrected"
    assert plain.target is None and plain.method == "nearest embedding"
    raw, = matcher.match(["ren on the left"], query[:1], raw=True)
    assert raw.target is None and raw.method == "raw"


def test_a_structure_the_model_lacks_is_not_side_corrected_into_one_it_has():
    """"left hip" is a class of the challenge's map that no target is: it keeps its own embedding (a warning names
    the class) even though its nearest phrasing is the right kidney's, and the side guard still keeps its answer on
    the left (as the left kidney's counterpart). A wording the map does not know ("ren") is side corrected."""
    targets = [("left kidney", ["left kidney"]), ("right kidney", ["right kidney"]), ("spleen", ["spleen"])]
    embeddings = np.stack([_unit(1, 0.2, 0, 0), _unit(1, -0.2, 0, 0), _unit(0, 0, 1, 0)])
    matcher = VocabularyMatcher(targets, ["left kidney", "right kidney", "spleen"], embeddings, "CT")
    texts = ["Left hip in whole body CT", "L hip", "the left hip in the head and neck CT", "ren on the left"]
    hip, short, _, ren = matcher.match(texts, np.stack([_unit(1, -0.3, 0, 0)] * 4))
    assert hip.nearest_target == "right kidney" and hip.target is None and hip.method == "nearest embedding"
    assert "'left hip'" in hip.warning and "not trained on" in hip.warning and hip.lacked_class == "left hip"
    assert matcher.side_of(hip) == "left" and matcher.structure_of(hip) == "left kidney"
    assert hip.meant_target() is None                # its size and parts are not a kidney's either
    assert short.target is None and short.lacked_class == "left hip"   # report shorthand: "L" is the left side
    assert matcher.structure_of(short) == "left kidney"
    # far from the kidneys and with an "and": still guarded on its side
    (low,) = matcher.match([texts[2]], _unit(1, -0.3, 0, 1.5)[None])
    assert low.nearest_target == "right kidney" and low.cosine < 0.6 and low.target is None
    assert matcher.structure_of(low) == "left kidney"
    assert ren.target == "left kidney" and ren.method == "side corrected"
    # a second structure: the guard must not cut the spleen as the left kidney
    (both,) = matcher.match(["left hip and spleen"], _unit(1, -0.3, 0, 0)[None])
    assert both.lacked_class == "left hip" and matcher.structure_of(both) is None


@pytest.mark.parametrize("prompt,expected", [("left cerebral cortex", None), ("right cerebral cortex", None),
                                             ("left cerebellar cortex in brain MRI", "left cerebellar cortex"),
                                             ("left lateral ventricle in brain MRI", "left lateral ventricle")])
def test_the_scans_body_region_is_no_structure_word(text_encoder, prompt, expected):
    """"in brain MRI" says where the scan was taken: "left cerebral cortex" ("cerebral" reads as "brain") is not half
    of the phrasing "the left cerebellar cortex in brain MRI", and "brain" before "MRI" is not the brain stem's word."""
    targets = BRAIN + [("left cerebellar cortex", ["left cerebellar cortex", "the left cerebellar cortex in brain MRI"]),
                       ("right cerebellar cortex", ["right cerebellar cortex",
                                                    "the right cerebellar cortex in brain MRI"]),
                       ("brain stem", ["brain stem"])]
    (found,) = _matcher(targets, text_encoder, "MRI").match([prompt], text_encoder.encode([prompt]))
    assert found.target == expected


def test_a_sided_structure_the_model_lacks_without_counterpart_is_refused_saying_so():
    targets = [("right kidney", ["right kidney"]), ("spleen", ["spleen"])]
    matcher = VocabularyMatcher(targets, ["right kidney", "spleen"], np.stack([_unit(1, 0), _unit(0, 1)]), "CT")
    with pytest.raises(MedalSInputError, match="asks for 'left hip', which the model was not trained on"):
        matcher.match(["left hip"], _unit(1, 0.1)[None])


@pytest.mark.parametrize("modality,targets,prompt,expected", [
    ("MRI", BRAIN + [("brain stem", ["brain stem", "brainstem"])], "left lateral ventricle", "left lateral ventricle"),
    ("MRI", BRAIN + [("brain stem", ["brain stem", "brainstem"])], "brain stem", "brain stem"),
    ("MRI", BRAIN + [("brain stem", ["brain stem", "brainstem"])], "brain", None),       # the map's "brain"
    ("MRI", BRAIN + [("brain stem", ["brain stem", "brainstem"])], "Left Ventricle", None),  # the heart's
    ("MRI", BRAIN, "left ventricle of the heart", None),
    ("MRI", BRAIN + [("brainstem", ["brainstem"])], "the brain stem", "brainstem"),
    ("MRI", BRAIN + [("third ventricle", ["third ventricle", "3rd ventricle"])], "the third ventricle of the brain",
     "third ventricle"),
    ("CT", ADRENALS + [("both adrenal glands", ["both adrenal glands"])], "left and right lacrimal gland", None),
    ("CT", [("kidneys", ["kidneys", "both kidneys"]), ("liver", ["liver"])], "left and right kidney", "kidneys"),
    ("CT", [("liver tumour", ["liver tumour", "hepatic lesion"]), ("spleen", ["spleen"])], "liver tumuor",
     "liver tumour"),
])
def test_what_the_challenges_map_reads_in_part_does_not_hide_a_target(text_encoder, modality, targets, prompt,
                                                                      expected):
    """The map reads "left lateral ventricle" as the heart's left ventricle and "brain stem" as the brain: a target
    still answers its own name, while the map's full names of classes the model lacks ("brain", "Left Ventricle")
    find none, nor does the heart's ventricle said with more words. "brain stem" written apart is the target
    "brainstem", and "the third ventricle of the brain" the third ventricle. Both sides of a structure that only a
    both-sides target has, and a misspelt target, still match; both lacrimal glands are not both adrenal glands."""
    matcher = _matcher(targets, text_encoder, modality)
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]), encoder_words=text_encoder.whole_words)
    assert found.target == expected
    if expected is None:
        assert found.lacked_class is not None and found.meant_target() is None


@pytest.mark.parametrize("prompt", ["Vertebrae T6", "Vertebrae C1 segmentation in whole body CT",
                                    "Right lacrimal gland in Head and Neck CT imaging",
                                    "Whole body CT showing right middle lung lobe structures",
                                    "Lung involvement by COVID-19 on computed tomography"])
def test_prompts_for_structures_the_model_lacks_are_read_as_none_of_its_targets(text_encoder, prompt):
    """A numbered vertebra is not the trained region of all vertebrae, a lacrimal gland not the adrenal gland, a
    middle lung lobe not the right kidney or "both lungs", a COVID-19 infection not the lungs: the challenge's class
    map knows each as a class no target is, so none is answered with a target's embedding."""
    targets = PHANTOM + ADRENALS + [("the vertebrae", ["the vertebrae", "vertebrae", "vertebral column"]),
                                    ("both lungs", ["both lungs", "the lungs", "lungs"])]
    matcher = _matcher(targets, text_encoder, "CT")
    texts = [prompt, "vertebral column on CT", "the kidney on the left side", "the right suprarenal gland", "lungs"]
    found, *known = matcher.match(texts, text_encoder.encode(texts))
    assert found.target is None and found.method == "nearest embedding" and found.lacked_class is not None
    assert "not trained on" in found.warning or "far from everything" in found.warning
    assert [m.target for m in known] == ["the vertebrae", "left kidney", "right adrenal gland", "both lungs"]


def test_a_side_without_counterpart_is_refused():
    targets = [("right kidney", ["right kidney"]), ("spleen", ["spleen"])]
    matcher = VocabularyMatcher(targets, ["right kidney", "spleen"], np.stack([_unit(1, 0), _unit(0, 1)]), "CT")
    with pytest.raises(MedalSInputError, match="no left counterpart"):
        matcher.match(["ren on the left"], _unit(1, 0.1)[None])


@pytest.mark.parametrize("prompt", ["left kidney cyst", "right renal artery", "cysts of the left kidney",
                                    "left lung nodules", "right renal vein"])
def test_another_kind_of_structure_is_not_the_organ_it_goes_with(text_encoder, prompt):
    """A cyst, vessel or nodule of an organ is not the organ: no canonical match, and a warning says the model
    has no such target."""
    targets = PHANTOM + [("left lung", ["left lung"]), ("right lung", ["right lung"]),
                         ("portal vein", ["portal vein", "hepatic portal vein"])]
    (found,) = _matcher(targets, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]))
    assert found.target is None and found.method == "nearest embedding"
    if "vein" not in prompt:                      # (the portal vein is a vein: no warning for "right renal vein")
        assert "no trained target is one" in found.warning
    assert found.meant_target() is None            # its size and parts are not the organ's
    matcher = _matcher(targets, text_encoder, "CT")
    if "left" in prompt:                          # a lesion is guarded on its organ's side, a vessel is not
        assert matcher.structure_of(found) == found.nearest_target and matcher.side_of(found) == "left"
    if "renal" in prompt:
        assert matcher.structure_of(found) is None
    (kept,) = _matcher(targets, text_encoder, "CT").match(["the portal vein"], text_encoder.encode(["the portal vein"]))
    assert kept.target == "portal vein" and kept.warning is None


@pytest.mark.parametrize("prompt", ["left rib", "suprarenal", "suprarenal gland", "12", "twelfth", "organ"])
def test_words_of_several_targets_phrasings_match_none_of_them(text_encoder, prompt):
    """Ambiguity counts the targets of every side ("suprarenal": left and right; "twelfth": rib 12 and T12), and one
    generic word of a long description is not a match ("organ")."""
    targets = ADRENALS + [("T12 vertebra", ["T12 vertebra", "twelfth thoracic vertebra"]),
                          ("liver", ["liver", "organ in the right upper abdomen"])]
    (found,) = _matcher(targets, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]))
    assert found.target is None and found.method == "nearest embedding"


@pytest.mark.parametrize("prompt", ["R kidney cyst", "right kidney cyst", "kidney cyst (R)"])
def test_a_lesion_the_model_lacks_keeps_its_own_embedding_and_its_side(text_encoder, prompt):
    """No target is a cyst: the prompt is never answered with a kidney's embedding (not even the side-corrected
    one), and the side guard keeps it on the right kidney's side, whichever kidney its embedding is nearest to."""
    matcher = _matcher(PHANTOM, text_encoder, "CT")
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]))
    assert found.target is None and found.method == "nearest embedding" and found.other_kind
    assert found.meant_target() is None and "other_kind" not in found.to_json()
    assert matcher.side_of(found) == "right" and matcher.structure_of(found) == "right kidney"


@pytest.mark.parametrize("prompt", ["L-spine erector spinae", "Rückenmuskulatur links", "l'autochtone droit",
                                    "R/O left kidney lesion", "lóbulo renal"])
def test_letters_inside_tokens_are_no_side(text_encoder, prompt):
    """Only a lone L/R is report shorthand: not the L of "L-spine", an elision ("l'"), "R/O", or a letter split off
    a word with an accent ("Rückenmuskulatur", "lóbulo")."""
    from nnunetv2_medals.text_prompts.side_wordings import letter_side

    assert letter_side(prompt) is None
    assert letter_side("kidney (R)") == "right" and letter_side("hippocampus L") == "left"


@pytest.mark.parametrize("prompt,expected", [("left ribs eleven, twelve", None), ("left ribs eleven or twelve", None),
                                             ("the left twelve ribs", "left ribs")])
def test_a_list_of_numbers_is_not_its_first_number(text_encoder, prompt, expected):
    (found,) = _matcher(SPINE_AND_LUNGS, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]))
    assert found.target == expected


@pytest.mark.parametrize("prompt,side", [("L kidney", "left"), ("kidney, right", "right"), ("R/O liver lesion", None),
                                         ("kidneys", None), ("left kidney and spleen", "left")])
def test_the_side_a_prompt_names_includes_report_shorthand(text_encoder, prompt, side):
    """What the side guard keeps an answer to: side words, or a single L/R matched to a target of that side."""
    matcher = _matcher(PHANTOM, text_encoder, "CT")
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]))
    assert matcher.side_of(found) == side


@pytest.mark.parametrize("prompt,expected,read_as", [
    ("kidny left", "left kidney", "'kidny' as 'kidney'"),
    ("the splen", "spleen", "'splen' as 'spleen'"),
    ("liver tumuor", "liver tumour", "'tumuor' as 'tumor'"),
])
def test_a_misspelt_word_is_read_as_the_one_trained_word_it_is_close_to(text_encoder, prompt, expected, read_as):
    matcher = _matcher(PHANTOM, text_encoder, "CT")
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]), encoder_words=text_encoder.whole_words)
    assert found.target == expected and found.method == "canonical" and read_as in found.warning


@pytest.mark.parametrize("prompt,expected", [("L hipocampus", "left hippocampus"),     # shorthand side kept
                                             ("hipocampus on the right", "right hippocampus")])
def test_a_misspelt_prompt_keeps_its_side(text_encoder, prompt, expected):
    targets = BRAIN + [("both hippocampi", ["both hippocampi", "hippocampus"])]
    matcher = _matcher(targets, text_encoder, "MRI")
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]), encoder_words=text_encoder.whole_words)
    assert found.target == expected


@pytest.mark.parametrize("targets,prompt", [
    ([("ileum", ["ileum"]), ("liver", ["liver"])], "ilium"),                   # a real word, and not one letter off
    ([("gallbladder", ["gallbladder", "gall bladder"]), ("liver", ["liver"])], "bladder"),   # another organ
    ([("right lung lower lobe", ["right lung lower lobe"]), ("left lung lower lobe", ["left lung lower lobe"])],
     "the right lung"),                                                         # a whole is not its part
    ([("gallbladder", ["gallbladder", "gall bladder"]), ("liver", ["liver"])], "ladder"),  # an English word
])
def test_another_structure_is_not_read_as_a_target_it_resembles(text_encoder, targets, prompt):
    (found,) = _matcher(targets, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]),
                                                           encoder_words=text_encoder.whole_words)
    assert found.target is None and found.method == "nearest embedding"


def _adrenals_with_pair(text_encoder):
    targets = ADRENALS + [("both adrenal glands", ["both adrenal glands"])]
    phrasings = [p for _, ps in targets for p in ps]
    labels = [(1,), (2,), (3,), (4,), (1, 2)]
    return VocabularyMatcher(targets, phrasings, text_encoder.encode(phrasings), "CT", labels), targets


@pytest.mark.parametrize("prompt", ["both suprarenal glands", "suprarenal glands bilaterally",
                                    "left and right suprarenal gland"])
def test_both_sides_of_a_structure_are_the_region_of_its_two_targets(text_encoder, prompt):
    matcher, targets = _adrenals_with_pair(text_encoder)
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]))
    assert found.target == "both adrenal glands" and found.method == "canonical"
    # without label values the matcher cannot tell which region is the pair: the prompt keeps its own embedding
    (unknown,) = _matcher(targets, text_encoder, "CT").match([prompt], text_encoder.encode([prompt]))
    assert unknown.target is None


@pytest.mark.parametrize("prompt", ["left suprarenal gland, both limbs", "both limbs of the right suprarenal gland"])
def test_both_next_to_one_side_is_not_both_sides(text_encoder, prompt):
    matcher, _ = _adrenals_with_pair(text_encoder)
    (found,) = matcher.match([prompt], text_encoder.encode([prompt]))
    assert found.target != "both adrenal glands"


def test_respelling_never_makes_a_side_and_leaves_real_words_alone(text_encoder):
    from nnunetv2_medals.text_prompts.spelling import respellings, spelling_candidates
    candidates = spelling_candidates({"right", "left", "inferior", "vena", "cava", "kidney", "lobe", "bladder"})
    # "rightt" is one letter from "right" (0.91) and "leftt" from "left", but a typo never makes a side; the
    # encoder knows "interior", "bright", "ladder" as words; "globe" is one letter from a 4-letter word
    words = ["rightt", "leftt", "interior", "bright", "ladder", "globe", "kidny"]
    assert respellings(words, candidates, text_encoder.whole_words) == {"kidny": "kidney"}
    assert "interior" in text_encoder.whole_words and "kidny" not in text_encoder.whole_words
