"""Where state lives (`paths`, `storage`: data directory, DuckDB) and where compute runs (`gpu`).

Nothing is imported here: the CLI imports `resources.paths` without loading Dagster.
"""
