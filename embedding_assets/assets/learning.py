"""`labels` → `classifier` → `predictions` → `label_queue`: the active-learning loop over the
embeddings.

`labels` is the append-only DuckDB log, written by the catalog's folder labels and `emb label`;
`sensors/label_sensor.py` reports its new rows as materializations. The three assets after it
are eager, so each report (or new embeddings) re-runs them once.
"""

from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from embedding_assets.assets.reuse import Inputs, Report, materialize, previous_metadata
from embedding_assets.common import markdown, tables
from embedding_assets.common.fingerprints import Stored, labels_version, stored
from embedding_assets.common.settings import page_url
from embedding_assets.embedding.sets import current_set
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import registry, rounds, selection
from embedding_assets.learning.plots import confusion_png, learning_curve_png
from resources.gpu import GPU_POOL, GPUResource
from resources.paths import DataPaths
from resources.storage import StorageResource

GROUP = "active_learning"
OWNERS = ["team:ml-platform"]
GATE = "promotion_gate"
CLASSIFIER = "classifier"  # whose fingerprint names the version trained on its inputs
METRICS = ("accuracy", "macro_f1", "log_loss", "ece", "ece_uncalibrated", "temperature")

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


class ClassifierConfig(dg.Config):
    algorithm: Literal["auto", al.Algorithm] = Field(
        default="auto",
        description="`auto`: compare logreg, lightgbm_pca (PCA to 64-d, then LightGBM) and mlp "
        "on the same held-out split; the best macro-F1 is the challenger. A name trains that "
        "one alone (`lightgbm` = LightGBM on the raw vectors, slow on wide embeddings).",
    )
    holdout_min_labels: int = Field(
        default=200,
        description="With fewer labeled images, evaluate by stratified cross-validation "
        "instead of a held-out split.",
    )
    test_fraction: float = Field(
        default=0.2,
        description="Share of the labeled images held out, by content hash (the same images "
        "embedding_model holds out with the same share), at least one per class.",
    )
    search_budget_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds for a hyper-parameter search of the candidates (Optuna, "
        "cross-validated on the training split; trials in `classifier_trials`); 0 = off.",
    )
    search_min_labels: int = Field(
        default=200, description="No search with fewer labeled images (too few to tell)."
    )
    seed: int = Field(default=0, description="Random seed of folds and models.")

    @property
    def candidates(self) -> tuple[str, ...]:
        return al.DEFAULT_CANDIDATES if self.algorithm == "auto" else (self.algorithm,)


def _candidate_table(training: al.Training, decision: al.Decision) -> str:
    """The comparison as the UI shows it: one row per candidate, the challenger marked."""
    outcome = "challenger, promoted" if decision.promoted else "challenger, champion stays"
    rows = [
        [
            name,
            f"{m['accuracy']:.4f}",
            f"{m['macro_f1']:.4f}",
            f"{m['log_loss']:.4f}",
            f"{m['ece_uncalibrated']:.3f} -> {m['ece']:.3f}",
            f"{m['fit_seconds']:.2f}",
            m["n_eval"],
            outcome if name == training.algorithm else "",
        ]
        for name, m in training.candidates.items()
    ]
    header = ["candidate", "accuracy", "macro-F1", "log-loss", "ECE (calibrated)", "fit s"]
    header += ["n_eval", ""]
    return markdown.table(header, rows)


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
    """Candidate classifiers (logistic regression, LightGBM on PCA components, a small MLP)
    trained on the labeled images' plain backbone features (a trained head has seen the same
    labels and would flatter the held-out score) and compared on the same stratified held-out
    split (cross-validation while labels are few). Each training is a row of `model_versions`
    with its candidates in `classifier_candidates`; the best becomes the champion only if it
    beats the current one. The same embeddings, labels and config reuse the version trained
    on them."""
    paths = storage.paths
    db = paths.catalog_db
    from embedding_assets.embedding.features import classifier_feature_key

    # the labeled images' features decide it: new unlabeled images do not retrain it
    parts = (classifier_feature_key(db), labels_version(db), config.model_dump(mode="json"))
    inputs = Inputs(CLASSIFIER, parts)

    def kept(found: Stored) -> Report | None:
        outcome = registry.outcome(db, int(found.result))
        return None if outcome is None else _reused_version(context, outcome)

    return materialize(context, db, inputs, lambda: _train(context, config, paths, gpu), kept)


