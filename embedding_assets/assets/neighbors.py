"""`neighbor_graph`: each image's nearest other images, once per embedding set, for every asset
that needs neighbours (common/neighbor_graph.py: exact when small, FAISS IVF when large)."""

import dagster as dg

from embedding_assets.assets.reuse import Inputs, Report, materialize
from embedding_assets.embedding.sets import EmbeddingSet, current_set
from resources.paths import DataPaths
from resources.storage import StorageResource

ASSET = "neighbor_graph"


def read_graph(paths: DataPaths, emb_set: EmbeddingSet):
    """The current set's graph, as `neighbor_graph` stored it."""
    from embedding_assets.common.neighbor_graph import NeighborGraph

    return NeighborGraph.load(paths.neighbor_graph(emb_set.model_key), emb_set.content_version())


@dg.asset(
    deps=["embeddings"], group_name="embeddings", kinds={"faiss"}, owners=["team:ml-platform"]
)
def neighbor_graph(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The 20 nearest other images of every image (cosine), computed once per embedding set and
    read by `uniqueness`, `outliers` and `map_export`. Exact up to 20,000 images; above, an
    approximate FAISS IVF search whose recall of the exact 10 nearest, measured on 1,000
    images, is reported here. When the set only gained a few images (at most 10 %), the stored
    graph grows instead: the new images searched against all, the old ones' lists merged with
    their nearest new ones."""
    from embedding_assets.common.neighbor_graph import build_graph
    from embedding_assets.embedding.sets import read_parquet

    paths = storage.paths
    db = paths.catalog_db
    emb_set = current_set(db)
    out = paths.neighbor_graph(emb_set.model_key)
    content = emb_set.content_version()

    def compute() -> Report:
        ids, vectors = read_parquet(emb_set.parquet_path)
        graph = grown = _grown(out, ids, vectors, content)
        if graph is None:
            graph = build_graph(ids, vectors, content)
        del vectors
        graph.save(out)
        how = "grown from the previous set's graph" if grown else "built"
        context.log.info(
            f"{len(ids)} images, {graph.method} neighbours ({how}), recall@10 {graph.recall:.3f}"
        )
        return Report(
            {
                "images": len(ids),
                "neighbors": graph.neighbors.shape[1],
                "method": graph.method,
                "how": how,
                "recall_at_10": dg.MetadataValue.float(round(graph.recall, 4)),
                "path": dg.MetadataValue.path(str(out)),
            }
        )

    def kept(_) -> Report | None:
        try:
            read_graph(paths, emb_set)
        except LookupError:
            return None
        return Report()

    inputs = Inputs(ASSET, (content,), scope=emb_set.model_key)
    return materialize(context, db, inputs, compute, kept)


def _grown(path, ids, vectors, content: str):
    """The stored graph of this model key grown to the current set, when it can grow."""
    from embedding_assets.common.neighbor_graph import NeighborGraph, grow_graph

    if not path.is_file():
        return None
    try:
        previous = NeighborGraph.load(path, None)
    except LookupError:
        return None
    return grow_graph(previous, ids, vectors, content)
