"""Image tags from the backbone's own ImageNet head, and text search over them, offline.

The `image_tags` asset keeps each image's top classes with their probabilities in DuckDB
(`image_tags`, expanded to WordNet terms in the view `image_tags_expanded`) and, for serving,
in `tags/<model_key>.parquet` beside a pointer `tags/current.json`, so that a server answers
text queries from memory. A query's words resolve to classes (`words`); images rank by the
summed probability of those classes among their tags. `text_search` picks between these tags
and a CLIP index (`clip`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from embedding_assets.search.text_answers import NoMatch, TextAnswer, TextHit
from embedding_assets.search.words import Resolution, vocabulary
from resources.paths import DataPaths

POINTER = "current.json"


def top_classes(
    vectors: np.ndarray, norms: np.ndarray, weight: np.ndarray, bias: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray]:
    """(class indexes (n, k), probabilities (n, k)), most likely first, from L2-normalized
    features and their norms: logits = norm * (vector @ W.T) + b, softmax over all classes."""
    classes = np.empty((len(vectors), k), dtype=np.int64)
    probs = np.empty((len(vectors), k), dtype=np.float32)
    for s in range(0, len(vectors), 4096):
        v, n = vectors[s : s + 4096], norms[s : s + 4096]
        logits = (v @ weight.T) * n[:, None] + bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        top = np.argpartition(-p, k - 1, axis=1)[:, :k]
        order = np.argsort(-np.take_along_axis(p, top, axis=1), axis=1)
        classes[s : s + 4096] = np.take_along_axis(top, order, axis=1)
        probs[s : s + 4096] = np.take_along_axis(p, classes[s : s + 4096], axis=1)
    return classes, probs


def terms_rows() -> dict[str, list]:
    """The `imagenet_terms` table: every word naming each class or a synset above it, with its
    distance (0: the class's own names)."""
    vocab = vocabulary()
    synset, term, distance = [], [], []
    for index, wnid in enumerate(vocab.classes):
        seen: set[str] = set()
        for depth, offset in enumerate(vocab.closure[index]):
            for word in vocab.lemmas.get(offset, []):
                if word not in seen:
                    seen.add(word)
                    synset.append(wnid)
                    term.append(word)
                    distance.append(depth)
    return {"synset": synset, "term": term, "distance": distance}


def serving_path(paths: DataPaths, model_key: str) -> Path:
    return paths.root / "tags" / f"{model_key}.parquet"


def write_serving(
    paths: DataPaths,
    model_key: str,
    image_ids: np.ndarray,
    file_paths: list[str],
    classes: np.ndarray,
    probs: np.ndarray,
) -> Path:
    """The tags a server loads, and the pointer to them; each written atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = serving_path(paths, model_key)
    target.parent.mkdir(parents=True, exist_ok=True)
    k = classes.shape[1]
    table = pa.table(
        {
            "image_id": pa.array(np.repeat(np.asarray(image_ids, np.int64), k)),
            "path": pa.array(np.repeat(np.asarray(file_paths, dtype=object), k), pa.string()),
            "class": pa.array(classes.reshape(-1).astype(np.int32)),
            "score": pa.array(probs.reshape(-1).astype(np.float32)),
        }
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    tmp.replace(target)
    pointer = target.with_name(POINTER)
    tmp = pointer.with_name(f".{POINTER}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"model_key": model_key, "file": target.name}))
    tmp.replace(pointer)
    return target


class TagIndex:
    """Every image's tags, indexed both ways: per class the images tagged with it (to score a
    query's classes) and per image its tags (to name the matched ones), as flat arrays, so a
    query costs a few NumPy calls over the images it matches."""

    def __init__(self, path: Path) -> None:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        ids = table.column("image_id").to_numpy()
        self.image_ids, rows = np.unique(ids, return_inverse=True)
        first = np.unique(rows, return_index=True)[1]
        self.paths = [table.column("path")[int(i)].as_py() for i in first]
        cols = table.column("class").to_numpy().astype(np.int64)
        scores = table.column("score").to_numpy().astype(np.float32)
        n_classes = len(vocabulary().classes)
        by_class = np.argsort(cols, kind="stable")
        self.class_ptr = np.searchsorted(cols[by_class], np.arange(n_classes + 1))
        self.class_rows, self.class_scores = rows[by_class], scores[by_class]
        by_row = np.argsort(rows, kind="stable")  # within a row: the stored order, best first
        self.row_ptr = np.searchsorted(rows[by_row], np.arange(len(self.image_ids) + 1))
        self.row_classes = cols[by_row]
        self.model_key = path.stem
        self.mtime = path.stat().st_mtime_ns

    @classmethod
    def current(cls, paths: DataPaths) -> TagIndex:
        """The tags the pointer names; LookupError saying what to run while there are none."""
        try:
            found = json.loads((paths.root / "tags" / POINTER).read_text())
        except (FileNotFoundError, ValueError):
            raise LookupError(
                "No image tags yet: materialize `image_tags` (emb run does) to search by text."
            ) from None
        return cls(paths.root / "tags" / found["file"])

    def answer(self, text: str, k: int) -> TextAnswer:
        """The top `k` images for `text`; NoMatch when no word of it names a class."""
        resolution = vocabulary().resolve(text)
        if len(resolution.classes) == 0:
            raise NoMatch(resolution.describe())
        hits = self.search(resolution, k)
        understood = resolution.describe()
        if not hits:
            words = ", ".join(resolution.matched) or "that"
            closest = ", ".join(self.closest_tags(resolution.classes))
            understood += (
                f"; no image here is tagged as {words} (nearest tags here in WordNet: {closest})"
            )
        return TextAnswer("tags", self.model_key, understood, hits)

    def closest_tags(self, classes: np.ndarray, n: int = 3) -> list[str]:
        """The tags these images carry nearest the wanted classes in WordNet (the most
        hypernyms shared; the commonest first among equals), with their image counts: what the
        collection holds instead, for a query that matched nothing."""
        vocab = vocabulary()
        counts = np.diff(self.class_ptr)
        wanted = [set(vocab.closure[int(c)]) for c in classes]

        def nearness(c: int) -> int:
            return max((len(w.intersection(vocab.closure[c])) for w in wanted), default=0)

        present = sorted(np.flatnonzero(counts).tolist(), key=lambda c: (-nearness(c), -counts[c]))
        return [f"{vocab.names[c].split(',')[0]} (on {counts[c]} images)" for c in present[:n]]

    def search(self, resolution: Resolution, k: int) -> list[TextHit]:
        """Images tagged with any of the resolution's classes, by the summed probability of
        those classes, best first (ties: the lower row first)."""
        classes = np.asarray(resolution.classes, dtype=np.int64)
        if len(classes) == 0:
            return []
        spans = [slice(self.class_ptr[c], self.class_ptr[c + 1]) for c in classes]
        rows = np.concatenate([self.class_rows[sp] for sp in spans])
        if len(rows) == 0:
            return []
        candidates, inverse = np.unique(rows, return_inverse=True)
        weights = np.concatenate([self.class_scores[sp] for sp in spans])
        scores = np.bincount(inverse, weights=weights).astype(np.float32)
        k = min(k, len(scores))
        top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
        top = top[np.lexsort((candidates[top], -scores[top]))]
        names, wanted, hits = vocabulary().names, set(classes.tolist()), []
        for rank, t in enumerate(top, start=1):
            row = int(candidates[t])
            tagged = self.row_classes[self.row_ptr[row] : self.row_ptr[row + 1]].tolist()
            matched = [names[c] for c in tagged if c in wanted]
            hits.append(
                TextHit(rank, int(self.image_ids[row]), self.paths[row], float(scores[t]), matched)
            )
        return hits
