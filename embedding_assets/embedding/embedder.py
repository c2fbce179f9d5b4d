"""Batched, device-aware inference: image files in, L2-normalized float vectors out.

Decoding and resizing run in DataLoader workers so the disk and the CPU overlap with the model;
on CUDA the batches travel through pinned memory with non-blocking copies, under autocast and
channels_last. Everything here is plain PyTorch and knows nothing of Dagster or DuckDB; torch
loads inside the functions that run a model, so `EmbedParams` (and the model key) cost no
torch import.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from embedding_assets.catalog.images import decode, open_source, to_rgb
from embedding_assets.common.choices import Precision, StoreDtype
from embedding_assets.embedding.backbones import (
    Backbone,
    BackboneSpec,
    build_backbone,
    resolve_spec,
)
from embedding_assets.embedding.defaults import DEFAULT_MODEL, DEFAULT_WEIGHTS

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class EmbedParams:
    """Everything that decides the vectors; its hash is the model key (with the weights' id)."""

    model: str = DEFAULT_MODEL
    weights: str | None = DEFAULT_WEIGHTS
    image_size: int = 0  # 0: the weights' own size
    store_dtype: StoreDtype = "float32"
    head: str | None = None  # a trained projection head file (embedding.heads)
    center_crop: bool = True  # False: resize the short side to the crop (nothing cut away)

    def spec(self) -> BackboneSpec:
        return resolve_spec(self.model, self.weights, self.image_size, self.center_crop)

    def model_key(self, spec: BackboneSpec | None = None) -> str:
        spec = spec or self.spec()
        ident = {**spec.identity(), "store_dtype": self.store_dtype, "head": self.head_id()}
        digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]
        weights = spec.weights_id.split(".")[-1].split(":")[0].lower()
        trained = "-head" if self.head else ""
        name = self.model.replace("/", "_")  # the key names files
        return f"{name}-{weights}{trained}-{spec.preprocess.crop}px-{digest}"

    def head_id(self) -> str | None:
        """The head file's content hash: a retrained head is a new model key."""
        if not self.head:
            return None
        path = Path(self.head)
        if not path.is_file():
            raise FileNotFoundError(f"projection head {path} does not exist")
        return hashlib.sha256(path.read_bytes()).hexdigest()

    def build(self, allow_download: bool = True) -> Backbone:
        """The backbone, with the trained head appended when one is configured."""
        backbone = build_backbone(self.spec(), allow_download=allow_download)
        if self.head:
            import torch

            from embedding_assets.embedding.heads import L2Normalize, check_fits, load_head

            head = load_head(self.head)
            check_fits(head, self.head, self.model, backbone.dim)
            backbone = Backbone(
                torch.nn.Sequential(backbone.model, L2Normalize(), head).eval(),
                head.dims[2],
                backbone.spec,
            )
        return backbone

    def as_dict(self) -> dict:
        return asdict(self)


READ_ERROR = "cannot read at embedding time"  # the catalog re-probes such files on its next scan


class ImageFiles:
    """Decodes one file per item into the model's uint8 pixels (`Preprocess.pixels`); a failure
    becomes an error, not a crash (a map-style dataset for the DataLoader)."""

    def __init__(self, paths: Sequence[str | bytes], transform: Callable) -> None:
        self.paths = paths
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            source = open_source(self.paths[i])
        except Exception as exc:  # noqa: BLE001 - any read failure is reported per file
            return None, i, f"{READ_ERROR}: {exc}"
        try:
            return self.transform(decode(source)), i, None
        except Exception as exc:  # noqa: BLE001 - any decode failure is reported per file
            return None, i, f"cannot decode at embedding time: {exc}"


def _collate(items):
    import torch

    ok = [(t, i) for t, i, err in items if err is None]
    errors = [(i, err) for t, i, err in items if err is not None]
    pixels = torch.from_numpy(np.stack([t for t, _ in ok])) if ok else None
    return pixels, [i for _, i in ok], errors


@dataclass
class Batch:
    indexes: list[int]  # positions in the input list
    vectors: np.ndarray  # (len(indexes), dim), L2-normalized, store dtype
    errors: list[tuple[int, str]]
    norms: np.ndarray | None = None  # (len(indexes),) the features' L2 norms before normalizing


