"""Prompt JSON: both forms load into typed objects; every mistake is one error naming file and field."""
import json

import pytest

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.text_prompts.prompt_file import Prompt, load_prompt_file, parse_prompt_file, prompt_schema


def _write(tmp_path, obj, name="prompts.json"):
    path = tmp_path / name
    path.write_text(json.dumps(obj))
    return path


def test_our_form_with_cases_masks_and_instances(tmp_path):
    (tmp_path / "hint.nii.gz").write_bytes(b"x")
    path = _write(tmp_path, {
        "modality": "mr",
        "prompts": [{"text": " left kidney ", "label": 1}, {"text": "lesion", "label": 2, "instance": True},
                    {"text": "spleen", "label": 3, "mask": "hint.nii.gz"}],
        "cases": {"case_7": {"prompts": [{"text": "liver", "label": 9}]}}})
    pf = load_prompt_file(path)
    assert pf.modality == "MRI"
    assert pf.prompts[0] == Prompt("left kidney", 1)
    assert pf.prompts[1].instance and pf.prompts[2].mask == tmp_path / "hint.nii.gz"
    assert pf.prompts_for("case_7") == (Prompt("liver", 9),)
    assert pf.prompts_for("other") == pf.prompts


def test_challenge_form():
    pf = parse_prompt_file({"2": "Right kidney in abdominal CT", "1": ["Liver", "Liver in CT"], "instance_label": 1})
    assert [(p.label, p.text, p.instance) for p in pf.prompts] == [(1, "Liver", True),
                                                                   (2, "Right kidney in abdominal CT", True)]


@pytest.mark.parametrize("obj, field, words", [
    ({"prompts": [{"text": "a", "label": "1"}]}, "prompts[0].label", "not of type 'integer'"),
    ({"prompts": [{"text": "a", "label": 1, "colour": "red"}]}, "prompts[0].colour", "unknown field"),
    ({"prompts": [{"text": "a", "label": 1}], "extra": 1}, "extra", "unknown field"),
    ({"prompts": [{"text": "a", "label": 1}, {"text": "b", "label": 1}]}, "prompts[1].label", "duplicate label"),
    ({"prompts": [{"text": "a", "label": 300}]}, "prompts[0].label", "maximum"),
    ({"prompts": [{"text": "a", "label": 1, "mask": "nope.nii.gz"}]}, "prompts[0].mask", "does not exist"),
    ({"prompts": []}, "prompts", "should be non-empty"),
    ({"cases": {"c1": {"prompts": [{"text": "a", "label": 1}, {"text": "b", "label": 1}]}}},
     "cases.c1.prompts[1].label", "duplicate label"),
    ({"1": 3}, "1", "expected a phrasing"),
    ({"1": "liver", "instance_label": 2}, "instance_label", ""),
    ({"prompts": [{"text": "a", "label": 1}], "modality": "XRAY"}, "modality", ""),
])
def test_bad_prompt_files(tmp_path, obj, field, words):
    path = _write(tmp_path, obj)
    with pytest.raises(MedalSInputError) as info:
        load_prompt_file(path)
    assert info.value.file == str(path) and info.value.field == field
    assert words in str(info.value)


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(MedalSInputError, match="prompt file not found"):
        load_prompt_file(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("[1,")
    with pytest.raises(MedalSInputError, match="not valid JSON"):
        load_prompt_file(tmp_path / "bad.json")


def test_schema_ships_with_the_package_and_is_a_valid_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(prompt_schema())
    validator = jsonschema.Draft202012Validator(prompt_schema())
    assert validator.is_valid({"prompts": [{"text": "liver", "label": 1}]})
    assert validator.is_valid({"1": "liver", "instance_label": 0})
    assert not validator.is_valid({"prompts": [{"text": "liver"}]})


@pytest.mark.parametrize("text, field", [("   ", "prompts[0].text"), ("\t\n", "prompts[0].text"),
                                         ("🫘🫘", "prompts[0].text"), ("123 !", "prompts[0].text")])
def test_a_prompt_without_letters_is_refused_after_stripping(tmp_path, text, field):
    """Issue #19: a whitespace-only prompt passed the schema (length checked before stripping) and segmented."""
    path = _write(tmp_path, {"prompts": [{"text": text, "label": 1}]})
    with pytest.raises(MedalSInputError, match=f"prompts.json: field '{field.replace('[', '.').replace(']', '.')}': "
                                               f".* holds no letters"):
        load_prompt_file(path)
    with pytest.raises(MedalSInputError, match="field '1': .* holds no letters"):
        parse_prompt_file({"1": text}, path)


def test_prompt_texts_are_stripped_and_any_script_is_a_text():
    prompts = parse_prompt_file({"prompts": [{"text": "  left kidney \n", "label": 1}, {"text": "左肾", "label": 2}]})
    assert [p.text for p in prompts.prompts] == ["left kidney", "左肾"]
