"""A new classifier version from the labels, as the `classifier` asset makes it, without Dagster:
what the candidates learn from and are judged on (read before the GPU is taken), the version
registered beside the champion with its confusion matrix, and what the run reports. The embedding
packages are imported inside the functions: the Dagster definitions import this module."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from embedding_assets.common import markdown
from embedding_assets.learning import classifiers as al
from embedding_assets.learning import registry, selection
from embedding_assets.learning.plots import confusion_png
from resources.paths import DataPaths

METRICS = ("accuracy", "macro_f1", "log_loss", "ece", "ece_uncalibrated", "temperature")


@dataclass(frozen=True)
class Prepared:
    """What a training reads before it takes the GPU: the labeled images' features (`features`:
    their model key), the champion and what the candidates are judged on."""

    set_key: str  # the current embedding set's model key
    features: str
    ids: np.ndarray  # the labeled images
    x: np.ndarray
    labeled: registry.Labeled
    champion: al.Champion | None
    judged: al.Judged

    @property
    def base(self) -> dict:
        """What every run reports, trained or not."""
        return {
            "labeled_images": len(self.labeled.labels),
            "embedding_model": self.set_key,
            "features": self.features,
            "compared_on": "the judged fine-tune's features (blind to the held-out images)"
            if self.judged.select_x is not None
            else "the same features",
        }

    def train(self, settings: al.TrainSettings) -> al.Training:
        """The candidates trained and compared; NotTrainable while the labels are too few."""
        keys, judged = self.labeled.split_keys, self.judged
        return al.train(
            self.ids, self.x, self.labeled.labels, settings, split_keys=keys, judged=judged
        )


def prepare(paths: DataPaths, algorithm: str) -> Prepared:
    """Read the current set's classifier features, its labeled images and the champion."""
    from embedding_assets.embedding.features import classifier_features

    found = classifier_features(paths)
    labeled = registry.labeled(paths.catalog_db, found.ids)
    champion = registry.champion(paths)
    if champion is not None:  # what its gate needs to know: the labels corrected since
        trained_on, as_of = champion.train_ids, champion.max_label_id
        corrected = registry.corrected_since(paths.catalog_db, trained_on, as_of)
        champion = replace(champion, corrected=corrected)
    key, ids = found.emb_set.model_key, found.ids[labeled.positions]
    judged = judged_on(paths, key, found.key, ids, algorithm)
    x = found.matrix[labeled.positions]
    return Prepared(key, found.key, ids, x, labeled, champion, judged)


def judged_on(
    paths: DataPaths, set_key: str, features: str, ids: np.ndarray, algorithm: str
) -> al.Judged:
    """What the candidates are compared on when the embeddings come from a fine-tune trained
    on every label: the features of the model the gate judged (blind to the held-out images),
    and the cosine heads, judged and final (`algorithm` 'auto' only)."""
    from embedding_assets.catalog.images import usable_files
    from embedding_assets.embedding.run import RunOptions, cached_features
    from embedding_assets.embedding.run_options import once
    from embedding_assets.embedding.training import trained_model

    model = trained_model(paths, set_key) if features == set_key else None
    if model is None:
        return al.Judged()
    select_x, prefit, prefit_final = None, {}, {}
    if model.classifier is not None and algorithm == "auto":
        judged = model.gate_classifier or model.classifier
        prefit = {al.COSINE_HEAD: al.CosineHead.load(judged)}
        prefit_final = {al.COSINE_HEAD: al.CosineHead.load(model.classifier)}
    if model.gate_params is not None:
        usable = usable_files(paths.catalog_db)
        rows = usable.rows_of(ids)
        if (rows >= 0).all():
            wanted = usable.subset(rows)
            crop = model.gate_params.spec().preprocess.crop
            options = once(RunOptions(), len(rows), crop)  # labeled images only, once
            found, kept = cached_features(
                paths, model.gate_params, wanted.fs_paths, wanted.hashes, options
            )
            if len(kept) == len(rows):
                select_x = found
    return al.Judged(select_x, prefit, prefit_final)


def untrained(prepared: Prepared, exc: al.NotTrainable) -> dict:
    """Too few labels to train: a warning, not a failure. Most users start with none, and
    `label_queue` then proposes the images to label first (a cold start); a champion, if any,
    stays."""
    champion = prepared.champion
    if champion is None:
        status = selection.WAITING
        reason = f"{status}: {exc}; `emb queue` lists the images to label first"
    else:
        status, reason = "skipped", f"no new version: {exc}; champion v{champion.version_id} stays"
    return {**prepared.base, "status": status, "reason": reason}


@dataclass(frozen=True)
class NewVersion:
    """A registered version, how it compares with the champion, and its files."""

    version_id: int
    champion_id: int  # the champion now: this version if promoted
    training: al.Training
    decision: al.Decision
    max_label_id: int | None
    model_path: Path
    confusion_png: bytes

    def figures(self) -> dict:
        """What the run reports besides `Prepared.base`, as plain values."""
        t, m = self.training, self.training.metrics
        return {
            "status": "trained",
            "version_id": self.version_id,
            "algorithm": t.algorithm,
            "eval_method": t.eval_method,
            **{k: float(round(m[k], 4)) for k in METRICS},
            "promoted": self.decision.promoted,
            "decision": self.decision.reason,
            "champion_version": self.champion_id,
            "classes": t.classes.tolist(),
            "dropped_classes (fewer than 2 labels)": t.dropped_classes,
            "max_label_id": self.max_label_id or 0,
            "model_path": self.model_path,
        }

    def candidate_table(self) -> str:
        """The comparison as the UI shows it: one row per candidate, the challenger marked."""
        promoted = self.decision.promoted
        outcome = "challenger, promoted" if promoted else "challenger, champion stays"
        rows = [
            [
                name,
                f"{m['accuracy']:.4f}",
                f"{m['macro_f1']:.4f}",
                f"{m['log_loss']:.4f}",
                f"{m['ece_uncalibrated']:.3f} -> {m['ece']:.3f}",
                f"{m['fit_seconds']:.2f}",
                m["n_eval"],
                outcome if name == self.training.algorithm else "",
            ]
            for name, m in self.training.candidates.items()
        ]
        header = ["candidate", "accuracy", "macro-F1", "log-loss", "ECE (calibrated)", "fit s"]
        return markdown.table([*header, "n_eval", ""], rows)

    def confusion_markdown(self) -> str:
        return markdown.image(self.confusion_png, "confusion matrix")


def register(paths: DataPaths, prepared: Prepared, training: al.Training) -> NewVersion:
    """Judge `training` against the champion on the same held-out images, save its model,
    register the version (promoted or not) and draw its confusion matrix."""
    features, max_label_id = prepared.features, prepared.labeled.max_label_id
    decision = al.compare_with_champion(training, prepared.champion, features)
    model_path = registry.save_model(paths.models_dir, training, features)
    version_id = registry.register(
        paths.catalog_db, training, decision, model_path, features, max_label_id
    )
    champion_id = version_id if decision.promoted else prepared.champion.version_id
    png = confusion_png(
        training.confusion(),
        training.classes.tolist(),
        f"v{version_id} {training.algorithm} ({training.eval_method})",
    )
    plot_path = paths.ensure(paths.plots_dir / "classifier") / f"confusion_v{version_id}.png"
    plot_path.write_bytes(png)
    return NewVersion(version_id, champion_id, training, decision, max_label_id, model_path, png)
