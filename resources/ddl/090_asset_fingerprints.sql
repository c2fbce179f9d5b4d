-- What each stored result was computed from (issue 12: no-op runs are free). An asset that
-- overwrites its result (rows of a model key, the predictions, an index build) records the
-- fingerprint of its inputs in the same transaction; a later materialization with the same
-- fingerprint reuses the stored result instead of computing it again.
CREATE TABLE IF NOT EXISTS asset_fingerprints (
    asset        VARCHAR NOT NULL,          -- the asset whose result this is, e.g. clusters
    scope        VARCHAR NOT NULL,          -- the embedding set's model key; '' for one result
    fingerprint  VARCHAR NOT NULL,          -- hash of the inputs: embeddings, labels, config
    result       VARCHAR,                   -- which stored result: an index version, a round
    updated_at   TIMESTAMP NOT NULL,
    PRIMARY KEY (asset, scope)
);
