"""The `image_quality` table: each usable image's quality measures (taken while the catalog
decoded it) with the flags the thresholds raise, and the measuring of images catalogued before
those measures existed."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embedding_assets.common import tables
from embedding_assets.common.figures import histogram_markdown
from embedding_assets.common.markdown import Markdown
from embedding_assets.curation.reports import top_table
from resources.duckdb_store import connect

if TYPE_CHECKING:
    import pandas as pd

    from embedding_assets.curation.image_quality import QualityThresholds


@dataclass(frozen=True)
class FlaggedImages:
    """Every usable image with its measures, path and flags (", "-joined), and the count of
    images per flag."""

    images: pd.DataFrame
    counts: dict[str, int]

    @property
    def flagged(self) -> pd.DataFrame:
        """The flagged images, least sharp first."""
        return self.images[self.images["flags"] != ""].sort_values("sharpness")

    @property
    def summary(self) -> str:
        return f"{len(self.flagged)} of {len(self.images)} images flagged: {self.counts}"

    def shown(self, thresholds: QualityThresholds) -> dict:
        """What `image_quality` reports: counts, the least sharp flagged images, and the
        sharpness histogram with the blur threshold drawn in."""
        columns = ["image_id", "flags", "sharpness", "brightness", "path"]
        cut = float(np.log10(thresholds.sharpness_below + 1e-4))
        histogram = histogram_markdown(log_sharpness(self.images), "log10(sharpness)", cut)
        return {
            "images": len(self.images),
            "flagged": len(self.flagged),
            "flag_counts": self.counts,
            "flagged_images": top_table(self.flagged, columns),
            "sharpness_histogram": Markdown(histogram),
        }


def measure_missing(db: Path) -> int:
    """Decode once the images catalogued before quality measures existed; how many."""
    import pyarrow as pa

    from embedding_assets.catalog.images import fs_path, open_image
    from embedding_assets.catalog.quality import QUALITY_COLUMNS, quality_stats

    with connect(db, read_only=True) as con:
        missing = con.execute(
            f"SELECT image_id, {tables.PATH_BYTES} FROM {tables.USABLE_IMAGES} "
            f"WHERE image_id NOT IN (SELECT image_id FROM {tables.IMAGE_QUALITY_MEASURES})"
        ).fetchall()
    measured = []
    for image_id, raw in missing:
        try:
            with open_image(fs_path(bytes(raw))) as im:
                measured.append((int(image_id), quality_stats(im)))
        except Exception:  # noqa: BLE001 - a file that changed since: the next scan says so
            continue
    if not measured:
        return 0
    columns = {"image_id": pa.array([i for i, _ in measured], pa.int64())}
    for c in QUALITY_COLUMNS:
        columns[c] = pa.array([getattr(q, c) for _, q in measured], pa.float64())
    with connect(db) as con:
        con.register("measured", pa.table(columns))
        con.execute(
            f"INSERT OR REPLACE INTO {tables.IMAGE_QUALITY_MEASURES} SELECT * FROM measured"
        )
    return len(measured)


def flag_images(db: Path, thresholds: QualityThresholds) -> FlaggedImages:
    """Flag every measured usable image and replace the `image_quality` rows."""
    import pyarrow as pa

    from embedding_assets.common.results import replace_rows
    from embedding_assets.curation.image_quality import FLAGS, QualityStats, quality_flags

    with connect(db, read_only=True) as con:
        df = con.execute(
            "SELECT i.image_id, i.path, i.width, i.height, q.* EXCLUDE (image_id) "
            f"FROM {tables.USABLE_IMAGES} i JOIN {tables.IMAGE_QUALITY_MEASURES} q "
            "USING (image_id) ORDER BY image_id"
        ).df()
    names = [f.name for f in fields(QualityStats)]
    flags = [
        [
            name
            for name, on in quality_flags(
                QualityStats(**{n: row[n] for n in names}), thresholds
            ).items()
            if on
        ]
        for row in df.to_dict("records")
    ]
    columns = {"image_id": pa.array(df["image_id"], pa.int64())}
    for measure in ("blur", "brightness", "contrast", "entropy", "sharpness", "colourfulness"):
        columns[measure] = pa.array(df[measure], pa.float64())
    columns["flags"] = pa.array(flags, pa.list_(pa.string()))
    replace_rows(db, tables.IMAGE_QUALITY, None, pa.table(columns))
    df["flags"] = [", ".join(f) for f in flags]
    return FlaggedImages(df, {f: sum(f in row for row in flags) for f in FLAGS})


def log_sharpness(images: pd.DataFrame) -> np.ndarray:
    """log10 of the sharpness (+1e-4, so a flat image is finite): how it is histogrammed."""
    return np.log10(images["sharpness"].to_numpy(float) + 1e-4)
