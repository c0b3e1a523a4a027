"""ModelVocabulary: the checkpoint record it reads and writes, and what prediction asks of it (no encoder needed for
trained phrasings)."""
import numpy as np
import pytest

from nnunetv2_medals.datasets.phantom import phantom_dataset_json
from nnunetv2_medals.datasets.text_prompted import parse_text_prompted_dataset
from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.vocabulary import ModelVocabulary, VocabularyTarget

# the keys MedalSNetwork's extra state has held since the first checkpoints: old models must keep loading
STATE_KEYS = ["text_encoder", "modality", "targets", "phrasings", "phrasing_embeddings", "target_extent_mm",
              "target_side_mm"]


def _vocabulary():
    targets = (VocabularyTarget("left kidney", (1,), False, False, ("left kidney", "kidney on the left")),
               VocabularyTarget("lymph node", (4,), True, False, ("lymph node",)),
               VocabularyTarget("liver", (2, 3), False, True, ("liver", "whole liver")))
    phrasings = ["left kidney", "kidney on the left", "lymph node", "liver", "whole liver"]
    embeddings = np.array([[1, 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0, 1], [0, 0.2, 1]], np.float32)
    # a recorded encoder folder that does not exist: any attempt to load it fails the test
    return ModelVocabulary(targets, phrasings, embeddings, {"id": "enc@1", "dim": 3, "path": "/nonexistent"}, "CT",
                           {"lymph node": [6.0, 8.0, 8.0]}, {"left kidney": [-61.5, -48.0]})


def test_state_round_trip_keeps_the_checkpoint_format():
    vocabulary = _vocabulary()
    state = vocabulary.to_state()
    assert list(state) == STATE_KEYS
    assert state["targets"][2] == {"name": "liver", "label_values": [2, 3], "instance": False, "is_region": True,
                                   "phrasings": ["liver", "whole liver"]}
    assert state["phrasing_embeddings"].dtype == np.float32
    again = ModelVocabulary.from_state(state)
    assert again.targets == vocabulary.targets and again.phrasings == vocabulary.phrasings
    assert np.array_equal(again.phrasing_embeddings, vocabulary.phrasing_embeddings)
    assert again.target_extent_mm == vocabulary.target_extent_mm and again.modality == "CT"
    assert again.target_side_mm == {"left kidney": [-61.5, -48.0]}
    older = {k: v for k, v in state.items() if k != "target_extent_mm"}     # checkpoints before dynamic resampling
    assert ModelVocabulary.from_state(older).target_extent_mm == {}
    older = {k: v for k, v in state.items() if k != "target_side_mm"}       # checkpoints before the side guard
    assert ModelVocabulary.from_state(older).target_side_mm == {}


def test_training_views_follow_the_targets():
    vocabulary = _vocabulary()
    assert vocabulary.target_phrasings == [[0, 1], [2], [3, 4]]
    assert np.array_equal(vocabulary.class_embeddings, vocabulary.phrasing_embeddings[[0, 2, 3]])
    similarity = vocabulary.target_similarity
    assert similarity.shape == (3, 3) and np.allclose(np.diag(similarity), 1)


def test_trained_phrasings_embed_from_the_checkpoint_and_find_their_target():
    vocabulary = _vocabulary()
    out = vocabulary.embed(["lymph node", "left kidney"])
    assert out.dtype == np.float32 and np.array_equal(out, vocabulary.phrasing_embeddings[[2, 0]])
    _, matches = vocabulary.resolve(["kidney on the left", "whole liver"])
    assert [m.meant_target() for m in matches] == ["left kidney", "liver"]
    assert vocabulary.target_extent("lymph node").tolist() == [6.0, 8.0, 8.0]
    assert vocabulary.target_extent("liver") is None and vocabulary.target_extent(None) is None
    with pytest.raises(MedalSInputError, match="/nonexistent"):
        vocabulary.embed(["a phrasing never trained"])    # needs the recorded encoder, which is not there


def test_embedding_a_dataset_refuses_another_encoder(text_encoder):
    ds = parse_text_prompted_dataset(phantom_dataset_json(3), "dataset.json")
    record = {"id": "some-other-encoder@0", "dim": text_encoder.dim, "path": None}
    with pytest.raises(MedalSInputError, match="medals.text_encoder.id"):
        ModelVocabulary.embed_targets(ds.targets, ds.modality, record, "MedalSPlansCPU.json")
    vocabulary = ModelVocabulary.embed_targets(ds.targets, ds.modality, {"id": text_encoder.id, "dim": text_encoder.dim,
                                                                         "path": None})
    assert vocabulary.phrasings == ds.all_phrasings()
    assert vocabulary.phrasing_embeddings.shape == (len(ds.all_phrasings()), text_encoder.dim)
    assert [t.name for t in vocabulary.targets] == ds.target_names


def test_a_model_whose_encoder_folder_stayed_on_another_machine_says_what_to_copy():
    with pytest.raises(MedalSInputError) as info:
        _vocabulary().embed(["a phrasing never trained"])
    message = str(info.value)
    assert info.value.file == "/nonexistent" and "'enc@1'" in message and "--encoder DIR" in message
    assert "\n" not in message
