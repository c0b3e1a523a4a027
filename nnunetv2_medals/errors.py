"""One error type for bad user input, so every message names the file and the field."""
from __future__ import annotations

from os import PathLike


class MedalSInputError(ValueError):
    """Bad user input. ``str(err)`` is one sentence: ``<file>: field '<field>': <what is wrong and what is valid>``."""

    def __init__(self, file: str | PathLike, field: str, message: str):
        self.file = str(file)
        self.field = field
        self.reason = message
        super().__init__(f"{self.file}: field '{field}': {message}")