def _train(
    context: dg.AssetExecutionContext, config: ClassifierConfig, paths: DataPaths, gpu: GPUResource
) -> Report:
    """Train the candidates, register the version and judge it against the champion."""
    from embedding_assets.embedding.features import classifier_features

    db = paths.catalog_db
    found = classifier_features(paths)
    emb_set, features, ids, vectors = found.emb_set, found.key, found.ids, found.matrix
    found_labels = registry.labeled(db, ids)
    idx, y, max_label_id = found_labels.positions, found_labels.labels, found_labels.max_label_id
    champ = registry.champion(db)
    base = {"labeled_images": len(y), "embedding_model": emb_set.model_key, "features": features}
    judged = _judged(paths, emb_set.model_key, features, ids[idx], config)
    base["compared_on"] = (
        "the judged fine-tune's features (blind to the held-out images)"
        if judged.select_x is not None
        else "the same features"
    )
    try:
        with gpu.acquire(context.log) as choice:
            settings = al.TrainSettings(
                algorithms=config.candidates,
                device=choice.lightgbm_device,
                holdout_min_labels=config.holdout_min_labels,
                test_fraction=config.test_fraction,
                seed=config.seed,
                search_budget_s=config.search_budget_s,
                search_min_labels=config.search_min_labels,
            )
            training = al.train(
                ids[idx],
                vectors[idx],
                y,
                settings,
                split_keys=found_labels.split_keys,
                judged=judged,
            )
    except al.NotTrainable as exc:
        return _not_trained(context, base, exc, champ.version_id if champ else None)
    decision = al.compare_with_champion(training, champ, features)
    model_path = registry.save_model(paths.models_dir, training, features)
    version_id = registry.register(db, training, decision, model_path, features, max_label_id)
    champion_id = version_id if decision.promoted else champ.version_id
    context.log.info(f"classifier v{version_id} ({training.algorithm}): {decision.reason}")
    m = training.metrics
    png = confusion_png(
        training.confusion(),
        training.classes.tolist(),
        f"v{version_id} {training.algorithm} ({training.eval_method})",
    )
    plot_path = paths.ensure(paths.plots_dir / "classifier") / f"confusion_v{version_id}.png"
    plot_path.write_bytes(png)
    gate = dg.AssetCheckResult(
        check_name=GATE,
        passed=decision.promoted,
        severity=dg.AssetCheckSeverity.WARN,
        description=decision.reason,
        metadata={"version_id": version_id, "champion_version": champion_id},
    )
    metadata = {
        **base,
        "status": "trained",
        "version_id": version_id,
        "algorithm": training.algorithm,
        "eval_method": training.eval_method,
        **{k: dg.MetadataValue.float(round(m[k], 4)) for k in METRICS},
        "candidates": dg.MetadataValue.md(_candidate_table(training, decision)),
        "promoted": decision.promoted,
        "decision": decision.reason,
        "champion_version": champion_id,
        "classes": dg.MetadataValue.json(training.classes.tolist()),
        "dropped_classes (fewer than 2 labels)": dg.MetadataValue.json(training.dropped_classes),
        "max_label_id": max_label_id or 0,
        "device": choice.describe(),
        "confusion_matrix": dg.MetadataValue.md(markdown.image(png, "confusion matrix")),
        "model_path": dg.MetadataValue.path(str(model_path)),
    }
    return Report(metadata, f"v{champion_id}", [gate], result=str(version_id))


