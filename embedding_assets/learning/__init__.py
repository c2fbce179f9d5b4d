"""Learning from labels: classifier candidates compared on one held-out split and gated
against the champion (`classifiers`), the model registry and predictions in DuckDB
(`registry`), a new version trained, judged and registered (`retrain`), which images to ask
about next (`selection`), the label rounds and learning curve (`rounds`), and their pictures
(`plots`). No Dagster here."""
