"""Dagster assets: thin wrappers that call the plain modules and report metadata.

Loading the definitions imports every module here, so at the top they import only Dagster,
pydantic and light modules; a module that loads torch, FAISS, scikit-learn, pyarrow, pandas or
matplotlib is imported inside the function that uses it (tests/test_light_imports.py).
"""
