"""Image tags from the backbone's own ImageNet head, and text search over them, offline.

The `image_tags` asset keeps each image's top classes with their probabilities in DuckDB
(`image_tags`, expanded to WordNet terms in the view `image_tags_expanded`) and, for serving,
in `tags/<model_key>.parquet` beside a pointer `tags/current.json`, with each image's nearest
images (`<model_key>.neighbours.npz`), so that a server answers text queries from memory. A
query's words resolve to classes (`words`); each image's own tags give it the summed probability
of those classes, and that score spreads along the neighbour graph, so the images that resemble
the tagged ones answer too (most images of a class lack its tag among their own: on CIFAR-10's
10,000 photos, "airplane" was among the top 5 tags of a third of the airplanes).
`text_search` picks between these tags and a CLIP index (`clip`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedding_assets.common.ids import positions
from embedding_assets.search.text_answers import RESEMBLANCE, NoMatch, TextAnswer, TextHit
from embedding_assets.search.words import Resolution, vocabulary
from resources.paths import DataPaths

POINTER = "current.json"
NEIGHBOURS = 10  # nearest images kept per image, the paths a query's tags spread along
SPACE_DIMS = 64  # principal components the neighbours are found in
PCA_SAMPLE = 20_000  # images the components are fit on
OWN_SHARE = 0.5  # of an image's score, from its own tags; the rest from its neighbours' scores
STEPS = 3  # rounds of spreading: an image three neighbours away from a tagged one still scores
SUPPORT = 0.02  # a query answers only where some image's neighbours carry, on average, this
# much of its classes' probability: a stray tag on one image is not an answer (on the blood-cell
# photos the CIFAR class names reach 0.016 at most; on 200 CIFAR photos 0.039 or more, on 15
# cats and 15 ships among 45 photos 0.025 and 0.024)


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


def principal_space(vectors: np.ndarray) -> np.ndarray:
    """The features' first SPACE_DIMS principal components (fit on a sample, projected in
    chunks): neighbours found there cost 20x less than in 1280 dimensions and were as good at
    spreading tags (benchmarks/text_search.py)."""
    dims = min(SPACE_DIMS, vectors.shape[1], len(vectors) - 1)
    if dims < 2:
        return np.ascontiguousarray(vectors, dtype=np.float32)
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    sample = rng.choice(len(vectors), min(len(vectors), PCA_SAMPLE), replace=False)
    pca = PCA(dims, svd_solver="randomized", random_state=0).fit(vectors[np.sort(sample)])
    chunks = [pca.transform(vectors[s : s + 65_536]) for s in range(0, len(vectors), 65_536)]
    return np.vstack(chunks).astype(np.float32)


def nearest_images(vectors: np.ndarray, image_ids: np.ndarray) -> np.ndarray:
    """Each image's NEIGHBOURS nearest other images (image ids, nearest first, -1 where there
    are fewer), by cosine similarity in `principal_space`: exact (FAISS, O(n^2 d)) up to the
    neighbour graph's EXACT_MAX images, an IVF search above (O(n^1.5 d))."""
    from embedding_assets.common.neighbor_graph import EXACT_MAX, approximate_self_knn
    from embedding_assets.common.neighbors import knn, normalize

    if len(vectors) < 2:
        return np.full((len(vectors), NEIGHBOURS), -1, dtype=np.int64)
    space = principal_space(vectors)
    if len(space) <= EXACT_MAX:
        _, rows = knn(space, k=NEIGHBOURS)
    else:
        _, rows = approximate_self_knn(normalize(space), NEIGHBOURS)
    return np.where(rows >= 0, np.asarray(image_ids, np.int64)[np.maximum(rows, 0)], -1)


@dataclass(frozen=True)
class Tagged:
    """What text search serves: each image's top classes and its nearest images."""

    image_ids: np.ndarray  # (n,)
    classes: np.ndarray  # (n, top_k) class indexes, most likely first
    probs: np.ndarray  # (n, top_k)
    neighbours: np.ndarray  # (n, NEIGHBOURS) image ids, nearest first; -1 pads

    @classmethod
    def of(
        cls, image_ids: np.ndarray, vectors: np.ndarray, norms: np.ndarray, head, top_k: int
    ) -> Tagged:
        """Tag L2-normalized features with the backbone's ImageNet `head` (a ClassHead) and
        find each image's neighbours."""
        ids = np.asarray(image_ids, dtype=np.int64)
        classes, probs = top_classes(vectors, norms, head.weight, head.bias, top_k)
        return cls(ids, classes, probs, nearest_images(vectors, ids))


