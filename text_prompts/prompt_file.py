"""Prompt JSON for prediction: validated with the shipped JSON Schema, returned as typed objects.

Our form::

    {"modality": "CT",
     "prompts": [{"text": "left kidney", "label": 1},
                 {"text": "liver tumour", "label": 2, "instance": true},
                 {"text": "spleen", "label": 3, "mask": "spleen_hint.nii.gz"}],
     "cases": {"case_007": {"prompts": [...]}}}

The BiomedSegFM challenge form ``{"1": "Liver in abdominal CT", "2": "...", "instance_label": 0}`` is accepted too
(a list of phrasings takes its first). Label values are what the output label map holds; they must be unique.
Prompt texts are stripped before validation; a text without a single letter is an error.
"""
from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Mapping

import jsonschema

from nnunetv2_medals.errors import MedalSInputError
from nnunetv2_medals.io_utils import read_json
from nnunetv2_medals.paths import canonical_modality


@dataclass(frozen=True)
class Prompt:
    """One prompt: ``text`` is segmented and written as ``label``; ``mask`` is an optional spatial prompt."""

    text: str
    label: int
    instance: bool = False
    mask: Path | None = None


@dataclass(frozen=True)
class PromptFile:
    source: Path
    prompts: tuple[Prompt, ...]
    cases: Mapping[str, tuple[Prompt, ...]] = field(default_factory=dict)
    modality: str | None = None

    def prompts_for(self, case_id: str) -> tuple[Prompt, ...]:
        """The case's own prompts if the file lists the case, else the file's default prompts."""
        prompts = self.cases.get(case_id, self.prompts)
        if not prompts:
            raise MedalSInputError(self.source, "prompts", f"no prompts for case {case_id!r}; add top-level "
                                                           f"'prompts' or an entry under 'cases'")
        return prompts


@functools.lru_cache(maxsize=1)
def prompt_schema() -> dict:
    return json.loads(resources.files("nnunetv2_medals.text_prompts").joinpath("prompt_schema.json").read_text())


def _json_path(parts) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "<root>"


def _validate(obj: Any, schema_def: str, source: Path) -> None:
    schema = prompt_schema()
    sub = {"$schema": schema["$schema"], "$defs": schema["$defs"], "$ref": f"#/$defs/{schema_def}"}
    validator = jsonschema.Draft202012Validator(sub)
    error = jsonschema.exceptions.best_match(validator.iter_errors(obj))
    if error is None:
        return
    if error.validator == "additionalProperties" and isinstance(error.instance, dict):
        allowed = set(error.schema.get("properties", {}))
        extra = [k for k in error.instance if k not in allowed and not
                 any(re.match(p, k) for p in error.schema.get("patternProperties", {}))]
        if extra:
            raise MedalSInputError(source, _json_path([*error.absolute_path, extra[0]]),
                                   f"unknown field; allowed here: {', '.join(sorted(allowed)) or 'none'}")
    message = error.message
    if error.validator == "oneOf" and "description" in error.schema:
        message = f"{error.instance!r} is not valid; expected {error.schema['description']}"
    raise MedalSInputError(source, _json_path(error.absolute_path), message)


def _checked_text(text: Any, source: Path, where: str) -> Any:
    """A prompt text stripped, refused when it holds no letter (whitespace, digits, punctuation, emoji only: it
    names nothing); non-strings are left for the schema to report."""
    if not isinstance(text, str):
        return text
    if not any(ch.isalpha() for ch in text):
        raise MedalSInputError(source, where, f"{text!r} holds no letters; a prompt names a structure in words, "
                                              f"e.g. \"left kidney\"")
    return text.strip()


def _stripped_texts(obj: dict, source: Path) -> dict:
    """A copy of a loaded prompt JSON (either form) with every prompt text stripped and checked
    (:func:`_checked_text`), so the schema's length rules see the text as it will be used."""
    def prompt_list(items, where):
        if not isinstance(items, list):
            return items
        return [{**item, "text": _checked_text(item["text"], source, f"{where}[{i}].text")}
                if isinstance(item, dict) and "text" in item else item for i, item in enumerate(items)]

    out = dict(obj)
    if "prompts" in obj or "cases" in obj:
        if "prompts" in obj:
            out["prompts"] = prompt_list(obj["prompts"], "prompts")
        if isinstance(obj.get("cases"), dict):
            out["cases"] = {case: ({**spec, "prompts": prompt_list(spec["prompts"], f"cases.{case}.prompts")}
                                   if isinstance(spec, dict) and "prompts" in spec else spec)
                            for case, spec in obj["cases"].items()}
        return out
    for key, value in obj.items():
        if key.isdigit():
            out[key] = ([_checked_text(v, source, f"{key}[{i}]") for i, v in enumerate(value)]
                        if isinstance(value, list) else _checked_text(value, source, key))
    return out


def _parse_prompt_list(items: list, source: Path, where: str) -> tuple[Prompt, ...]:
    prompts = []
    seen: dict[int, int] = {}
    for i, item in enumerate(items):
        label = item["label"]
        if label in seen:
            raise MedalSInputError(source, f"{where}[{i}].label", f"duplicate label value {label} (also used by "
                                                                  f"{where}[{seen[label]}]); each prompt needs its "
                                                                  f"own value")
        seen[label] = i
        mask = None
        if "mask" in item:
            mask = Path(item["mask"])
            mask = mask if mask.is_absolute() else (source.parent / mask)
            if not mask.is_file():
                raise MedalSInputError(source, f"{where}[{i}].mask", f"mask file {str(mask)!r} does not exist")
        prompts.append(Prompt(item["text"].strip(), label, bool(item.get("instance", False)), mask))
    return tuple(prompts)


def parse_prompt_file(obj: Any, source: str | Path = "<prompts>") -> PromptFile:
    """Validate a loaded prompt JSON object (either form) and return a :class:`PromptFile`."""
    source = Path(source)
    if not isinstance(obj, dict):
        raise MedalSInputError(source, "<root>", "must be a JSON object")
    obj = _stripped_texts(obj, source)
    modality = canonical_modality(obj["modality"], source) if isinstance(obj.get("modality"), str) else None
    if "prompts" in obj or "cases" in obj:
        _validate(obj, "medals", source)
        defaults = _parse_prompt_list(obj.get("prompts", []), source, "prompts")
        cases = {case: _parse_prompt_list(spec["prompts"], source, f"cases.{case}.prompts")
                 for case, spec in obj.get("cases", {}).items()}
        return PromptFile(source, defaults, cases, modality)
    _validate(obj, "challenge", source)
    instance = bool(obj.get("instance_label", 0))
    prompts = []
    for key in sorted((k for k in obj if k.isdigit()), key=int):
        label = int(key)
        if not 1 <= label <= 255:
            raise MedalSInputError(source, key, "label values must be between 1 and 255")
        text = obj[key] if isinstance(obj[key], str) else obj[key][0]
        prompts.append(Prompt(text.strip(), label, instance))
    if not prompts:
        raise MedalSInputError(source, "<root>", "holds no prompts; give {\"1\": \"text\", ...} or {\"prompts\": [...]}")
    return PromptFile(source, tuple(prompts), {}, modality)


def load_prompt_file(path: str | Path) -> PromptFile:
    """Read and validate a prompt JSON file; errors name the file and the field."""
    return parse_prompt_file(read_json(path, "prompt file"), path)
