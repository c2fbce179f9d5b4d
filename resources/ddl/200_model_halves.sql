-- A promotion gate that decides from few labels (issue 40): each training of `embedding_model`
-- is judged on every labeled image by two half-trainings (`embedding/judging.py`); their
-- settings (JSON list, one per half) judge this model again when a later challenger comes.
-- NULL on trainings judged on a held-out split before.
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS half_params JSON;
