"""Projection heads trained on top of a backbone (metric learning), saved as small files.

A head maps backbone features to a smaller embedding (e.g. 512 -> 256 -> 64); the embedder
applies it after the backbone and L2-normalizes the result. The file's content hash is part of
the model key, so a retrained head never reuses vectors of the old one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

HEAD_FORMAT = "emb-projection-head-v1"


class ProjectionHead(nn.Module):
    """Linear -> BatchNorm -> ReLU -> Dropout -> Linear (the reference work used 2048->512->64)."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.dims = (in_dim, hidden, out_dim)
        self.dropout = dropout
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class L2Normalize(nn.Module):
    """Heads are trained on the cached, L2-normalized backbone vectors, so inference normalizes
    the backbone's output the same way before the head."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(x, dim=1)


def save_head(head: ProjectionHead, path: Path, meta: dict | None = None) -> Path:
    """Write atomically: a reader never sees half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(
        {
            "format": HEAD_FORMAT,
            "dims": list(head.dims),
            "dropout": head.dropout,
            "state_dict": head.state_dict(),
            "meta": meta or {},
        },
        tmp,
    )
    tmp.replace(path)
    return path


def load_head(path: str | Path) -> ProjectionHead:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"projection head {path} does not exist; train one with the "
            "embedding_model asset or set head to 'none'"
        )
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != HEAD_FORMAT:
        raise ValueError(f"{path} is not a projection head saved by this project ({HEAD_FORMAT})")
    head = ProjectionHead(*blob["dims"], dropout=blob["dropout"])
    head.load_state_dict(blob["state_dict"])
    return head.eval()


def check_fits(head: ProjectionHead, head_path: str, model: str, dim: int) -> None:
    """A head only fits the backbone whose features it was trained on."""
    if head.dims[0] != dim:
        raise ValueError(
            f"head {head_path} expects {head.dims[0]}-d features but {model} gives {dim}; "
            "train the head on this backbone"
        )


def embed_features(head: ProjectionHead, X: np.ndarray) -> np.ndarray:
    """Apply a trained head to backbone features as inference does (normalize, head,
    normalize)."""
    with torch.inference_mode():
        x = L2Normalize()(torch.as_tensor(np.asarray(X, np.float32)))
        return L2Normalize()(head.eval()(x)).numpy()


CLASSIFIER_FORMAT = "emb-cosine-classifier-v1"


class CosineClassifier(nn.Module):
    """Class scores as scaled cosines between L2-normalized features and class weights (CosFace,
    Wang et al. 2018): training subtracts `margin` from the target class's cosine, so classes
    separate by angle, which is what nearest-neighbour search over the features then sees."""

    def __init__(self, dim: int, n_classes: int, scale: float = 16.0, margin: float = 0.2) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(n_classes, dim) * 0.01)
        self.scale = scale
        self.margin = margin

    def cosines(self, features: torch.Tensor) -> torch.Tensor:
        return (
            nn.functional.normalize(features, dim=1)
            @ nn.functional.normalize(self.weight, dim=1).t()
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Inference logits (no margin)."""
        return self.scale * self.cosines(features)

    def training_logits(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        cos = self.cosines(features)
        return self.scale * (cos - self.margin * nn.functional.one_hot(targets, cos.shape[1]))


def save_classifier(head: CosineClassifier, classes: list[str], path: Path) -> Path:
    """Write atomically, with the class names in the order of the weight rows."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    blob = {
        "format": CLASSIFIER_FORMAT,
        "weight": head.weight.detach().cpu(),
        "scale": head.scale,
        "margin": head.margin,
        "classes": list(classes),
    }
    torch.save(blob, tmp)
    tmp.replace(path)
    return path


def load_classifier(path: str | Path) -> tuple[CosineClassifier, list[str]]:
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != CLASSIFIER_FORMAT:
        raise ValueError(f"{path} is not a cosine classifier saved by this project")
    n, dim = blob["weight"].shape
    head = CosineClassifier(dim, n, blob["scale"], blob["margin"])
    head.weight.data.copy_(blob["weight"])
    return head.eval(), list(blob["classes"])
