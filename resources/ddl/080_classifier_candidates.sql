-- Every candidate of every classifier training, side by side (issue 11: classifier comparison).
CREATE TABLE IF NOT EXISTS classifier_candidates (  -- one row per candidate per model_versions row
    version_id   BIGINT NOT NULL,           -- model_versions.version_id of the training
    candidate    VARCHAR NOT NULL,          -- logreg | lightgbm | lightgbm_pca | mlp
    accuracy     DOUBLE NOT NULL,           -- on the version's held-out split (or cv folds)
    macro_f1     DOUBLE NOT NULL,
    log_loss     DOUBLE NOT NULL,
    n_eval       BIGINT NOT NULL,
    fit_seconds  DOUBLE NOT NULL,           -- one fit (the mean per fold under cv)
    challenger   BOOLEAN NOT NULL,          -- best macro-F1: the version's model
    promoted     BOOLEAN NOT NULL,          -- the challenger, and it became champion
    PRIMARY KEY (version_id, candidate)
);
