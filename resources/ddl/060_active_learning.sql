-- Classifier registry, predictions and the active-learning queue (issue: active learning).
CREATE SEQUENCE IF NOT EXISTS model_version_seq START 1;
CREATE TABLE IF NOT EXISTS model_versions (   -- one row per training of the `classifier` asset
    version_id     BIGINT PRIMARY KEY,
    algorithm      VARCHAR NOT NULL,          -- logreg | lightgbm (the better of the two)
    embedding_key  VARCHAR NOT NULL,          -- embedding_sets.model_key it was trained on
    model_path     VARCHAR NOT NULL,          -- joblib file under <data>/models/classifier/
    classes        JSON NOT NULL,
    n_labels       BIGINT NOT NULL,           -- labeled images used (train + held out)
    max_label_id   BIGINT,                    -- newest labels.label_id it saw
    eval_method    VARCHAR NOT NULL,          -- holdout | cv
    metrics        JSON NOT NULL,             -- accuracy, macro_f1, log_loss per candidate
    champion       BOOLEAN NOT NULL DEFAULT false,
    promoted       BOOLEAN NOT NULL,
    decision       VARCHAR NOT NULL,          -- why it was (not) promoted
    created_at     TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS predictions (      -- the champion's prediction for every image
    image_id        BIGINT PRIMARY KEY,
    version_id      BIGINT NOT NULL,
    predicted       VARCHAR NOT NULL,
    probability     DOUBLE NOT NULL,
    least_confident DOUBLE NOT NULL,          -- 1 - max p
    margin          DOUBLE NOT NULL,          -- p(1st) - p(2nd); small = unsure
    entropy         DOUBLE NOT NULL,          -- nats
    predicted_at    TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS label_requests (   -- the batches the platform asks people to label
    round         INTEGER NOT NULL,
    rank          INTEGER NOT NULL,
    image_id      BIGINT NOT NULL,
    version_id    BIGINT,
    strategy      VARCHAR NOT NULL,
    uncertainty   DOUBLE NOT NULL,
    cluster       INTEGER,
    requested_at  TIMESTAMP NOT NULL,
    PRIMARY KEY (round, rank)
);
CREATE TABLE IF NOT EXISTS learning_curve (   -- accuracy vs number of labels, one row per round
    round        INTEGER PRIMARY KEY,
    version_id   BIGINT,
    n_labels     BIGINT NOT NULL,
    accuracy     DOUBLE,
    macro_f1     DOUBLE,
    eval_method  VARCHAR,
    recorded_at  TIMESTAMP NOT NULL
);
CREATE OR REPLACE VIEW open_label_requests AS  -- the latest round minus images labeled since
    SELECT r.round, r.rank, r.image_id, i.path, p.predicted, p.probability, r.uncertainty,
           r.cluster
    FROM label_requests r
    JOIN images i USING (image_id)
    LEFT JOIN predictions p USING (image_id)
    LEFT JOIN current_labels l USING (image_id)
    WHERE r.round = (SELECT max(round) FROM label_requests) AND l.image_id IS NULL;