def table_rows(tagged: Tagged, model_key: str) -> dict[str, list | np.ndarray]:
    """The `image_tags` rows: one per image and kept class, with its rank."""
    vocab = vocabulary()
    n, k = tagged.classes.shape
    flat = tagged.classes.reshape(-1)
    return {
        "image_id": np.repeat(tagged.image_ids, k),
        "model_key": [model_key] * len(flat),
        "tag": [vocab.names[c] for c in flat],
        "synset": [vocab.classes[c] for c in flat],
        "score": tagged.probs.reshape(-1).astype(np.float64),
        "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n),
    }


def write_tags(paths: DataPaths, model_key: str, tagged: Tagged, file_paths: list[str]) -> None:
    """The `image_tags` rows of `model_key` (and the `imagenet_terms` table) in DuckDB, and the
    served copy."""
    import pyarrow as pa

    from embedding_assets.common import tables
    from embedding_assets.common.results import replace_rows

    db = paths.catalog_db
    replace_rows(db, tables.IMAGENET_TERMS, None, pa.table(terms_rows()))
    replace_rows(db, tables.IMAGE_TAGS, model_key, pa.table(table_rows(tagged, model_key)))
    write_serving(paths, model_key, tagged, file_paths)


def readable(paths: DataPaths, model_key: str) -> bool:
    """Whether the served tags of `model_key` and their neighbours are whole files (their
    footer and directory read, not their rows): a kept result that is not is written again."""
    import zipfile

    import pyarrow.parquet as pq

    target = serving_path(paths, model_key)
    try:
        pq.read_metadata(target)
    except (OSError, ValueError):
        return False
    return zipfile.is_zipfile(neighbours_path(target))


def most_common(tagged: Tagged, n: int = 10) -> list[list]:
    """[images, class name] of the `n` classes most often first among the images' tags."""
    classes, counts = np.unique(tagged.classes[:, 0], return_counts=True)
    order = np.lexsort((-classes, -counts))[:n]
    names = vocabulary().names
    return [[int(counts[i]), names[classes[i]]] for i in order]


def serving_path(paths: DataPaths, model_key: str) -> Path:
    return paths.root / "tags" / f"{model_key}.parquet"


def neighbours_path(tags_file: Path) -> Path:
    return tags_file.with_suffix(".neighbours.npz")


