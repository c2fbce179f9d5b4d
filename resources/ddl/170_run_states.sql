-- What a complete `emb run` saw when it ended (issue 23: a run with nothing new is a catalog
-- scan). `state` hashes every input that decides a result: the catalog's rows, the labels, the
-- hand-set splits, the run config, the code, the EMB_* settings and the files under the data
-- folder. A later `emb run` whose catalog scan leaves the same state, with no Dagster run since
-- `newest_run_id`, runs nothing else (and repeats `warnings`: the same inputs warn the same).
CREATE TABLE IF NOT EXISTS run_states (
    run_id         VARCHAR PRIMARY KEY,     -- the complete run whose results these are
    state          VARCHAR NOT NULL,        -- hash of the parts
    parts          JSON NOT NULL,           -- the hash of each part, to see what changed
    warnings       JSON NOT NULL,           -- that run's failed WARN checks, as the summary said
    created_at     TIMESTAMP NOT NULL,      -- when that run ended
    newest_run_id  VARCHAR NOT NULL,        -- the newest Dagster run known to leave this state
    checked_at     TIMESTAMP NOT NULL       -- when a run last found the state unchanged
);
