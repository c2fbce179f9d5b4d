"""Text search with a CLIP-style model (open_clip): every image through the image tower once
(cached in the LMDB by the model's own key, like `embeddings`), a FAISS inner-product index of
the normalized vectors under `clip/<model_key>/`, and queries through the text tower.

`text_model` names the model as open_clip does: `ARCH:PRETRAINED`, where PRETRAINED is one of
open_clip's tags (`ViT-B-32:laion2b_s34b_b79k`, fetched from the Hugging Face hub once) or a
local checkpoint file; ARCH may also be a model-config JSON file (its name is the arch). ARCH
alone means random weights: only the mechanics work (the tests use that), the answers mean
nothing. open_clip is the optional extra `[clip]`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from embedding_assets.search.text_answers import CLIP, TextAnswer, TextHit
from resources.paths import DataPaths

POINTER = "current.json"
BATCH = 64
INDEX_FILES = ("index.faiss", "ids.npy", "paths.json")  # in a model key's folder


class ClipUnavailable(RuntimeError):
    """The model cannot be loaded here; the message is one line that says what to do."""


@dataclass(frozen=True)
class ClipSpec:
    arch: str  # an open_clip model name, or a model-config JSON file
    pretrained: str | None  # an open_clip tag, a checkpoint file, or None: random weights

    @classmethod
    def parse(cls, text_model: str) -> ClipSpec:
        arch, _, pretrained = text_model.strip().partition(":")
        if not arch:
            raise ClipUnavailable(
                f"text_model {text_model!r}: give ARCH:PRETRAINED, e.g. ViT-B-32:laion2b_s34b_b79k"
            )
        return cls(arch, pretrained or None)

    @property
    def name(self) -> str:
        return Path(self.arch).stem if self.arch.endswith(".json") else self.arch

    @cached_property  # hashing a checkpoint of hundreds of MB once per spec, not per use
    def model_key(self) -> str:
        """The cache key: the arch and what its weights are (a tag, a checkpoint's content hash
        or random), so another checkpoint never reuses these vectors."""
        if self.pretrained is None:
            weights = "random0"
        elif Path(self.pretrained).is_file():
            weights = _file_hash(Path(self.pretrained))
        else:
            weights = self.pretrained
        if self.arch.endswith(".json"):
            weights += "-" + _file_hash(Path(self.arch))
        return f"clip-{self.name}-{weights}".replace("/", "_")


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:12]


@dataclass
class ClipModel:
    spec: ClipSpec
    model: object  # open_clip.CLIP
    preprocess: object  # PIL image -> tensor
    tokenizer: object

    def encode_text(self, texts: list[str]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.model.encode_text(self.tokenizer(texts)).float()
        return _normalized(out.numpy())

    def encode_images(self, images: list) -> np.ndarray:
        import torch

        batch = torch.stack([self.preprocess(im) for im in images])
        with torch.inference_mode():
            out = self.model.encode_image(batch).float()
        return _normalized(out.numpy())


def _normalized(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_model(spec: ClipSpec) -> ClipModel:
    """The model in eval mode on the CPU; ClipUnavailable (one line) when open_clip is not
    installed, the arch is unknown or the weights are neither cached, downloadable nor a file."""
    try:
        import open_clip
        import torch
    except ImportError:
        raise ClipUnavailable(
            "text_model needs open_clip: pip install 'embedding-assets[clip]' (open_clip_torch)"
        ) from None
    if spec.arch.endswith(".json"):
        if not Path(spec.arch).is_file():
            raise ClipUnavailable(f"text_model: no model config at {spec.arch}")
        open_clip.add_model_config(spec.arch)
    if spec.name not in open_clip.list_models():
        raise ClipUnavailable(
            f"text_model: open_clip has no model {spec.name!r}; see open_clip.list_models() "
            "(e.g. ViT-B-32, ViT-B-16-SigLIP)"
        )
    torch.manual_seed(0)  # random weights (tests) are the same in every process
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            spec.name, pretrained=spec.pretrained
        )
    except Exception as exc:  # noqa: BLE001 - open_clip raises RuntimeError or hub errors
        raise ClipUnavailable(_weights_hint(spec, exc)) from exc
    model.eval()
    return ClipModel(spec, model, preprocess, open_clip.get_tokenizer(spec.name))


def _weights_hint(spec: ClipSpec, exc: Exception) -> str:
    where = os.environ.get("HF_HOME", "~/.cache/huggingface")
    first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
    return (
        f"text_model {spec.name}:{spec.pretrained}: weights not available ({first}). Offline, "
        f"download them once where the hub is reachable (they are cached under {where}), or "
        f"put the checkpoint file here and set text_model to {spec.name}:/path/to/checkpoint.bin"
    )


def embed(
    paths: DataPaths, clip: ClipModel, fs_paths: list, hashes: list[str], progress=None
) -> np.ndarray:
    """Normalized image vectors of every file, in order: cached ones read from the LMDB,
    the rest through the image tower in batches and cached."""
    from embedding_assets.catalog.images import load_image
    from embedding_assets.embedding.cache import EmbeddingCache

    key = clip.spec.model_key
    with EmbeddingCache(paths.embeddings_lmdb) as cache:
        missing = set(cache.missing(key, hashes))
        todo = [(p, h) for p, h in zip(fs_paths, hashes, strict=True) if h in missing]
        todo = list({h: (p, h) for p, h in todo}.values())  # one pass per content
        for start in range(0, len(todo), BATCH):
            part = todo[start : start + BATCH]
            vectors = clip.encode_images([load_image(p) for p, _ in part])
            cache.put_batch(key, [h for _, h in part], vectors)
            if progress is not None:
                progress(min(start + BATCH, len(todo)), len(todo))
        if not hashes:
            return np.zeros((0, 0), np.float32)
        dim = cache.dim(key, hashes[0], "float32")
        return cache.get_matrix(key, hashes, dim, "float32")


def index_dir(paths: DataPaths, model_key: str) -> Path:
    return paths.root / "clip" / model_key


def write_index(
    paths: DataPaths,
    clip: ClipModel,
    text_model: str,
    ids: np.ndarray,
    file_paths: list[str],
    x: np.ndarray,
) -> Path:
    """An exact inner-product FAISS index with its ids and paths, then the pointer a server
    follows (naming `text_model`, so the server loads the same text tower); each file written
    under a temporary name first and renamed."""
    import faiss

    key = clip.spec.model_key
    target = index_dir(paths, key)
    target.mkdir(parents=True, exist_ok=True)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(np.ascontiguousarray(x, dtype=np.float32))
    staged = {name: target / f".{os.getpid()}.{name}" for name in INDEX_FILES}
    faiss.write_index(index, str(staged["index.faiss"]))
    with open(staged["ids.npy"], "wb") as f:  # a file object: np.save adds no suffix
        np.save(f, np.asarray(ids, np.int64))
    staged["paths.json"].write_text(json.dumps(file_paths))
    for name, path in staged.items():
        path.replace(target / name)
    point_at(paths, key, text_model)
    return target


def stop_pointing(paths: DataPaths) -> None:
    """Text search goes back to the tags (the index and cached vectors stay for a re-enable)."""
    (paths.root / "clip" / POINTER).unlink(missing_ok=True)


@dataclass(frozen=True)
class ClipBuild:
    images: int
    dimension: int


def build_index(paths: DataPaths, spec: ClipSpec, text_model: str) -> ClipBuild:
    """Every usable image through the image tower (cached), the index over them, and the
    pointer to it; ClipUnavailable when the model cannot be loaded."""
    from embedding_assets.catalog.images import usable_files

    model = load_model(spec)
    usable = usable_files(paths.catalog_db)
    x = embed(paths, model, usable.fs_paths, usable.hashes)
    write_index(paths, model, text_model, usable.ids, usable.paths, x)
    return ClipBuild(len(usable), int(x.shape[1]) if len(x) else 0)


def point_at(paths: DataPaths, model_key: str, text_model: str) -> None:
    """Make `model_key`'s index the one text search uses (the pointer names `text_model`, so a
    server loads the same text tower)."""
    pointer = paths.root / "clip" / POINTER
    staged = pointer.with_name(f".{os.getpid()}.{POINTER}")
    staged.write_text(json.dumps({"model_key": model_key, "text_model": text_model}))
    staged.replace(pointer)


def point_at_stored(paths: DataPaths, model_key: str, text_model: str) -> bool:
    """Point text search at `model_key`'s stored index again; False when it is gone."""
    if not index_dir(paths, model_key).is_dir():
        return False
    point_at(paths, model_key, text_model)
    return True