def write_serving(paths: DataPaths, model_key: str, tagged: Tagged, file_paths: list[str]) -> Path:
    """The tags and neighbours a server loads, and the pointer to them; each written
    atomically, the pointer last."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    target = serving_path(paths, model_key)
    target.parent.mkdir(parents=True, exist_ok=True)
    k = tagged.classes.shape[1]
    table = pa.table(
        {
            "image_id": pa.array(np.repeat(tagged.image_ids, k)),
            "path": pa.array(np.repeat(np.asarray(file_paths, dtype=object), k), pa.string()),
            "class": pa.array(tagged.classes.reshape(-1).astype(np.int32)),
            "score": pa.array(tagged.probs.reshape(-1).astype(np.float32)),
        }
    )
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    pq.write_table(table, tmp)
    graph = neighbours_path(target)
    tmp_graph = graph.with_name(f".{graph.stem}.{os.getpid()}.tmp.npz")
    np.savez(tmp_graph, image_id=tagged.image_ids, neighbours=tagged.neighbours)
    tmp_graph.replace(graph)
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
        graph = neighbours_path(path)  # absent where tags were written before it existed
        self.spread = _spread_matrix(graph, self.image_ids) if graph.exists() else None
        self.isolated = None if self.spread is None else np.diff(self.spread.indptr) == 0

    @classmethod
    def current(cls, paths: DataPaths) -> TagIndex:
        """The tags the pointer names; LookupError saying what to run while there are none."""
        try:
            found = json.loads((paths.root / "tags" / POINTER).read_text())
        except (FileNotFoundError, ValueError):
            raise LookupError(
                "No image tags yet: materialize `image_tags` (emb run does) to search by text."
            ) from None
        served = paths.root / "tags" / found["file"]
        try:
            return cls(served)
        except (OSError, ValueError) as exc:  # pyarrow's and NumPy's errors on a damaged file
            raise LookupError(
                f"the served tags in {served.parent} cannot be read ({exc}); run `emb run`: "
                "image_tags writes them again"
            ) from None

    def answer(self, text: str, k: int) -> TextAnswer:
        """The top `k` images for `text`; NoMatch when no word of it names a class."""
        resolution = vocabulary().resolve(text)
        if len(resolution.classes) == 0:
            raise NoMatch(resolution.describe())
        own = self.own_scores(resolution.classes)
        hits = self.rank(own, resolution.classes, k)
        understood = resolution.describe()
        if not hits:
            words = ", ".join(resolution.matched) or "that"
            closest = ", ".join(self.closest_tags(resolution.classes))
            most = float(own.max(initial=0.0))
            stray = f" but stray images (at most {most:.2f}), none with similar ones"
            stray = stray if most else ""
            understood += (
                f"; no image here is tagged as {words}{stray} (nearest tags here in WordNet: "
                f"{closest})"
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
        """The top `k` images for the resolution's classes (see `rank`)."""
        return self.rank(self.own_scores(resolution.classes), resolution.classes, k)

    def own_scores(self, classes: np.ndarray) -> np.ndarray:
        """Per image (row), the summed probability of `classes` among its own tags."""
        spans = [slice(self.class_ptr[c], self.class_ptr[c + 1]) for c in classes]
        if not spans:
            return np.zeros(len(self.image_ids), dtype=np.float32)
        rows = np.concatenate([self.class_rows[sp] for sp in spans])
        weights = np.concatenate([self.class_scores[sp] for sp in spans])
        return np.bincount(rows, weights, minlength=len(self.image_ids)).astype(np.float32)

    def rank(self, own: np.ndarray, classes: np.ndarray, k: int) -> list[TextHit]:
        """Images by their own tags' score spread along the neighbour graph (each round: half
        its own, half its neighbours' mean), so an image whose own tags miss the query but
        whose neighbours carry it still answers; best first, ties by row. Nothing unless the
        tags hold in some neighbourhood (SUPPORT): a query the images do not show gets no
        answers, not the least unlikely ones."""
        if len(own) == 0 or not own.any():
            return []
        score = own
        if self.spread is not None:
            around = self.spread @ own  # each image's neighbours' mean score
            if np.where(self.isolated, own, around).max() < SUPPORT:
                return []
            score = OWN_SHARE * own + (1 - OWN_SHARE) * around
            for _ in range(STEPS - 1):
                score = OWN_SHARE * own + (1 - OWN_SHARE) * (self.spread @ score)
        answers = np.flatnonzero(score > 0)
        if len(answers) > k:
            answers = answers[np.argpartition(-score[answers], k - 1)[:k]]
        answers = answers[np.lexsort((answers, -score[answers]))]
        names, wanted = vocabulary().names, set(np.asarray(classes).tolist())
        hits = []
        for rank, row in enumerate(answers.tolist(), start=1):
            tagged = self.row_classes[self.row_ptr[row] : self.row_ptr[row + 1]].tolist()
            matched = [names[c] for c in tagged if c in wanted]
            image_id, path = int(self.image_ids[row]), self.paths[row]
            hit = TextHit(rank, image_id, path, float(score[row]), matched)
            if OWN_SHARE * own[row] < score[row] / 2:  # its neighbours gave it most of its score
                hit = replace(hit, matched_by=RESEMBLANCE, like=self._resembled(row, score))
            hits.append(hit)
        return hits

    def _resembled(self, row: int, score: np.ndarray, n: int = 3) -> list[int]:
        """The image ids of the `n` neighbours that gave `row` most of its score."""
        nbrs = self.spread.indices[self.spread.indptr[row] : self.spread.indptr[row + 1]]
        best = nbrs[np.argsort(-score[nbrs], kind="stable")][:n]
        return [int(self.image_ids[b]) for b in best if score[b] > 0]


def _spread_matrix(graph: Path, image_ids: np.ndarray):
    """The neighbour graph over the index's rows as a row-normalized sparse matrix (scipy
    CSR): one product turns every image's score into the mean of its neighbours' scores."""
    import zipfile

    from scipy import sparse

    try:
        with np.load(graph) as found:
            ids, neighbours = found["image_id"], found["neighbours"]
    except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{graph.name} is not a neighbours file") from exc
    rows = positions(image_ids, ids)
    nbrs = positions(image_ids, neighbours.reshape(-1)).reshape(neighbours.shape)
    valid = (rows[:, None] >= 0) & (nbrs >= 0)
    weight = 1.0 / np.maximum(valid.sum(axis=1, keepdims=True), 1)
    source = np.broadcast_to(rows[:, None], nbrs.shape)[valid]
    weights = np.broadcast_to(weight, nbrs.shape)[valid]
    n = len(image_ids)
    return sparse.csr_matrix(
        (weights.astype(np.float32), (source, nbrs[valid])), shape=(n, n), dtype=np.float32
    )