def _not_trained(
    context: dg.AssetExecutionContext, base: dict, exc: Exception, champion_id: int | None
) -> Report:
    """Too few labels to train: a warning, not a failure. Most users start with none, and
    `label_queue` then proposes the images to label first (a cold start), so the run goes on;
    a champion, if any, stays."""
    context.log.warning(f"classifier not trained: {exc}")
    if champion_id is None:
        status = selection.WAITING
        reason = f"{status}: {exc}; `emb queue` lists the images to label first"
    else:
        status, reason = "skipped", f"no new version: {exc}; champion v{champion_id} stays"
    gate = dg.AssetCheckResult(
        check_name=GATE, passed=False, severity=dg.AssetCheckSeverity.WARN, description=reason
    )
    return Report({**base, "status": status, "reason": reason}, checks=[gate], keep=False)


def _judged(paths, set_key: str, features: str, ids: np.ndarray, config) -> al.Judged:
    """What the candidates are compared on when the embeddings come from a fine-tune trained
    on every label: the features of the model the gate judged (blind to the held-out images),
    and the cosine heads, judged and final."""
    from embedding_assets.catalog.images import usable_files
    from embedding_assets.embedding.run import RunOptions, cached_features
    from embedding_assets.embedding.training import trained_model

    model = trained_model(paths.catalog_db, set_key) if features == set_key else None
    if model is None:
        return al.Judged()
    select_x, prefit, prefit_final = None, {}, {}
    if model.classifier is not None and config.algorithm == "auto":
        judged = model.gate_classifier or model.classifier
        prefit = {al.COSINE_HEAD: al.CosineHead.load(judged)}
        prefit_final = {al.COSINE_HEAD: al.CosineHead.load(model.classifier)}
    if model.gate_params is not None:
        usable = usable_files(paths.catalog_db)
        rows = usable.rows_of(ids)
        if (rows >= 0).all():
            wanted = usable.subset(rows)
            found, kept = cached_features(
                paths, model.gate_params, wanted.fs_paths, wanted.hashes, RunOptions()
            )
            if len(kept) == len(rows):
                select_x = found
    return al.Judged(select_x, prefit, prefit_final)


def _reused_version(context: dg.AssetExecutionContext, outcome: registry.Outcome) -> Report:
    """The version trained on these very inputs again, and its promotion gate as it was."""
    version_id, champion_id = outcome.version_id, outcome.champion_id
    version = f"v{champion_id}"
    previous = previous_metadata(context, version)
    if "version_id" in previous and previous["version_id"].value != version_id:
        previous = {}  # the latest materialization reported another version
    gate = dg.AssetCheckResult(
        check_name=GATE,
        passed=outcome.promoted,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"v{version_id}, trained on the same inputs: {outcome.decision}",
        metadata={"version_id": version_id, "champion_version": champion_id},
    )
    metadata = {"version_id": version_id, "champion_version": champion_id}
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
    """The champion classifier's predicted class, probability and uncertainty (least-confident,
    margin, entropy) for every image with an embedding, in the DuckDB table `predictions`;
    the same champion and embeddings reuse the stored predictions."""
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
        means = {f"mean_{k}": dg.MetadataValue.float(round(v, 4)) for k, v in done.means.items()}
        metadata = {
            "images": done.images,
            "version_id": done.version_id,
            "predicted_per_class": dg.MetadataValue.json(done.per_class),
            **means,
        }
        return Report(metadata)

    inputs = Inputs(tables.PREDICTIONS, (champion_id, emb_set.content_version()))
    kept = Report({"images": emb_set.count, "version_id": champion_id})
    return materialize(context, db, inputs, compute, lambda _: kept)


