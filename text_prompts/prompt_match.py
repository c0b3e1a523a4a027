"""How one prompt was read against a model's vocabulary (:mod:`.prompt_matching` makes them; CASE.json records
them)."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class PromptMatch:
    """How one prompt was read: the trained ``target`` it is answered with (None = its own embedding decides),
    ``method`` (canonical / side corrected / nearest embedding / raw), the nearest trained phrasing and its cosine,
    and a warning for prompts far from the vocabulary."""

    text: str
    target: str | None
    method: str
    nearest_phrasing: str
    nearest_target: str
    cosine: float
    warning: str | None = None
    #: the prompt names a kind of structure (`word_lists.KIND_WORDS`) its nearest target is not ("left kidney cyst")
    other_kind: bool = False
    #: the challenge class the prompt asks for when the model has no target for it ("left hip"; None otherwise)
    lacked_class: str | None = None

    def meant_target(self, min_cosine: float = 0.6) -> str | None:
        """The trained target this prompt stands for: the matched one, else the nearest phrasing's target when it is
        at least ``min_cosine`` close (sizes for dynamic resampling, multi-part structures), else None. A prompt for
        another kind of structure than its nearest target (``other_kind``: "left kidney cysts") stands for no
        target: its size and parts are not the organ's; nor does one for a structure the model lacks
        (``lacked_class``: "Vertebrae T6" is not the size of all vertebrae)."""
        if self.other_kind or self.lacked_class is not None:
            return None
        if self.target is not None:
            return self.target
        if self.nearest_target and self.cosine >= min_cosine:
            return self.nearest_target
        return None

    def to_json(self) -> dict:
        d = asdict(self)
        d["cosine"] = round(float(self.cosine), 4)
        return {k: v for k, v in d.items() if k not in ("text", "other_kind", "lacked_class")}