class ClipIndex:
    """The served CLIP index and the text tower that queries it."""

    def __init__(self, paths: DataPaths, clip: ClipModel) -> None:
        import faiss

        self.model_key = clip.spec.model_key
        folder = index_dir(paths, self.model_key)
        self.index = faiss.read_index(str(folder / "index.faiss"))
        self.image_ids = np.load(folder / "ids.npy")
        self.paths = json.loads((folder / "paths.json").read_text())
        self.clip = clip

    @classmethod
    def current(cls, paths: DataPaths) -> ClipIndex | None:
        """The index the pointer names with its text tower loaded; None when `clip_embeddings`
        has written none (text search then uses the tags)."""
        try:
            found = json.loads((paths.root / "clip" / POINTER).read_text())
        except (FileNotFoundError, ValueError):
            return None
        return cls(paths, load_model(ClipSpec.parse(found["text_model"])))

    def answer(self, text: str, k: int) -> TextAnswer:
        """The `k` images nearest `text` by cosine similarity of the two towers' vectors."""
        k = min(k, self.index.ntotal)
        hits = []
        if k > 0:
            scores, rows = self.index.search(self.clip.encode_text([text]), k)
            hits = [
                TextHit(rank, int(self.image_ids[r]), self.paths[r], float(s), [], CLIP)
                for rank, (s, r) in enumerate(zip(scores[0], rows[0], strict=True), start=1)
                if r >= 0
            ]
        return TextAnswer("clip", self.model_key, f"CLIP text tower of {self.model_key}", hits)
