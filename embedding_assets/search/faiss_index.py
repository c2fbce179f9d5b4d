"""FAISS indexes over L2-normalised embeddings: pick a type, build, tune, measure, evaluate.

Plain NumPy/FAISS code that knows nothing of Dagster or DuckDB. Vectors are unit length, so every
index uses the inner product, which is the cosine similarity. The type follows the collection
size and a memory budget in the spirit of autofaiss: exact search while it is cheap, then
inverted lists (IVF) or a graph (HNSW) while the raw vectors fit in memory, then product
quantisation (IVF-PQ) when they do not.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import faiss
import numpy as np

from embedding_assets.common.ids import positions

METRIC = faiss.METRIC_INNER_PRODUCT
NPROBE_STEPS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)
EXACT_SCAN_FLOATS = 4_000_000  # the most an exact index scans per query (n x d)
EF_SEARCH_STEPS = (16, 24, 32, 48, 64, 96, 128, 192, 256, 384, 512, 1024)


@dataclass
class BuiltIndex:
    """An index with its image ids inside, and the search parameters it was tuned to."""

    index: faiss.Index
    factory: str
    search_params: dict[str, int]
    train_seconds: float
    add_seconds: float
    tune_recall: float | None = None
    device: str = "cpu"

    @property
    def build_seconds(self) -> float:
        return self.train_seconds + self.add_seconds


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    batched_ms_per_query: float
    samples: int


@dataclass
class KnnAccuracy:
    accuracy: float | None
    evaluated: int
    k: int
    per_label: dict[str, float] = field(default_factory=dict)


def nlist_for(n: int) -> int:
    """Inverted lists: a power of two near 4·√n, with at least ~40 training points per list."""
    target = 4 * math.sqrt(n)
    nlist = 2 ** max(4, round(math.log2(target)))
    while nlist > 16 and n < 39 * nlist:
        nlist //= 2
    return nlist


def choose_factory(n: int, d: int, memory_budget_bytes: int, *, exact_max: int = 20_000) -> str:
    """The FAISS `index_factory` string for n vectors of dimension d.

    - up to `exact_max` vectors and EXACT_SCAN_FLOATS floats: `Flat` (exact; a query scans
      n·d floats, about a millisecond at the limit: 10k x 1280-d vectors took 5 ms a query,
      which capped a search server near 200 requests/s);
    - raw vectors within the memory budget: `IVF{nlist},Flat` (trains in seconds; tuned nprobe
      gives sub-millisecond queries at recall@5 >= 0.95 on 1M x 64, see
      benchmarks/results/search_latency.md, where HNSW needs minutes to build on 2 cores);
    - else `IVF{nlist},PQ{m}x8` with the largest m whose codes fit the budget. `HNSW32,Flat` and
      anything else FAISS knows stay available through the `index_factory` override.
    """
    if n <= exact_max and n * d <= EXACT_SCAN_FLOATS:
        return "Flat"
    nlist = nlist_for(n)
    if n * (d * 4 + 8) <= memory_budget_bytes:  # vectors + ids
        return f"IVF{nlist},Flat"
    per_vector = max(1, memory_budget_bytes // n - 8)  # code bytes left after the 8-byte id
    m = next(m for m in (64, 48, 32, 24, 16, 12, 8, 4, 2, 1) if m <= per_vector and d % m == 0)
    return f"IVF{nlist},PQ{m}x8"


def index_kind(factory: str) -> str:
    """'flat', 'ivf' or 'hnsw': which search parameter the index has."""
    if "IVF" in factory:
        return "ivf"
    if "HNSW" in factory:
        return "hnsw"
    return "flat"


def _new_index(d: int, factory: str) -> faiss.Index:
    try:
        index = faiss.index_factory(d, factory, METRIC)
    except RuntimeError as exc:
        raise ValueError(
            f"index_factory={factory!r} is not a FAISS factory string for d={d} ({exc}); "
            "examples: 'Flat', 'HNSW32,Flat', 'IVF1024,Flat', 'IVF1024,PQ16x8'"
        ) from exc
    if faiss.try_extract_index_ivf(index) is None:
        index = faiss.IndexIDMap2(index)  # flat and graph indexes keep ids in a map
    return index


def _to_gpu(index: faiss.Index, gpu_id: int | None) -> tuple[faiss.Index, str]:
    """Train and add on the GPU where FAISS has GPU support and the index type allows it."""
    if gpu_id is None or not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() < 1:
        return index, "cpu"
    if faiss.try_extract_index_ivf(index) is None:
        return index, "cpu"  # exact search needs no training; HNSW has no GPU build here
    res = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(res, gpu_id, index)
    gpu_index.referenced_objects = [
        res
    ]  # keep the resources alive (faiss >= 1.13 refuses new attributes)
    return gpu_index, f"cuda:{gpu_id}"


def build_index(
    vectors: np.ndarray,
    ids: np.ndarray,
    factory: str,
    *,
    train_sample: int = 100_000,
    gpu_id: int | None = None,
    seed: int = 0,
) -> BuiltIndex:
    """Train on a random sample, then add every vector with its image id."""
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    n, d = x.shape
    if n == 0:
        raise ValueError("no vectors to index: the embedding set is empty")
    index = _new_index(d, factory)
    work, device = _to_gpu(index, gpu_id)
    t0 = time.perf_counter()
    if not work.is_trained:
        rng = np.random.default_rng(seed)
        sample = x if n <= train_sample else x[np.sort(rng.choice(n, train_sample, replace=False))]
        nlist = getattr(faiss.try_extract_index_ivf(index), "nlist", 0)
        if nlist and len(sample) < nlist:
            raise ValueError(
                f"{factory!r} needs at least {nlist} training vectors, got {len(sample)}: "
                "lower the IVF list count or leave index_factory empty to choose automatically"
            )
        work.train(sample)
    t1 = time.perf_counter()
    work.add_with_ids(x, np.asarray(ids, dtype=np.int64))
    t2 = time.perf_counter()
    if device != "cpu":
        work = faiss.index_gpu_to_cpu(work)
    return BuiltIndex(work, factory, {}, t1 - t0, t2 - t1, device=device)


@dataclass
class IndexChanges:
    """What an index must drop and take to match a new set of (ids, vectors)."""

    remove_ids: np.ndarray
    add_rows: np.ndarray  # rows of the new set to add

    @property
    def count(self) -> int:
        return len(self.remove_ids) + len(self.add_rows)


def changes(
    old_ids: np.ndarray, old_vectors: np.ndarray, new_ids: np.ndarray, new_vectors: np.ndarray
) -> IndexChanges:
    """Ids gone from the new set or whose vector changed (content edited in place) are removed;
    new ids and changed ones are added. Compared in chunks, so a memory-mapped old set is read
    once."""
    order = np.argsort(old_ids, kind="stable")
    sorted_old = old_ids[order]
    old_rows = positions(sorted_old, new_ids, order)
    present = old_rows >= 0
    changed = np.zeros(len(new_ids), dtype=bool)
    both = np.flatnonzero(present)
    for start in range(0, len(both), 65536):
        rows = both[start : start + 65536]
        old = np.asarray(old_vectors[np.sort(old_rows[rows])])
        # gather in sorted order (sequential reads), then put back in `rows` order
        back = np.argsort(np.argsort(old_rows[rows]))
        changed[rows] = np.any(old[back] != new_vectors[rows], axis=1)
    gone = old_ids[~np.isin(old_ids, new_ids)]
    remove = np.concatenate([gone, new_ids[changed]]).astype(np.int64)
    return IndexChanges(remove, np.flatnonzero(~present | changed))


def apply_changes(
    index: faiss.Index, delta: IndexChanges, new_ids: np.ndarray, new_vectors: np.ndarray
) -> float:
    """Remove and add in place (Flat, IVF; HNSW can only add); returns the seconds taken."""
    t0 = time.perf_counter()
    if len(delta.remove_ids):
        index.remove_ids(faiss.IDSelectorBatch(delta.remove_ids))
    if len(delta.add_rows):
        rows = delta.add_rows
        index.add_with_ids(
            np.ascontiguousarray(new_vectors[rows], dtype=np.float32),
            np.asarray(new_ids[rows], dtype=np.int64),
        )
    return time.perf_counter() - t0


def search_parameters(
    index: faiss.Index, params: dict[str, int], selector: faiss.IDSelector | None = None
) -> faiss.SearchParameters | None:
    """FAISS per-call search parameters for this index type (nprobe or efSearch, id filter)."""
    kwargs = {"sel": selector} if selector is not None else {}
    if faiss.try_extract_index_ivf(index) is not None:
        return faiss.SearchParametersIVF(nprobe=int(params.get("nprobe", 1)), **kwargs)
    if "efSearch" in params:
        return faiss.SearchParametersHNSW(efSearch=int(params["efSearch"]), **kwargs)
    return faiss.SearchParameters(**kwargs) if kwargs else None


def apply_search_params(index: faiss.Index, params: dict[str, int]) -> None:
    """Set the tuned parameters on the index itself, for callers that pass none per call."""
    space = faiss.ParameterSpace()
    for name, value in params.items():
        space.set_index_parameter(index, name, value)


def search(
    index: faiss.Index, queries: np.ndarray, k: int, params: dict[str, int] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(similarities, ids) of the top k; ids are -1 where fewer than k were found."""
    q = np.ascontiguousarray(queries, dtype=np.float32)
    sp = search_parameters(index, params or {})
    return index.search(q, k, params=sp) if sp is not None else index.search(q, k)


