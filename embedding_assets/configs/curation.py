"""Run configuration of the curation assets (`image_quality`, `label_issues`, `uniqueness`,
`outliers`, `batch_drift`) and the settings objects their domain functions take."""

from typing import TYPE_CHECKING, Literal

import dagster as dg
from pydantic import Field

if TYPE_CHECKING:
    from embedding_assets.curation.drift import DriftSettings
    from embedding_assets.curation.image_quality import QualityThresholds
    from embedding_assets.curation.label_issues import LabelIssueParams


class ImageQualityConfig(dg.Config):
    """Thresholds on the measures taken while the catalog decoded each image (defaults and
    why: curation/image_quality.py::QualityThresholds)."""

    sharpness_below: float = Field(
        default=0.12, description="Sharpness (var(Laplacian) / var(grey) at 64 px) below: blurry."
    )
    blur_below: float = Field(
        default=100.0,
        description="Variance of the Laplacian below: blurry (rows of older catalogs only).",
    )
    grayscale_chroma_below: float = Field(
        default=3.0, description="99th percentile of max(RGB) - min(RGB) below: grayscale."
    )
    dark_highlight_below: float = Field(
        default=100.0, description="99th grey percentile below: too dark."
    )
    dark_mean_below: float = Field(default=30.0, description="Mean grey below: too dark.")
    bright_shadow_above: float = Field(
        default=155.0, description="1st grey percentile above: too bright."
    )
    bright_mean_above: float = Field(default=225.0, description="Mean grey above: too bright.")
    entropy_below: float = Field(default=3.0, description="Entropy (bits) below: low information.")
    contrast_below: float = Field(default=8.0, description="Grey std below: low information.")
    min_side: int = Field(default=32, description="Shorter side below (px): odd size.")
    max_side: int = Field(default=20000, description="Longer side above (px): odd size.")
    max_aspect: float = Field(default=4.0, description="Aspect ratio above: odd size.")

    def thresholds(self) -> "QualityThresholds":
        from embedding_assets.curation.image_quality import QualityThresholds

        return QualityThresholds(**self.model_dump())


class LabelIssuesConfig(dg.Config):
    n_folds: int = Field(default=5, description="Folds of the out-of-fold probabilities.")
    pca_dim: int = Field(default=64, description="PCA dimensions the classifier sees.")
    k: int = Field(default=20, description="Labeled neighbours voting in the kNN evidence.")
    knn_weight: float = Field(default=0.25, description="Share of the kNN vote in the score.")
    seed: int = Field(default=0, description="Seed of the folds.")

    def params(self) -> "LabelIssueParams":
        from embedding_assets.curation.label_issues import LabelIssueParams

        return LabelIssueParams(**self.model_dump())


class UniquenessConfig(dg.Config):
    k: int = Field(default=10, ge=1, le=20, description="Neighbours behind representativeness.")


class OutliersConfig(dg.Config):
    k: int = Field(
        default=10, ge=1, le=20, description="Neighbours an image's distance is taken to."
    )
    z: float = Field(
        default=3.5,
        gt=0,
        description="Flag images whose distance is over the median plus this many robust "
        "standard deviations (1.4826 x MAD).",
    )


class BatchDriftConfig(dg.Config):
    reference: Literal["before", "first"] = Field(
        default="before",
        description="What each batch is compared with: every image seen before it, or the "
        "first batch only (a pinned reference).",
    )
    alpha: float = Field(
        default=0.01, description="A batch drifted when p < alpha (and its effect is large enough)."
    )
    min_effect: float = Field(
        default=0.05,
        description="The smallest mean shift called drift, as a fraction of the reference's "
        "spread: a large batch can make a negligible shift significant.",
    )
    permutations: int = Field(default=1000, description="Permutations behind the p-value.")
    k: int = Field(default=10, description="Neighbour behind the per-image ood_score.")
    max_batches: int = Field(default=20, description="The newest batches tested per run.")
    seed: int = Field(default=0, description="Seed of the permutations.")

    def settings(self) -> "DriftSettings":
        from embedding_assets.curation.drift import DriftSettings

        return DriftSettings(**self.model_dump())
