"""One error type for bad user input, so every message names the file and the field."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from os import PathLike
from typing import Iterator


class MedalSInputError(ValueError):
    """Bad user input. ``str(err)`` is one sentence: ``<file>: field '<field>': <what is wrong and what is valid>``."""

    def __init__(self, file: str | PathLike, field: str, message: str):
        self.file = str(file)
        self.field = field
        self.reason = message
        super().__init__(f"{self.file}: field '{field}': {message}")


#: set to 1 to see the traceback behind a one-line command-line error
DEBUG_ENV = "MEDALS_DEBUG"


@contextmanager
def one_line_errors(*ordinary: type[BaseException]) -> Iterator[None]:
    """Command-line entry points: a :class:`MedalSInputError` (and the ``ordinary`` exception types) becomes one
    line ``error: …`` on stderr and exit code 1; anything else is a bug and keeps its traceback. ``MEDALS_DEBUG=1``
    shows the traceback of ours too."""
    try:
        yield
    except (MedalSInputError, *ordinary) as e:
        if os.environ.get(DEBUG_ENV, "") not in ("", "0"):
            raise
        sys.exit(f"error: {e}")
