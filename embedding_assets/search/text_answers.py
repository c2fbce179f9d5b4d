"""What a text query answers, whichever index answered it (the tags or CLIP)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TextHit:
    rank: int
    image_id: int
    path: str | None
    score: float  # tags: summed probability of the matched classes; CLIP: cosine similarity
    classes: list[str]  # tags: the matched classes it was tagged with, most likely first

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "image_id": self.image_id,
            "path": self.path,
            "score": self.score,
            "classes": self.classes,
        }


class NoMatch(ValueError):
    """No word of a text query names a class; the message says so and suggests words."""


# Why text search names another model than search by image, in one sentence for the page, the
# CLI and `--help`.
WHY_TWO_MODELS = (
    "Words are matched by the backbone's own ImageNet head (or a CLIP text model), which names "
    "things; search by image uses the embedding trained on your images, which tells them apart: "
    "two models, so two model keys."
)


@dataclass(frozen=True)
class TextAnswer:
    via: str  # "tags" (the backbone's ImageNet head) or "clip" (the text tower)
    model_key: str
    understood: str  # one line: what was searched, and why nothing matched when nothing did
    hits: list[TextHit]

    @property
    def source(self) -> str:
        """Which model answered, in words."""
        if self.via == "tags":
            return f"ImageNet tags of {self.model_key}, the backbone's classifier head"
        return f"CLIP model {self.model_key}"

    def as_dict(self) -> dict:
        return {
            "via": self.via,
            "model_key": self.model_key,
            "understood": self.understood,
            "source": self.source,
            "results": [h.as_dict() for h in self.hits],
        }
