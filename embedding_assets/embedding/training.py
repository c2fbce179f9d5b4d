"""Train an embedding model on the labeled images, judge it on every one of them against the
current model (`judging`: two half-trainings, each judging the half it left out), and decide
whether it replaces the current one; a promoted model is trained again on every label,
starting from the average of the two half-trainings, for two thirds of the epochs. Plain
Python over DuckDB, the LMDB feature cache and `metric_learning`; the `embedding_model` asset
is a thin wrapper.

The halves are fixed by content hash, so an image stays in its half as labels grow: no model
is ever scored on images it was trained on, and the current model is re-scored on exactly the
images the candidate is scored on, by the half-trainings it was judged with. With many labels
(`held_out`) one held-out split judges as surely, and one training on the rest is judged and
served: at equal epochs it trains on 80 % of the labels once, where two half-trainings and a
final one from their average train on 150 %.

torch, the training code and the evaluation metrics load inside the functions that train or
evaluate: deciding that nothing changed (the usual no-op run) imports none of them.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.catalog.images import load_image
from embedding_assets.catalog.labels import labeled_split
from embedding_assets.common import tables
from embedding_assets.common.choices import Mode
from embedding_assets.common.clock import utc_now
from embedding_assets.common.fingerprints import hash_fraction
from embedding_assets.common.promotion import decide
from embedding_assets.embedding import judging, sets
from embedding_assets.embedding.backbones import Preprocess, file_spec
from embedding_assets.embedding.embedder import EmbedParams
from embedding_assets.embedding.judging import LabeledImages, Paired, judge
from embedding_assets.embedding.train_config import TrainConfig
from resources.duckdb_store import connect
from resources.paths import DataPaths

if TYPE_CHECKING:
    import torch
    from torch import nn

    from embedding_assets.embedding.finetune import FrozenOutputs, WarmStart
    from embedding_assets.embedding.metric_learning import TrainResult
    from embedding_assets.embedding.run_options import RunOptions

PRIMARY = "knn_top1"  # the number that decides promotion
# What a trained model changes of the backbone settings it was trained on.
SERVED_FIELDS = ("weights", "head", "image_size", "center_crop")
VAL_FRACTION = 0.15  # of the training images, for early stopping only
MIN_LABELED = 20
JUDGED_ENOUGH = 1_000  # held-out images from which one held-out split judges (`held_out`)


class ModelStatus(StrEnum):
    """What a materialization of `embedding_model` did."""

    TRAINED = "trained"  # a new model, promoted or not
    UNCHANGED = "unchanged"  # the model trained on the same labels and settings stands
    WAITING = "waiting"  # labels changed too little since the last training to train again
    SKIPPED = "skipped"  # too few labels (the reason says what to label)


@dataclass(frozen=True)
class ModelSettings:
    """What the `embedding_model` asset's config decides of a training, built once from it:
    the backbone it starts from, the mode and the TrainConfig, the held-out share of a champion
    trained before halves, and the kNN top-1 gain a new model needs to be promoted."""

    base: EmbedParams
    mode: Mode
    cfg: TrainConfig
    holdout: float = 0.2
    min_improvement: float = 0.0
    retrain_growth: float = 0.5  # train again once labels grew this share (or a class appeared)


@dataclass(frozen=True)
class LastTraining:
    """The newest training of this backbone, mode and settings: what it learned from."""

    model_id: int
    labels: int
    classes: set[str] | None  # None: recorded before classes were kept


def last_training(db: Path, base_key: str, mode: str, cfg: TrainConfig) -> LastTraining | None:
    with connect(db, read_only=True) as con:
        row = con.execute(
            # n_train counts every label since trainings judge halves; before, the held-out too
            "SELECT model_id, CASE WHEN half_params IS NULL THEN n_train + n_eval ELSE n_train "
            f"END, classes FROM {tables.EMBEDDING_MODELS} "
            "WHERE base_key = ? AND mode = ? AND config = ?::JSON "
            "ORDER BY model_id DESC LIMIT 1",
            [base_key, mode, json.dumps(asdict(cfg))],
        ).fetchone()
    if row is None:
        return None
    return LastTraining(row[0], row[1], None if row[2] is None else set(json.loads(row[2])))


def why_wait(last: LastTraining | None, labels: np.ndarray, growth: float) -> str | None:
    """Why the labels do not call for a new training yet (None: train). A few new labels
    change the classifier, which follows every label; the fine-tune costs minutes and is
    trained again when the labels grew by `growth` or a class appeared."""
    if last is None or growth <= 0:
        return None
    new_classes = set(labels.tolist()) - last.classes if last.classes is not None else set()
    if new_classes or len(labels) >= (1 + growth) * last.labels:
        return None
    return (
        f"{len(labels)} labels, {len(labels) - last.labels:+d} since model {last.model_id} was "
        f"trained on {last.labels}, no new class: the fine-tune trains again once labels grow "
        f"{growth:.0%} or a class appears (retrain_growth; 0 trains on every change), the "
        "classifier follows every label"
    )


@dataclass
class Outcome:
    """What one materialization did; `trained` is False when it skipped or reused a model."""

    status: ModelStatus
    reason: str
    promoted: bool = True
    model_id: int | None = None
    metrics: dict = field(default_factory=dict)
    current_metrics: dict = field(default_factory=dict)
    current_name: str = ""
    history: list[dict] = field(default_factory=list)
    n_train: int = 0
    n_eval: int = 0
    seconds: float = 0.0
    params: EmbedParams | None = None
    stopped_early: bool = False  # by a plateau (metric losses) or the time budget (cosface)
    frozen_stride: int = 0  # fine-tune: the output stride of the stages kept as pretrained
    train_size: int = 0  # fine-tune: the image size it trained and is served at
    paired: Paired | None = None  # what the promotion decided on


def labeled_images(db: Path) -> LabeledImages:
    """Usable images with a current label, with the content-hash keys that put them in halves."""
    found = labeled_split(db)
    return LabeledImages(
        found.ids.tolist(),
        found.fs_paths,
        found.hashes,
        found.labels,
        found.keys,
    )


def why_not_trainable(data: LabeledImages, needs_labels: bool) -> str | None:
    """A reason to skip training, or None when the labeled set supports it."""
    n = len(data.labels)
    if n < MIN_LABELED:
        return f"only {n} labeled usable images (need {MIN_LABELED}); label more with `emb labels`"
    from embedding_assets.embedding.judging import HALVES, halves

    half = halves(data.keys)
    for h in range(HALVES):
        if needs_labels and len(np.unique(data.labels[half != h])) < 2:
            return "a half of the labeled images has fewer than 2 classes; label more images"
        _, counts = np.unique(data.labels[half == h], return_counts=True)
        if not (counts >= 2).any():
            return "a half of the labeled images has no class with 2 images; label more images"
    return None


def held_out(data: LabeledImages, holdout: float) -> np.ndarray | None:
    """The labeled images of the held-out split by key when there are JUDGED_ENOUGH of them
    (None: judge by halves). A sign test over a thousand images tells a better model from a
    worse one as surely as over every label, and the model trained on the rest is served as
    it was judged: training again for the last `holdout` share of labels would cost a second
    full training (at 10,000 labels, two half-trainings and the final one took 560 s)."""
    mask = np.asarray(data.keys) < holdout
    return mask if int(mask.sum()) >= JUDGED_ENOUGH else None


def training_key(base_key: str, mode: str, cfg: TrainConfig, data: LabeledImages) -> str:
    """Same backbone, settings and labeled content -> same model: no need to train again."""
    pairs = sorted(zip(data.hashes, data.labels.tolist(), strict=True))
    blob = json.dumps([base_key, mode, asdict(cfg), pairs])
    return hashlib.sha256(blob.encode()).hexdigest()


def current_model(paths: DataPaths, base: EmbedParams) -> tuple[EmbedParams, int | None]:
    """(params, model_id) of the newest promoted model trained on `base`'s backbone whose files
    still exist; (`base` unchanged, None) when there is none: the plain backbone."""
    key = replace(base, head=None, store_dtype="float32").model_key()  # as embedding_model keys it
    with connect(paths.catalog_db, read_only=True) as con:
        rows = (
            con.execute(
                f"SELECT model_id, head_path, trunk_path, params FROM {tables.EMBEDDING_MODELS} "
                "WHERE base_key = ? AND promoted ORDER BY model_id DESC LIMIT 1",
                [key],
            ).fetchall()
            if tables.exists(con, tables.EMBEDDING_MODELS)
            else []
        )
    if not rows:
        return base, None
    model_id, head, trunk, served = rows[0]
    head = str(paths.resolve(head)) if head else None
    trunk = str(paths.resolve(trunk)) if trunk else None
    if (head and not Path(head).is_file()) or (trunk and not Path(trunk).is_file()):
        return base, None
    if served:  # how the model's embeddings are made (its size and crop may differ from base)
        stored = sets.loaded_params(paths, json.loads(served))
        return replace(base, **{k: stored[k] for k in SERVED_FIELDS if k in stored}), model_id
    return replace(base, weights=trunk or base.weights, head=head), model_id


@dataclass(frozen=True)
class TrainedModel:
    """What the classifier needs of the model whose embeddings it learns from: its cosine
    classifier (cosface), and the model the gate judged, which never saw the held-out images
    (the served one was trained again on every label)."""

    classifier: Path | None
    gate_params: EmbedParams | None  # None: the served model is the judged one
    gate_classifier: Path | None
    # the half-trainings it was judged with (`judging`); None: judged on a held-out split
    halves: tuple[EmbedParams, ...] | None = None


def trained_model(paths: DataPaths, model_key: str) -> TrainedModel | None:
    """The trained model whose embeddings have `model_key`, None for a plain backbone."""
    with connect(paths.catalog_db, read_only=True) as con:
        if not tables.exists(con, tables.EMBEDDING_MODELS):
            return None
        rows = con.execute(
            "SELECT classifier_path, params, gate_params, gate_classifier_path, half_params "
            f"FROM {tables.EMBEDDING_MODELS} WHERE model_key = ? ORDER BY model_id DESC LIMIT 1",
            [model_key],
        ).fetchall()
    if not rows:
        return None
    classifier, served, gate, gate_classifier, half_params = rows[0]

    def file(stored: str | None) -> Path | None:
        path = paths.resolve(stored) if stored else None
        return path if path is not None and path.is_file() else None

    def params(stored: dict) -> EmbedParams:
        return EmbedParams(**sets.loaded_params(paths, stored))

    judged = params(json.loads(gate)) if gate and gate != served else None
    found = tuple(params(p) for p in json.loads(half_params)) if half_params else None
    return TrainedModel(file(classifier), judged, file(gate_classifier), found)


@dataclass(frozen=True)
class Rival:
    """How the current model is judged: by the models of it that never trained on the images
    judged (`halves[h]` judges half h), on the labeled images `within` (None: all)."""

    halves: tuple[EmbedParams, ...]
    within: np.ndarray | None = None


def rival(paths: DataPaths, current: EmbedParams, data: LabeledImages, holdout: float) -> Rival:
    """A champion trained again on every label has seen every image, so it is judged as it was
    judged, by its half-trainings; otherwise it could never lose. One judged on a held-out
    split (before halves) is judged by that training, on the held-out images only (membership
    is by content hash: none of today's was in that training). The plain backbone trained on
    nothing."""
    from embedding_assets.embedding.judging import HALVES

    found = trained_model(paths, current.model_key())
    if found is None:
        return Rival((current,) * HALVES)
    if found.halves:
        return Rival(found.halves)
    return Rival((found.gate_params or current,) * HALVES, data.keys < holdout)


def trained_params(paths: DataPaths, base: EmbedParams) -> EmbedParams:
    """`base` with the current model's head (and fine-tuned trunk), if there is one."""
    return current_model(paths, base)[0]


def _uint8_images(fs_paths: list, pre: Preprocess) -> torch.Tensor:
    """(n, 3, crop, crop) uint8, resized and cropped as inference does for the trunk file."""
    import torch
    from torchvision.transforms import v2

    prep = v2.Compose(pre.geometry())
    return torch.stack([prep(load_image(p)) for p in fs_paths])


@dataclass
class _Labeled:
    """The labeled images and, for a fine-tune, every one of them as the fine-tuned trunk sees
    it with the frozen stages' outputs of them (finetune.FrozenOutputs): made once for the
    two half-trainings and the final one on every label, which start from the same pretrained
    weights."""

    data: LabeledImages
    images: torch.Tensor | None = None
    frozen: FrozenOutputs | None = None
    seconds: float = 0.0

    def prepare(self, pre: Preprocess, trunk: nn.Module, cfg: TrainConfig, device: str) -> None:
        if self.images is not None:
            return
        from embedding_assets.embedding.finetune import frozen_outputs
        from embedding_assets.embedding.metric_learning import float_input
        from embedding_assets.embedding.trunk_split import split_at_stride

        started = time.perf_counter()
        self.images = _uint8_images(self.data.fs_paths, pre)
        split = split_at_stride(trunk, cfg.frozen_stride)
        if split is not None:
            to_float = float_input(pre.mean, pre.std)
            self.frozen = frozen_outputs(split.prefix, self.images, to_float, device)
        self.seconds = time.perf_counter() - started


@dataclass(frozen=True)
class _Job:
    """What every training of one materialization shares."""

    paths: DataPaths
    settings: ModelSettings
    labeled: _Labeled
    options: RunOptions
    progress: Callable[[dict], None] | None


def _train(job: _Job, train_mask: np.ndarray, start: WarmStart | None = None) -> TrainResult:
    """Train on the labeled images of `train_mask`: one half (a training the gate judges on
    the other), or every one (the final fit of a model the gate has promoted, from `start`,
    the average of the half-trainings, where there is one); with few of them, for more epochs
    and from `start` for two thirds as many (`TrainConfig.epochs_for`)."""
    from embedding_assets.embedding.backbones import build_backbone
    from embedding_assets.embedding.finetune import finetune_classifier
    from embedding_assets.embedding.metric_learning import FitSettings, finetune, train_head
    from embedding_assets.embedding.run import cached_features

    paths, settings, labeled, options = job.paths, job.settings, job.labeled, job.options
    base, data = settings.base, labeled.data
    epochs = settings.cfg.epochs_for(int(train_mask.sum()), warm=start is not None)
    cfg = replace(settings.cfg, epochs=epochs)
    fit_settings = FitSettings(cfg, options.device, job.progress)
    is_val = np.array([hash_fraction(h[8:]) < VAL_FRACTION for h in data.hashes]) & train_mask
    fit = train_mask & ~is_val
    fit_paths, fit_hashes, y_fit = data.subset(fit)
    val_paths, val_hashes, y_val = data.subset(is_val)
    if settings.mode == "head":
        X_fit, keep = cached_features(paths, base, fit_paths, fit_hashes, options)
        X_val, keep_val = (
            cached_features(paths, base, val_paths, val_hashes, options)
            if val_paths
            else (None, [])
        )
        return train_head(
            X_fit,
            y_fit[keep],
            fit_settings,
            X_val=X_val,
            y_val=y_val[keep_val] if val_paths else None,
        )
    # The fine-tuned trunk is served as a local .pth file: train with that file's preprocessing.
    trunk = replace(build_backbone(base.spec()), spec=trunk_spec(base, cfg))
    pre = trunk.spec.preprocess
    if cfg.loss == "cosface":  # every training image: no early stopping, the epochs are fixed
        labeled.prepare(pre, trunk.model, cfg, options.device)
        rows = np.flatnonzero(train_mask)
        return finetune_classifier(
            trunk,
            labeled.images[rows],
            data.labels[rows],
            fit_settings,
            frozen=labeled.frozen.subset(rows) if labeled.frozen is not None else None,
            start=start,
        )
    return finetune(
        trunk,
        _uint8_images(fit_paths, pre),
        None if cfg.loss == "ntxent" else y_fit,
        fit_settings,
        images_val=_uint8_images(val_paths, pre) if val_paths else None,
        y_val=y_val if val_paths else None,
    )


def trunk_spec(base: EmbedParams, cfg: TrainConfig):
    """How a fine-tuned trunk of `base` sees images, in training and when serving: at the
    training size, the short side resized to it (no centre crop: it cut 12 % of small photos
    for nothing)."""
    return file_spec(base.model, cfg.image_size or base.image_size, center_crop=False)


@dataclass(frozen=True)
class SavedModel:
    head: Path | None  # the projection head the embeddings go through
    trunk: Path | None  # the fine-tuned backbone
    classifier: Path | None  # a cosine classifier over the trunk's features (cosface)


def _save(models_dir: Path, name: str, result: TrainResult, meta: dict) -> SavedModel:
    """The model's files named `name` (from the training key), written atomically."""
    import torch

    from embedding_assets.embedding.heads import save_classifier, save_head

    folder = models_dir / "embedding"
    folder.mkdir(parents=True, exist_ok=True)
    head = trunk = classifier = None
    if result.head is not None:
        head = save_head(result.head, folder / f"{name}-head.pt", meta)
    if result.backbone is not None:
        trunk = folder / f"{name}-trunk.pth"
        tmp = trunk.with_suffix(".pth.tmp")
        torch.save(result.backbone.state_dict(), tmp)
        tmp.replace(trunk)
    if result.classifier is not None:
        path = folder / f"{name}-classifier.pt"
        classifier = save_classifier(result.classifier, result.classes, path)
    return SavedModel(head, trunk, classifier)


def _served(base: EmbedParams, cfg: TrainConfig, saved: SavedModel) -> EmbedParams:
    """The settings the new model's embeddings are made with."""
    if saved.trunk is None:
        return replace(base, head=str(saved.head))
    return replace(
        base,
        weights=str(saved.trunk),
        head=str(saved.head) if saved.head else None,
        image_size=trunk_spec(base, cfg).preprocess.crop,
        center_crop=False,
    )


def _train_halves(job: _Job) -> list[TrainResult]:
    """One training per half of the labeled images, each on the other half (`judging`), with
    an equal share of the time budget: together they cost what one training on every label
    costs, except with few labels, where each runs at least `min_steps` batches."""
    from embedding_assets.embedding.judging import HALVES, halves

    cfg = job.settings.cfg
    if cfg.time_budget_s:
        shared = replace(cfg, time_budget_s=cfg.time_budget_s / HALVES)
        job = replace(job, settings=replace(job.settings, cfg=shared))
    half = halves(job.labeled.data.keys)
    return [_train(job, half != h) for h in range(HALVES)]


def _averaged(results: list[TrainResult]) -> WarmStart | None:
    """Where the served training starts: the average of the half-trainings, which started from
    the same pretrained trunk (cosface fine-tunes; `finetune.averaged`), else None (the
    pretrained weights)."""
    if any(r.backbone is None or r.classifier is None for r in results):
        return None
    from embedding_assets.embedding.finetune import averaged

    return averaged(results)


@dataclass(frozen=True)
class Trained:
    """A training the gate judges, and the name its files get."""

    name: str
    result: TrainResult


def _challenge(job: _Job, within: np.ndarray | None) -> list[Trained]:
    """The trainings the gate judges: one per half, or with a held-out split (`held_out`)
    one on the images outside it, with the whole time budget."""
    if within is None:
        return [Trained(f"half{h}", t) for h, t in enumerate(_train_halves(job))]
    return [Trained("rest", _train(job, ~within))]


def _judging_only(options: RunOptions, halves: tuple[EmbedParams, ...], data: LabeledImages):
    """How half-trainings embed the halves they judge, their only images (`run_options.once`; 250
    photos at 160 px: ~13 s to export, ~3 s on torch). A served model's export is made once
    and reused by every later run, so it is always worth it."""
    from embedding_assets.embedding.run_options import once

    largest = int(np.bincount(judging.halves(data.keys)).max())
    return once(options, largest, halves[0].spec().preprocess.crop)


def _challenger_features(
    paths: DataPaths,
    trained: list[TrainResult],
    half_params: list[EmbedParams],
    labeled: _Labeled,
    options: RunOptions,
) -> list[judging.Features]:
    """How each half-training embeds the half it judges: from the frozen stages' outputs that
    training kept in memory (a cosface fine-tune; on the user trial this saved ~10 s of
    decoding and running the frozen stages again), else through the served path."""
    from embedding_assets.embedding.finetune import trunk_features

    frozen = labeled.frozen
    if frozen is None or any(t.backbone is None for t in trained):
        half_options = _judging_only(options, tuple(half_params), labeled.data)
        return [judging.served(paths, p, labeled.data, half_options) for p in half_params]

    def in_memory(result: TrainResult) -> judging.Features:
        def of(mask: np.ndarray) -> tuple[np.ndarray, list[int]]:
            rows = np.flatnonzero(mask)
            x = trunk_features(result.backbone, result.frozen_stride, frozen.subset(rows))
            return x, list(range(len(rows)))

        return of

    return [in_memory(t) for t in trained]


def train_embedding_model(
    paths: DataPaths,
    settings: ModelSettings,
    *,
    options: RunOptions | None = None,
    progress: Callable[[dict], None] | None = None,
    feature_progress: Callable[[int, int], None] | None = None,
) -> Outcome:
    """Train (or reuse) a model on the labeled images and promote it only if it scores at least
    `settings.min_improvement` better kNN top-1 than the current embeddings (the champion, or
    the plain backbone when there is none), every labeled image judged once (`judging`)."""
    started = utc_now()
    mode, cfg, holdout = settings.mode, settings.cfg, settings.holdout
    cfg.check(mode)
    if not 0 < holdout <= 0.5:  # a held-out split of a champion from before halves
        raise ValueError(f"holdout={holdout}: use a fraction above 0 and at most 0.5, e.g. 0.2")
    base = replace(settings.base, head=None, store_dtype="float32")
    settings = replace(settings, base=base)  # what the trainings start from
    data = labeled_images(paths.catalog_db)
    reason = why_not_trainable(data, needs_labels=cfg.loss != "ntxent")
    if reason:
        return Outcome(ModelStatus.SKIPPED, reason, params=trained_params(paths, base))
    base_key = base.model_key()
    key = training_key(base_key, mode, cfg, data)
    with connect(paths.catalog_db, read_only=True) as con:
        seen = con.execute(
            f"SELECT model_id, promoted, metrics, decision FROM {tables.EMBEDDING_MODELS} "
            "WHERE fingerprint = ? ORDER BY model_id DESC LIMIT 1",
            [key],
        ).fetchall()
    if seen:
        model_id, promoted, metrics, decision = seen[0]
        return Outcome(
            ModelStatus.UNCHANGED,
            f"same backbone, settings and labels as model {model_id}: {decision}",
            promoted=promoted,
            model_id=model_id,
            metrics=json.loads(metrics),
            params=trained_params(paths, base),
        )

    wait = why_wait(
        last_training(paths.catalog_db, base_key, mode, cfg), data.labels, settings.retrain_growth
    )
    if wait:
        return Outcome(ModelStatus.WAITING, wait, params=trained_params(paths, base))

    from embedding_assets.embedding.run import RunOptions, cached_features

    options = options or RunOptions()
    if mode == "head":  # one backbone pass over every labeled image: the head trains on them
        cached_features(paths, base, data.fs_paths, data.hashes, options, feature_progress)
    current, current_id = current_model(paths, base)
    current_name = f"model {current_id}" if current_id else "the plain backbone"
    against = rival(paths, current, data, holdout)
    within = held_out(data, holdout)  # None: every labeled image, by halves
    judged = against.within if within is None else within
    served_now = against.halves[0] == current  # the plain backbone, judged by itself
    rival_options = options if served_now else _judging_only(options, against.halves, data)
    rival_features = [judging.served(paths, p, data, rival_options) for p in against.halves]
    judged_current = judge(data, rival_features, judged)

    labeled = _Labeled(data)
    name = key[:16]
    job = _Job(paths, settings, labeled, options, progress)
    trained = _challenge(job, within)
    meta = {"mode": mode, "config": asdict(cfg), "base_key": base_key}
    saved_parts = [_save(paths.models_dir, f"{name}-{t.name}", t.result, meta) for t in trained]
    part_params = [_served(base, cfg, saved) for saved in saved_parts]
    results = [t.result for t in trained]
    features = _challenger_features(paths, results, part_params, labeled, options)
    # one training on the rest judges the held-out split, which lies in half 0
    features = features * (judging.HALVES // len(features))
    challenger = judge(data, features, judged)

    verdict = decide(challenger.hits, judged_current.hits, min_improvement=settings.min_improvement)
    promoted = verdict.promoted
    metrics, current_metrics = challenger.metrics, judged_current.metrics
    n_eval = int(challenger.judged.sum())
    how = (
        "each judged by a training that left it out"
        if within is None
        else f"held out by content hash ({holdout:.0%}), which the training left out"
    )
    decision = (
        f"{'promoted' if promoted else 'not promoted, keeping ' + current_name}: kNN top-1 "
        f"{metrics.get(PRIMARY, 0):.3f} vs {current_metrics.get(PRIMARY, 0):.3f} for "
        f"{current_name} on {n_eval} labeled images, {how}; {verdict.reason}"
    )
    # half 0 holds the classifier's held-out split by key: its training is the one blind to it
    gate_saved = saved = saved_parts[0]
    candidate = served = part_params[0]
    result = results[0]  # the training this row records: the final one once there is one
    seconds = labeled.seconds + sum(t.seconds for t in results)
    if promoted and within is not None:
        decision += "; served as trained (the held-out share stays out of it)"
    elif promoted:
        # Judged, the recipe now learns from every label: on 500 photos, training on all of
        # them rather than the 400 outside a held-out split gave +3 points of accuracy.
        every = np.ones(len(data.labels), dtype=bool)
        start = _averaged(results)
        result = _train(job, every, start)
        saved = _save(paths.models_dir, f"{name}-all", result, meta)
        served = _served(base, cfg, saved)
        seconds += result.seconds
        decision += f"; then trained again on every label ({len(result.history)} epochs"
        decision += ", from the average of the half-trainings)" if start else ")"
    n_train = len(data.labels) if within is None else int((~within).sum())
    with connect(paths.catalog_db) as con:
        model_id = con.execute("SELECT nextval('embedding_model_seq')").fetchall()[0][0]
        con.execute(
            f"INSERT INTO {tables.EMBEDDING_MODELS} (model_id, fingerprint, base_key, model_key, "
            "mode, loss, config, head_path, trunk_path, n_train, n_eval, epochs_run, best_epoch, "
            "stopped_early, train_seconds, metrics, current_metrics, promoted, decision, "
            "created_at, classifier_path, params, gate_params, gate_classifier_path, classes, "
            "half_params) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                model_id,
                key,
                base_key,
                served.model_key(),
                mode,
                cfg.loss,
                json.dumps(asdict(cfg)),
                paths.relative(saved.head) if saved.head else None,
                paths.relative(saved.trunk) if saved.trunk else None,
                n_train,
                n_eval,
                len(result.history),
                result.best_epoch,
                result.stopped_early,
                seconds,
                json.dumps(metrics),
                json.dumps({"name": current_name, **current_metrics}),
                promoted,
                decision,
                started,
                paths.relative(saved.classifier) if saved.classifier else None,
                json.dumps(sets.stored_params(paths, served.as_dict())),
                json.dumps(sets.stored_params(paths, candidate.as_dict())),
                paths.relative(gate_saved.classifier) if gate_saved.classifier else None,
                json.dumps(sorted(set(data.labels.tolist()))),
                None
                if within is not None
                else json.dumps([sets.stored_params(paths, p.as_dict()) for p in part_params]),
            ],
        )
    return Outcome(
        ModelStatus.TRAINED,
        decision,
        promoted=promoted,
        model_id=model_id,
        metrics=metrics,
        current_metrics=current_metrics,
        current_name=current_name,
        history=result.history,
        n_train=n_train,
        n_eval=n_eval,
        seconds=seconds,
        stopped_early=result.stopped_early,
        frozen_stride=result.frozen_stride,
        train_size=trunk_spec(base, cfg).preprocess.crop if mode == "finetune" else 0,
        params=served if promoted else current,
        paired=Paired(challenger.hits, judged_current.hits),
    )
