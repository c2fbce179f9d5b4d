-- Trained embedding models: projection heads and fine-tuned backbones (issue: train the embedding).
CREATE SEQUENCE IF NOT EXISTS embedding_model_seq START 1;
CREATE TABLE IF NOT EXISTS embedding_models (  -- one row per training of `embedding_model`
    model_id        BIGINT PRIMARY KEY,
    fingerprint     VARCHAR NOT NULL,          -- backbone + settings + labeled content
    base_key        VARCHAR NOT NULL,          -- model key of the plain backbone it was trained on
    model_key       VARCHAR NOT NULL,          -- model key of the embeddings it produces
    mode            VARCHAR NOT NULL,          -- head | finetune
    loss            VARCHAR NOT NULL,
    config          JSON NOT NULL,
    head_path       VARCHAR NOT NULL,
    trunk_path      VARCHAR,                   -- fine-tuned backbone (finetune mode only)
    n_train         BIGINT NOT NULL,
    n_eval          BIGINT NOT NULL,           -- held-out images (fixed by content hash)
    epochs_run      INTEGER NOT NULL,
    best_epoch      INTEGER NOT NULL,
    stopped_early   BOOLEAN NOT NULL,
    train_seconds   DOUBLE NOT NULL,
    metrics         JSON NOT NULL,             -- knn_top1, precision_at_5, knn_macro_f1, silhouette
    current_metrics JSON NOT NULL,             -- the model it had to beat, on the same images
    promoted        BOOLEAN NOT NULL,
    decision        VARCHAR NOT NULL,
    created_at      TIMESTAMP NOT NULL
);
