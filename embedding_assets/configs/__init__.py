"""The run configuration of each asset (Dagster `Config` classes: what the launchpad and
`emb run --config` accept, with their bounds and descriptions), one module per asset module,
and the settings objects the domain functions take, built from them in one place."""