def _autocast_dtype(device: torch.device, precision: Precision) -> torch.dtype | None:
    import torch

    if device.type != "cuda" or precision == "fp32":
        return None
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def prepare(backbone: Backbone, device: str) -> torch.nn.Module:
    """The backbone on `device`, taking uint8 pixels (embedding.pixel_input)."""
    import torch

    from embedding_assets.embedding.pixel_input import on_pixels

    dev = torch.device(device)
    pre = backbone.spec.preprocess
    model = on_pixels(backbone.model, pre.mean, pre.std).to(dev)
    if dev.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    return model


@dataclass(frozen=True)
class BatchSettings:
    """How `embed_paths` runs a model over files: the step fills it from its RunOptions, a Ray
    actor with one batch per call and no decode workers."""

    device: str = "cpu"
    batch_size: int = 64
    workers: int | None = None  # DataLoader decode workers; None: default_workers()
    precision: Precision = "auto"  # autocast on CUDA
    store_dtype: StoreDtype = "float32"  # of the vectors yielded


def embed_paths(
    backbone: Backbone, paths: Sequence[str | bytes], settings: BatchSettings = BatchSettings()
) -> Iterator[Batch]:
    """Yield one Batch per DataLoader batch, in input order."""
    import torch
    from torch.utils.data import DataLoader

    device, store_dtype = settings.device, settings.store_dtype
    dev = torch.device(device)
    model = prepare(backbone, device)
    workers = default_workers() if settings.workers is None else settings.workers
    loader = DataLoader(
        ImageFiles(paths, backbone.spec.preprocess.pixels()),
        batch_size=settings.batch_size,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=dev.type == "cuda",
        persistent_workers=False,
        prefetch_factor=4 if workers else None,
    )
    amp = _autocast_dtype(dev, settings.precision)
    with torch.inference_mode():
        for pixels, indexes, errors in loader:
            if pixels is None:
                yield Batch([], np.empty((0, backbone.dim), store_dtype), errors, np.empty(0))
                continue
            x = pixels.to(dev, non_blocking=True)  # uint8, channels last
            with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
                feats = model(x)
            feats = feats.float()
            norms = feats.norm(dim=1).cpu().numpy()  # the scale of the logits of a class head
            feats = torch.nn.functional.normalize(feats, dim=1)
            vectors = feats.cpu().numpy().astype(store_dtype, copy=False)
            yield Batch(indexes, vectors, errors, norms)


def default_workers() -> int:
    """Decoding workers: enough to keep one model busy without starving its own threads."""
    return max(1, min(8, (os.cpu_count() or 2) // 2))


@lru_cache(maxsize=4)
def _cached_backbone(params_json: str) -> tuple[Backbone, EmbedParams]:
    params = EmbedParams(**json.loads(params_json))
    return params.build(), params


def _params_json(params: dict | EmbedParams) -> str:
    if isinstance(params, EmbedParams):
        params = params.as_dict()
    fields = EmbedParams.__dataclass_fields__
    return json.dumps({k: v for k, v in params.items() if k in fields}, sort_keys=True)


def embed_files(paths: Sequence[str | bytes], params: dict | EmbedParams) -> np.ndarray:
    """Embed a few files with the model and preprocessing of `params` (e.g. an embedding set's
    stored params), for queries. Raises ValueError naming the file that cannot be decoded."""
    backbone, p = _cached_backbone(_params_json(params))
    out = np.empty((len(paths), backbone.dim), dtype=p.store_dtype)
    for batch in embed_paths(backbone, paths, BatchSettings(workers=0, store_dtype=p.store_dtype)):
        if batch.errors:
            i, err = batch.errors[0]
            raise ValueError(f"{paths[i]!r}: {err}")
        out[batch.indexes] = batch.vectors
    return out


def embed_pil(images: Sequence[Image.Image], params: dict | EmbedParams) -> np.ndarray:
    """Embed in-memory images (e.g. HTTP uploads) exactly as files of the set were embedded."""
    import torch

    backbone, p = _cached_backbone(_params_json(params))
    pixels = backbone.spec.preprocess.pixels()
    x = torch.from_numpy(np.stack([pixels(to_rgb(im)) for im in images]))
    with torch.inference_mode():
        feats = torch.nn.functional.normalize(prepare(backbone, "cpu")(x).float(), dim=1)
    return feats.numpy().astype(p.store_dtype, copy=False)
