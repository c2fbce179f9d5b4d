-- A fine-tune that follows what it gains (issues 39, 40): the label classes each training of
-- `embedding_model` saw, so that a later run can tell a new class (train again) from a few more
-- labels of known ones (the classifier follows them; the fine-tune waits for `retrain_growth`).
-- NULL on trainings recorded before.
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS classes JSON;