def exact_topk(vectors: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Ids of the exact top k by inner product (the ground truth for recall)."""
    flat = faiss.IndexFlatIP(vectors.shape[1])
    flat.add(np.ascontiguousarray(vectors, dtype=np.float32))
    _, rows = flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)
    return np.asarray(ids)[rows]


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    """Share of the exact top k that the index also returned in its top k."""
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t)) for f, t in zip(found, truth, strict=True))
    return hits / truth.size


def sample_queries(vectors: np.ndarray, n_queries: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    n = len(vectors)
    rows = rng.choice(n, min(n_queries, n), replace=False)
    return np.ascontiguousarray(vectors[rows])


def tune(
    built: BuiltIndex,
    queries: np.ndarray,
    truth: np.ndarray,
    target_recall: float,
    *,
    max_nprobe: int = 1024,
    max_ef_search: int = 1024,
) -> BuiltIndex:
    """Smallest nprobe / efSearch whose recall@k on `queries` reaches the target (or the max)."""
    kind = index_kind(built.factory)
    k = truth.shape[1]
    if kind == "flat":
        found = search(built.index, queries, k)[1]
        built.tune_recall = recall_at_k(found, truth)
        return built
    if kind == "ivf":
        nlist = faiss.try_extract_index_ivf(built.index).nlist
        name, steps = "nprobe", [s for s in NPROBE_STEPS if s <= min(nlist, max_nprobe)]
    else:
        name, steps = "efSearch", [s for s in EF_SEARCH_STEPS if s <= max_ef_search]
    steps = [s for s in steps if name != "efSearch" or s >= k] or [max(k, 16)]
    stalled, best = 0, -1.0
    for value in steps:
        params = {name: value}
        recall = recall_at_k(search(built.index, queries, k, params)[1], truth)
        stalled = stalled + 1 if recall < best + 0.002 else 0
        best = max(best, recall)
        # a compressed index plateaus below the target: stop once more probing stops paying
        if recall >= target_recall or value == steps[-1] or stalled >= 2:
            break
    built.search_params, built.tune_recall = params, recall
    apply_search_params(built.index, params)
    return built


@contextmanager
def single_thread() -> Iterator[None]:
    """One OpenMP thread: a single query gains nothing from a team of threads, and waking one
    on busy cores costs milliseconds. A server answering one query per request does the same."""
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def measure_latency(
    index: faiss.Index,
    queries: np.ndarray,
    k: int,
    params: dict[str, int] | None = None,
    *,
    single: int = 200,
) -> Latency:
    """Median and p99 of one-query searches, and the per-query cost of one batched search."""
    sp = search_parameters(index, params or {})
    q = np.ascontiguousarray(queries, dtype=np.float32)
    times = []
    with single_thread():
        for i in range(min(single, len(q))):
            t0 = time.perf_counter_ns()
            index.search(q[i : i + 1], k, params=sp) if sp else index.search(q[i : i + 1], k)
            times.append((time.perf_counter_ns() - t0) / 1e6)
    t0 = time.perf_counter()
    index.search(q, k, params=sp) if sp else index.search(q, k)
    batched = (time.perf_counter() - t0) * 1e3 / len(q)
    return Latency(
        float(np.percentile(times, 50)), float(np.percentile(times, 99)), batched, len(times)
    )


@dataclass(frozen=True)
class KnnSettings:
    """How the leave-one-out kNN accuracy is measured."""

    k: int = 5  # neighbours that vote
    max_queries: int = 20_000  # labeled images asked (a sample beyond it)
    seed: int = 0  # of that sample


def knn_loo_accuracy(
    index: faiss.Index,
    vectors: np.ndarray,
    ids: np.ndarray,
    labels: dict[int, str],
    params: dict[str, int] | None = None,
    settings: KnnSettings = KnnSettings(),
) -> KnnAccuracy:
    """Leave-one-out top-1 accuracy of a k-nearest-neighbour vote among labeled images.

    Every labeled image asks the index for its k+1 nearest labeled neighbours (an id filter keeps
    unlabeled ones out), drops itself, and predicts the similarity-weighted majority label.
    """
    k, max_queries, seed = settings.k, settings.max_queries, settings.seed
    labeled = np.array(sorted(labels), dtype=np.int64)
    if len(labeled) < 2 or len(set(labels.values())) < 2:
        return KnnAccuracy(None, 0, k)
    row_of = {int(i): r for r, i in enumerate(ids)}
    rng = np.random.default_rng(seed)
    query_ids = [i for i in labeled if int(i) in row_of]
    if len(query_ids) > max_queries:
        query_ids = list(rng.choice(query_ids, max_queries, replace=False))
    q = vectors[[row_of[int(i)] for i in query_ids]]
    selector = faiss.IDSelectorBatch(labeled)
    sp = search_parameters(index, params or {}, selector)
    sims, found = index.search(np.ascontiguousarray(q, dtype=np.float32), k + 1, params=sp)
    correct: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for qid, row_ids, row_sims in zip(query_ids, found, sims, strict=True):
        votes: Counter[str] = Counter()
        neighbours = [(int(i), s) for i, s in zip(row_ids, row_sims, strict=True) if i >= 0]
        for nid, sim in [(i, s) for i, s in neighbours if i != int(qid)][:k]:
            votes[labels[nid]] += float(sim) + 1.0  # shift so negative cosines still count
        truth = labels[int(qid)]
        total[truth] += 1
        if votes and votes.most_common(1)[0][0] == truth:
            correct[truth] += 1
    evaluated = sum(total.values())
    per_label = {lab: correct[lab] / total[lab] for lab in sorted(total)}
    return KnnAccuracy(sum(correct.values()) / evaluated, evaluated, k, per_label)


def serialized_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).nbytes)
