"""The side guard inside prediction (smoke model): the checkpoint records where sided targets lie, and a prompt that
says left keeps only what lies on the left even when the network draws both sides."""
import numpy as np
import SimpleITK as sitk
import torch

from nnunetv2_medals.geometry import canonical_image
from nnunetv2_medals.inference.predictor import load_model
from nnunetv2_medals.text_prompts.prompt_file import Prompt
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary
from tests.helpers import store_in_voxel_order


def test_the_checkpoint_records_where_sided_targets_lie(smoke_model):
    recorded = ModelVocabulary.from_checkpoint(smoke_model["dir"] / "fold_0" / "checkpoint_final.pth").target_side_mm
    # phantom kidneys: 22 mm half-width, about 55 mm either side of the spine; the patient's right is +
    assert -100 < recorded["left kidney"][0] < recorded["left kidney"][1] < -15
    assert 15 < recorded["right kidney"][0] < recorded["right kidney"][1] < 100
    assert "kidneys" not in recorded and "liver parenchyma" not in recorded


def _predict_with_both_kidneys_drawn(predictor, image, props, kidneys, text):
    """Predict ``text`` with the network's answer replaced by both kidneys (p = 0.9): a model that cannot tell
    the sides apart."""
    predictor._probabilities = lambda data, spatial: spatial * 0.9
    data, properties, masks = predictor.preprocess(image, props, [Prompt(text, 1)], [kidneys])
    # the midline goes through nnU-Net's crop (zero margins) and resampling onto the grid
    assert properties["bbox_used_for_cropping"][2][0] == 3
    assert data.shape[3] != properties["shape_after_cropping_and_before_resampling"][2]
    return predictor.predict_preprocessed(data, properties, [Prompt(text, 1)], masks)


def _canonical_case(image_file, label_file, order):
    """The test case stored in voxel ``order``, read canonically, with 3 zero voxels on both left-right ends (nnU-Net
    crops them off: the midline must survive the crop)."""
    image, props = canonical_image(store_in_voxel_order(sitk.ReadImage(str(image_file)), order))
    seg = canonical_image(store_in_voxel_order(sitk.ReadImage(str(label_file)), order))[0][0]
    pad = ((0, 0), (0, 0), (3, 3))
    return np.pad(image, ((0, 0), *pad)), props, np.pad(seg, pad)


def test_a_prompt_that_says_left_is_not_answered_on_the_right(preprocessed_phantom, smoke_model):
    image_file = sorted((preprocessed_phantom["raw"] / "imagesTs").iterdir())[0]
    label_file = preprocessed_phantom["raw"] / "labelsTs" / image_file.name.replace("_0000", "")
    labels = {"left kidney": 1, "right kidney": 2}
    guarded = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"))
    unguarded = load_model(str(smoke_model["dir"]), (0,), device=torch.device("cpu"), side_guard=False)
    for order in ("LPS", "RAS", "permuted"):      # the same scan stored in other voxel orders
        image, props, seg = _canonical_case(image_file, label_file, order)
        kidneys = np.isin(seg, list(labels.values()))
        for text, own, other in (("the kidney on the left side", "left kidney", "right kidney"),
                                 ("right kidney", "right kidney", "left kidney"),
                                 ("L kidney", "left kidney", "right kidney")):     # report shorthand
            drawn = _predict_with_both_kidneys_drawn(unguarded, image, props, kidneys, text).label_map == 1
            result = _predict_with_both_kidneys_drawn(guarded, image, props, kidneys, text)
            kept = result.label_map == 1
            # unguarded, the prompt is answered on both kidneys; guarded, on its own side only, all of it
            assert drawn[seg == labels[other]].mean() > 0.5 and drawn[seg == labels[own]].mean() > 0.5, (order, text)
            assert not kept[seg == labels[other]].any(), (order, text)
            assert np.array_equal(kept[seg == labels[own]], drawn[seg == labels[own]]), (order, text)
            assert result.summary["prompts"][0]["side_guard"]["removed_voxels"] > 0
        # no side in the words, or more than one target's words (its own embedding answers it): nothing is cut
        for text in ("kidneys", "left kidney and liver"):
            result = _predict_with_both_kidneys_drawn(guarded, image, props, kidneys, text)
            both = _predict_with_both_kidneys_drawn(unguarded, image, props, kidneys, text)
            assert np.array_equal(result.label_map, both.label_map) and "side_guard" not in result.summary["prompts"][0]
            assert (result.label_map == 1)[seg == 2].mean() > 0.5 and (result.label_map == 1)[seg == 1].mean() > 0.5
