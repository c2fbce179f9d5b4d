"""`labels` → `classifier` → `predictions` → `label_queue`: the active-learning loop over the
embeddings.

`labels` is the append-only DuckDB log, written by the catalog's folder labels and `emb label`;
`sensors/label_sensor.py` reports its new rows as materializations. The three assets after it
are eager, so each report (or new embeddings) re-runs them once.
"""

import dagster as dg

from embedding_assets.assets.reuse import Inputs, Report, materialize, previous_metadata
from embedding_assets.common import tables
from embedding_assets.common.fingerprints import Stored, labels_version, stored
from embedding_assets.common.settings import page_url
from embedding_assets.configs.learning import ClassifierConfig, LabelQueueConfig
from embedding_assets.embedding.sets import current_set
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import registry, retrain, rounds, selection
from resources.gpu import GPU_POOL, GPUResource
from resources.paths import DataPaths
from resources.storage import StorageResource

GROUP = "active_learning"
OWNERS = ["team:ml-platform"]
GATE = "promotion_gate"
CLASSIFIER = "classifier"  # whose fingerprint names the version trained on its inputs

labels = dg.AssetSpec(
    "labels",
    description="The append-only DuckDB table `labels` (image_id, label, source, created_at; "
    "`current_labels` is the latest per image), written by `emb label` and by the catalog's "
    "folder labels. `label_sensor` reports new rows as materializations: label_id range and "
    "count, data version = the highest label_id.",
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
)

# Eager: re-run when an input updates, never while a run that includes the asset is queued or
# in progress (that run sees the new input). A `labels` log never reported yet holds only labels
# that the run which scanned them trained on, so it does not count as a missing input.
RETRAIN = dg.AutomationCondition.eager().replace(
    "any_deps_missing",
    dg.AutomationCondition.any_deps_missing().ignore(dg.AssetSelection.assets(labels.key)),
)


def _gate(passed: bool, description: str, **metadata) -> dg.AssetCheckResult:
    """The promotion gate's result: a warning, never an error (the run goes on)."""
    warn = dg.AssetCheckSeverity.WARN
    return dg.AssetCheckResult(
        check_name=GATE, passed=passed, severity=warn, description=description, metadata=metadata
    )


@dg.asset(
    deps=["embeddings", labels],
    group_name=GROUP,
    kinds={"scikitlearn", "lightgbm", "duckdb"},
    owners=OWNERS,
    pool=GPU_POOL,
    automation_condition=RETRAIN,
    check_specs=[
        dg.AssetCheckSpec(
            GATE,
            asset="classifier",
            blocking=True,
            description="The new version is promoted only if it beats the champion on the same "
            "held-out images (warns when the champion stays; fails when there is no champion).",
        )
    ],
)
def classifier(
    context: dg.AssetExecutionContext,
    config: ClassifierConfig,
    storage: StorageResource,
    gpu: GPUResource,
) -> dg.MaterializeResult:
    """Candidate classifiers (logistic regression, LightGBM on PCA components, a small MLP) on
    the labeled images' plain backbone features, compared on the same held-out split; the best
    becomes the champion only if it beats the current one (`model_versions`,
    `classifier_candidates`). The same features, labels and config reuse their version."""
    paths = storage.paths
    db = paths.catalog_db
    from embedding_assets.catalog.labels import labeled_content
    from embedding_assets.embedding.features import classifier_feature_key

    # the labeled images' features, content and labels decide it: new unlabeled images do not
    # retrain it, a removed or changed labeled image does
    parts = (classifier_feature_key(paths), labeled_content(db), config.model_dump(mode="json"))
    inputs = Inputs(CLASSIFIER, parts)

    def kept(found: Stored) -> Report | None:
        outcome = registry.outcome(db, int(found.result))
        return None if outcome is None else _reused_version(context, outcome)

    return materialize(context, db, inputs, lambda: _train(context, config, paths, gpu), kept)


def _train(
    context: dg.AssetExecutionContext, config: ClassifierConfig, paths: DataPaths, gpu: GPUResource
) -> Report:
    """Train the candidates on the GPU, then register the version and judge it (too few
    labels: a warning, the run goes on to propose the images to label first)."""
    prepared = retrain.prepare(paths, config.algorithm)
    try:
        with gpu.acquire(context.log) as choice:
            training = prepared.train(config.train_settings(choice.lightgbm_device))
    except al.NotTrainable as exc:
        context.log.warning(f"classifier not trained: {exc}")
        metadata = retrain.untrained(prepared, exc)
        return Report(metadata, checks=[_gate(False, metadata["reason"])], keep=False)
    new = retrain.register(paths, prepared, training)
    version_id, champion_id, decision = new.version_id, new.champion_id, new.decision
    context.log.info(f"classifier v{version_id} ({training.algorithm}): {decision.reason}")
    gate = _gate(
        decision.promoted, decision.reason, version_id=version_id, champion_version=champion_id
    )
    metadata = {
        **prepared.base,
        **new.figures(),
        "device": choice.describe(),
        "candidates": dg.MetadataValue.md(new.candidate_table()),
        "confusion_matrix": dg.MetadataValue.md(new.confusion_markdown()),
    }
    return Report(metadata, f"v{champion_id}", [gate], result=str(version_id))


