"""Run configuration of the active-learning assets: how `classifier` trains its candidates and
how `label_queue` chooses a round and when it signals to stop."""

from typing import Literal

import dagster as dg
from pydantic import Field

from embedding_assets.learning import classifiers as al
from embedding_assets.learning import rounds, selection


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
        gt=0,
        le=0.5,
        description="Share of the labeled images held out, by content hash, at least one per "
        "class; at most 0.5: they lie in the half the fine-tune's judged training never saw "
        "(from ~5,000 labels the fine-tune leaves out only embedding_model's holdout, 0.2: "
        "keep this at most that).",
    )
    search_budget_s: float = Field(
        default=30.0,
        ge=0,
        description="Seconds for a hyper-parameter search of the candidates (Optuna, "
        "cross-validated on the training split; trials in `classifier_trials`); 0 = off.",
    )
    search_min_labels: int = Field(
        default=1000,
        description="No search with fewer labeled images: at 500 labels it changed no champion "
        "(logistic regression with C = 30 won either way) and took 33 s of a 153 s run.",
    )
    seed: int = Field(default=0, description="Random seed of folds and models.")

    def train_settings(self, device: str) -> al.TrainSettings:
        """How `train` compares and fits the candidates on `device` (LightGBM's)."""
        return al.TrainSettings(
            algorithms=al.DEFAULT_CANDIDATES if self.algorithm == "auto" else (self.algorithm,),
            device=device,
            holdout_min_labels=self.holdout_min_labels,
            test_fraction=self.test_fraction,
            seed=self.seed,
            search_budget_s=self.search_budget_s,
            search_min_labels=self.search_min_labels,
        )


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

    def round_settings(self) -> rounds.RoundSettings:
        """The fields that choose a round, not when to stop."""
        fields = self.model_dump(exclude={"plateau_rounds", "plateau_min_delta"})
        return rounds.RoundSettings(**fields)
