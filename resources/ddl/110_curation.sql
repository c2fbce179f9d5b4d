-- Curation (issue 15): wrong labels, image quality, uniqueness, split leakage, batch drift.
-- Quality measures are taken while the catalog decodes each image (no second read of the file);
-- the `image_quality` asset applies the thresholds to them.
CREATE TABLE IF NOT EXISTS image_quality_measures (
    image_id    BIGINT PRIMARY KEY,
    blur        DOUBLE,                    -- variance of the Laplacian: low = blurry
    brightness  DOUBLE,                    -- mean grey level, 0..255
    contrast    DOUBLE,                    -- standard deviation of the grey levels
    entropy     DOUBLE,                    -- of the grey-level histogram, bits
    shadow      DOUBLE,                    -- 1st percentile of the grey levels
    highlight   DOUBLE                     -- 99th percentile
);
CREATE TABLE IF NOT EXISTS image_quality (
    image_id    BIGINT NOT NULL,
    blur        DOUBLE,
    brightness  DOUBLE,
    contrast    DOUBLE,
    entropy     DOUBLE,
    flags       VARCHAR[] NOT NULL         -- blurry | too_dark | too_bright | low_information | odd_size | odd_aspect
);
CREATE TABLE IF NOT EXISTS label_issues (
    image_id        BIGINT NOT NULL,
    given_label     VARCHAR NOT NULL,
    suggested_label VARCHAR NOT NULL,
    score           DOUBLE NOT NULL,       -- higher = more likely mislabeled
    model_key       VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS uniqueness (
    image_id           BIGINT NOT NULL,
    uniqueness         DOUBLE NOT NULL,    -- 1 - similarity to its nearest other image (copies: 0)
    representativeness DOUBLE NOT NULL,    -- local density: how typical of its neighbourhood
    model_key          VARCHAR NOT NULL
);
-- A split set by hand (emb sql can't write: INSERT from Python or a DuckDB client) wins over
-- the top-level folder under the scanned root (train/ training/ trn/, val/ valid/ validation/
-- dev/, test/ testing/ tst/; any case).
CREATE TABLE IF NOT EXISTS image_splits (
    image_id BIGINT PRIMARY KEY,
    split    VARCHAR NOT NULL
);
CREATE OR REPLACE VIEW splits AS
    SELECT i.image_id,
           coalesce(s.split,
                    CASE WHEN strpos(substr(i.path, length(i.root) + 2), '/') > 0 THEN
                    CASE lower(split_part(substr(i.path, length(i.root) + 2), '/', 1))
                        WHEN 'train' THEN 'train' WHEN 'training' THEN 'train'
                        WHEN 'trn' THEN 'train' WHEN 'val' THEN 'val' WHEN 'valid' THEN 'val'
                        WHEN 'validation' THEN 'val' WHEN 'dev' THEN 'val'
                        WHEN 'test' THEN 'test' WHEN 'testing' THEN 'test'
                        WHEN 'tst' THEN 'test' END END) AS split
    FROM images i LEFT JOIN image_splits s USING (image_id)
    WHERE i.removed_at IS NULL;
CREATE OR REPLACE VIEW split_leaks AS
    SELECT d.image_id_a, sa.split AS split_a, d.image_id_b, sb.split AS split_b,
           d.similarity, d.model_key
    FROM near_duplicates d
    JOIN splits sa ON sa.image_id = d.image_id_a
    JOIN splits sb ON sb.image_id = d.image_id_b
    WHERE sa.split IS NOT NULL AND sb.split IS NOT NULL AND sa.split <> sb.split;
CREATE TABLE IF NOT EXISTS batch_drift (
    batch_id   VARCHAR NOT NULL,           -- when the catalog first saw the batch's images
    images     INTEGER NOT NULL,
    score      DOUBLE NOT NULL,            -- the two-sample statistic
    p_value    DOUBLE NOT NULL,            -- permutation p-value
    drifted    BOOLEAN NOT NULL,
    reference  VARCHAR NOT NULL,           -- what it was compared with
    model_key  VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS ood_scores (
    image_id   BIGINT NOT NULL,
    batch_id   VARCHAR NOT NULL,
    ood_score  DOUBLE NOT NULL,            -- share of reference images nearer their neighbours
    model_key  VARCHAR NOT NULL
);
