"""Dataset curation: plain functions over embeddings, labels and image measures. The method
modules load FAISS or scikit-learn at import time, so assets import them inside their
functions; the table modules (`scores`, `quality_table`, `dataset_checks`, `reports`) load
them on first use and may be imported at the top.

- `label_issues`: images whose label disagrees with the evidence (confident learning + kNN).
- `image_quality`: flags over the measures the catalog took while decoding (`catalog.quality`).
- `uniqueness`: how unique / representative each image is among its nearest neighbours.
- `duplicates`: near-duplicate pairs and their groups.
- `drift`: is a new batch of embeddings drawn from the reference distribution? Per-image OOD.
- `outliers`: images far from their nearest neighbours, flagged over a robust threshold.
- `scores`, `quality_table`, `dataset_checks`: each asset's table rows and what it reports;
  `reports`: the top rows read back as markdown.
The shared exact cosine kNN they use is `common.neighbors`.
"""
