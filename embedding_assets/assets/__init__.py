"""Dagster assets: thin wrappers that call the plain modules and report metadata."""