class LabelQueueConfig(dg.Config):
    batch_size: int = Field(
        default=0, description="Images to ask about per round; 0 = batch_fraction of the pool."
    )
    batch_fraction: float = Field(
        default=0.05, description="Share of the unlabeled pool per round when batch_size is 0."
    )
    strategy: selection.Strategy = Field(
        default="uncertainty",
        description="The most uncertain images, the most unique ones (table `uniqueness`: "
        "covers the data rather than the model's doubts), or a random sample.",
    )
    uncertainty: selection.UncertaintyMeasure = Field(
        default="margin", description="How uncertainty is measured."
    )
    max_cluster_share: float = Field(
        default=0.3, description="Diversity guard: no cluster fills more of a batch than this."
    )
    candidate_factor: int = Field(
        default=10, description="The guard picks from the batch_size x this most uncertain."
    )
    fallback_clusters: int = Field(
        default=10, description="k of the k-means used when the `clusters` table has none."
    )
    plateau_rounds: int = Field(
        default=3, description="Stop signal after this many rounds without improvement."
    )
    plateau_min_delta: float = Field(
        default=0.005, description="Accuracy gain that counts as improvement."
    )
    seed: int = Field(default=0, description="Seed of the random strategy and k-means.")

    def settings(self) -> dict:
        """The fields that choose a round (`rounds.RoundSettings`), not when to stop."""
        return self.model_dump(exclude={"plateau_rounds", "plateau_min_delta"})


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
    clusters, as a round in `label_requests` (export: `emb queue --export FILE.csv`), with
    the learning curve and a stop signal once accuracy has plateaued. A run without new labels
    replaces the latest round instead of adding one; one with no new input at all (predictions,
    classifier version, labels, clusters, config) keeps it."""
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
            chosen = rounds.next_round(db, rounds.RoundSettings(**config.settings()))
        except LookupError as exc:  # the uniqueness strategy before `uniqueness` ran
            raise dg.Failure(str(exc)) from exc
        round_no, new_round, curve = rounds.record_round(db, chosen.requests, latest)
        context.log.info(
            f"round {round_no}{'' if new_round else ' (no new labels: replaced)'}: "
            f"{chosen.requests.num_rows} of {chosen.pool} unlabeled images requested"
        )
        metadata = _round_metadata(chosen, round_no, new_round, curve, config)
        return Report(metadata, result=str(round_no))

    inputs = Inputs(rounds.ASSET, parts)
    return materialize(context, db, inputs, compute, lambda f: Report({"round": int(f.result)}))


def _round_metadata(
    chosen: rounds.NextRound, round_no: int, new_round: bool, curve: list, config: LabelQueueConfig
) -> dict:
    """The round, how it was chosen, the learning curve and whether to stop labeling."""
    accs = [a for _, a in curve if not np.isnan(a)]
    stop = selection.plateaued(accs, config.plateau_rounds, config.plateau_min_delta)
    reason = (
        f"accuracy gained < {config.plateau_min_delta} over the last {config.plateau_rounds} "
        "rounds: more labels are unlikely to help"
        if stop
        else "keep labeling"
    )
    png = learning_curve_png([n for n, _ in curve], [a for _, a in curve])
    return {
        "round": round_no,
        "new_round": dg.MetadataValue.bool(new_round),
        "batch_size": chosen.requests.num_rows,
        "unlabeled_pool": chosen.pool,
        "strategy": chosen.strategy,
        "clusters_in_batch": chosen.clusters_in_batch,
        "largest_cluster_share": dg.MetadataValue.float(round(chosen.largest_cluster_share, 3)),
        "cluster_source": chosen.cluster_source,
        "mean_uncertainty_batch": dg.MetadataValue.float(round(chosen.mean_score_batch, 4)),
        "mean_uncertainty_pool": dg.MetadataValue.float(round(chosen.mean_score_pool, 4)),
        "stop_signal": stop,
        "stop_reason": reason,
        "learning_curve": dg.MetadataValue.md(markdown.image(png, "learning curve")),
        "export": "emb queue --export queue.csv",
        "label_in_browser": dg.MetadataValue.url(page_url("label")),
    }
