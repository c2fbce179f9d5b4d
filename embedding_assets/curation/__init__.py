"""Dataset curation: plain functions over embeddings, labels and image measures. Each module
loads FAISS or scikit-learn at import time, so assets import them inside their functions.

- `label_issues`: images whose label disagrees with the evidence (confident learning + kNN).
- `image_quality`: flags over the measures the catalog took while decoding (`catalog.quality`).
- `uniqueness`: how unique / representative each image is among its nearest neighbours.
- `duplicates`: near-duplicate pairs and their groups.
- `drift`: is a new batch of embeddings drawn from the reference distribution? Per-image OOD.
The shared exact cosine kNN they use is `common.neighbors`.
"""
