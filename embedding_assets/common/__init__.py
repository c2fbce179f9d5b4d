"""What every domain shares, and nothing else: the catalog's table names and shared queries
(`tables`), input fingerprints (`fingerprints`), per-image result tables (`results`), the
paired promotion test (`promotion`), the exact cosine kNN (`neighbors`), settings read from
the environment, progress, clock, config choices and the markdown/PNG helpers for Dagster
metadata. Light modules: none imports torch, FAISS or scikit-learn at import time."""