def _reused_version(context: dg.AssetExecutionContext, outcome: registry.Outcome) -> Report:
    """The version trained on these very inputs again, and its promotion gate as it was."""
    version_id, champion_id = outcome.version_id, outcome.champion_id
    version = f"v{champion_id}"
    previous = previous_metadata(context, version)
    if "version_id" in previous and previous["version_id"].value != version_id:
        previous = {}  # the latest materialization reported another version
    metadata = {"version_id": version_id, "champion_version": champion_id}
    description = f"v{version_id}, trained on the same inputs: {outcome.decision}"
    gate = _gate(outcome.promoted, description, **metadata)
    return Report(metadata, version, [gate], base=previous)


@dg.asset(
    deps=[classifier],
    group_name=GROUP,
    kinds={"scikitlearn", "duckdb"},
    owners=OWNERS,
    automation_condition=dg.AutomationCondition.eager(),
)
def predictions(
    context: dg.AssetExecutionContext, storage: StorageResource
) -> dg.MaterializeResult:
    """The champion's predicted class, probability and uncertainty (least-confident, margin,
    entropy) for every image with an embedding, in `predictions`; the same champion and
    embeddings reuse them."""
    db = storage.paths.catalog_db
    emb_set = current_set(db)
    champion_id = registry.champion_version(db)

    def compute() -> Report:
        if champion_id is None:
            context.log.info("no champion classifier yet: nothing to predict")
            reason = (
                "no classifier yet: label at least 2 classes with 2+ images each (`emb queue` "
                "lists the images to label first)"
            )
            metadata = {"images": 0, "status": selection.WAITING, "reason": reason}
            return Report(metadata, selection.WAITING, keep=False)
        from embedding_assets.learning.predict import predict_all

        try:
            done = predict_all(storage.paths)
        except LookupError as exc:
            raise dg.Failure(str(exc)) from None
        context.log.info(f"predicted {done.images} images with champion v{done.version_id}")
        return Report(done.figures())

    inputs = Inputs(tables.PREDICTIONS, (champion_id, emb_set.content_version()))
    kept = Report({"images": emb_set.count, "version_id": champion_id})
    return materialize(context, db, inputs, compute, lambda _: kept)


@dg.asset(
    deps=[predictions],
    group_name=GROUP,
    kinds={"duckdb"},
    owners=OWNERS,
    automation_condition=dg.AutomationCondition.eager(),
)
def label_queue(
    context: dg.AssetExecutionContext, config: LabelQueueConfig, storage: StorageResource
) -> dg.MaterializeResult:
    """The next batch of images to label: the most uncertain unlabeled ones, spread over
    clusters, as a round in `label_requests` (`emb queue --export FILE.csv`), with the learning
    curve and a stop signal once accuracy has plateaued. A run without new labels replaces the
    latest round; one with no new input at all keeps it."""
    db = storage.paths.catalog_db
    key = current_set(db).model_key
    latest = registry.latest_version(db)
    uses = [tables.PREDICTIONS, tables.CLUSTERS] + (
        [tables.UNIQUENESS] if config.strategy == "uniqueness" else []
    )
    used = [stored(db, t, "" if t == tables.PREDICTIONS else key) for t in uses]
    parts = (
        [s.fingerprint if s else None for s in used],
        latest.version_id if latest else None,
        labels_version(db),
        config.model_dump(mode="json"),
    )

    def compute() -> Report:
        try:
            chosen = rounds.next_round(db, config.round_settings())
        except LookupError as exc:  # the uniqueness strategy before `uniqueness` ran
            raise dg.Failure(str(exc)) from exc
        recorded = rounds.record_round(db, chosen.requests, latest)
        patience, min_delta = config.plateau_rounds, config.plateau_min_delta
        shown = rounds.round_report(chosen, recorded, patience, min_delta)
        context.log.info(shown.log)
        metadata = {
            **shown.values,
            "learning_curve": dg.MetadataValue.md(shown.learning_curve),
            "label_in_browser": dg.MetadataValue.url(page_url("label")),
        }
        return Report(metadata, result=str(recorded.round_no))

    inputs = Inputs(rounds.ASSET, parts)
    return materialize(context, db, inputs, compute, lambda f: Report({"round": int(f.result)}))
