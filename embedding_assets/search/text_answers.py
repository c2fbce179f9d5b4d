"""What a text query answers, whichever index answered it (the tags or CLIP)."""

from __future__ import annotations

from dataclasses import dataclass, field

# Why an image answered a text query (TextHit.matched_by).
OWN_TAGS = "tags"  # its own tags name the query's classes
RESEMBLANCE = "resemblance"  # it resembles images whose tags do (TextHit.like names them)
CLIP = "clip"  # the text tower's vector is near its image vector


@dataclass(frozen=True)
class TextHit:
    rank: int
    image_id: int
    path: str | None
    score: float  # tags: the query's classes' probability, spread over neighbours; CLIP: cosine
    classes: list[str]  # tags: the matched classes it was tagged with, most likely first
    matched_by: str = OWN_TAGS
    like: list[int] = field(default_factory=list)  # resemblance: the tagged images it resembles

    def why(self) -> str:
        """One short phrase: the matched tags, or the images it resembles."""
        if self.matched_by == RESEMBLANCE:
            return "like " + ", ".join(f"#{i}" for i in self.like)
        return "; ".join(self.classes)

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "image_id": self.image_id,
            "path": self.path,
            "score": self.score,
            "classes": self.classes,
            "matched_by": self.matched_by,
            "like": self.like,
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
