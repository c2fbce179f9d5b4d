"""Outliers as a flag: an image is an outlier when it lies far from its nearest neighbours in
the embedding, further than the collection's robust spread allows.

distance = 1 - mean cosine similarity to the k nearest other images (the neighbour graph). The
threshold is median + z * 1.4826 * MAD of all distances: the median and the median absolute
deviation are not moved by the outliers themselves, and 1.4826 * MAD is the standard deviation
of normally distributed data, so z reads as "standard deviations above typical".

Unlike `anomaly_scores` (an Isolation Forest over the whole feature space, which scores how
easily a point is separated from the rest, density-blind), this is local: an image in a sparse
but legitimate region of many like it is not flagged, a lone image among dense ones is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAD_TO_SD = 1.4826


@dataclass(frozen=True)
class Outliers:
    distance: np.ndarray  # float64 (n,)
    threshold: float
    flagged: np.ndarray  # bool (n,)


def find_outliers(sims: np.ndarray, z: float = 3.5) -> Outliers:
    """Distances to the k nearest neighbours (`sims`: (n, k) similarities, nan where missing,
    from `neighbor_graph`) and the flag at median + z robust SDs. Fewer than 3 images: nothing
    can be told apart, nothing is flagged."""
    n = len(sims)
    if n < 3:
        return Outliers(np.zeros(n), float("inf"), np.zeros(n, bool))
    distance = 1.0 - np.nanmean(sims.astype(np.float64), axis=1)
    median = float(np.median(distance))
    spread = MAD_TO_SD * float(np.median(np.abs(distance - median)))
    threshold = median + z * max(spread, 1e-9)
    return Outliers(distance, threshold, distance > threshold)
