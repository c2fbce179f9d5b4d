-- Answers worth trusting (issue 27): fine-tuned trunks served without a projection head, a
-- cosine classifier beside them, calibrated classifiers and the hyper-parameter search.
ALTER TABLE embedding_models ALTER COLUMN head_path DROP NOT NULL;  -- a trunk alone (cosface)
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS classifier_path VARCHAR;  -- its class head
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS params JSON;  -- how its embeddings are made
-- A promoted fine-tune is trained again on every label; the model that the gate judged (trained
-- without the held-out images) stays for the classifier's honest comparison of candidates.
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS gate_params JSON;
ALTER TABLE embedding_models ADD COLUMN IF NOT EXISTS gate_classifier_path VARCHAR;
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS ece DOUBLE;  -- held out, after calibration
ALTER TABLE model_versions ADD COLUMN IF NOT EXISTS temperature DOUBLE;  -- of the calibration
ALTER TABLE classifier_candidates ADD COLUMN IF NOT EXISTS ece DOUBLE;
ALTER TABLE classifier_candidates ADD COLUMN IF NOT EXISTS params JSON;  -- chosen by the search
CREATE TABLE IF NOT EXISTS classifier_trials (  -- the hyper-parameter search of each training
    version_id  BIGINT NOT NULL,           -- model_versions.version_id it chose for
    candidate   VARCHAR NOT NULL,
    trial       INTEGER NOT NULL,
    params      JSON NOT NULL,
    log_loss    DOUBLE,                    -- cross-validated on the training split (lower wins)
    accuracy    DOUBLE,
    seconds     DOUBLE NOT NULL,
    PRIMARY KEY (version_id, candidate, trial)
);
