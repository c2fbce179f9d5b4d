"""Embeddings: images in, L2-normalized vectors out. Backbones from torchvision or timm with
their weights (`backbones`, `packaged_weights`, `defaults`), batched inference (`embedder`), the
LMDB cache keyed by model key and content hash (`cache`), the run that fills it and writes the
Parquet hand-off (`run`, on Ray: `ray_engine`), embedding sets as downstream reads them
(`sets`), the plain features behind a trained head (`features`), and training on labels with a
gated promotion (`training`, `metric_learning`, `heads`, `evaluation`); what the training and
the run report, as plain values (`reports`). No Dagster here."""
