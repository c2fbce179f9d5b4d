"""Dataset curation: plain functions over embeddings, labels and decoded images (issue 15).

Modules, each imported on its own (they load faiss / scikit-learn at import time, so import them
lazily inside assets):

- `label_issues`: images whose label disagrees with the evidence (confident learning + kNN).
- `image_quality`: blur / brightness / contrast / entropy of one decoded image, and flags.
- `uniqueness`: how unique / representative each image is among its nearest neighbours.
- `drift`: is a new batch of embeddings drawn from the reference distribution? Per-image OOD.
- `neighbors`: the shared exact cosine kNN (faiss IndexFlatIP on L2-normalised vectors).
"""
