-- Curation as good as its peers (issue 25): perceptual hashes and colour taken at decode,
-- near-duplicate reasons, outlier flags, dataset-level checks, drift effect sizes.
-- Appended in catalog/quality.py QUALITY_COLUMNS order (the catalog inserts by position).
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS sharpness DOUBLE;      -- var(Laplacian) / var(grey) at 64 px
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS colourfulness DOUBLE;  -- Hasler-Suesstrunk, 0 = grey
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS chroma DOUBLE;         -- 99th pct of max(RGB) - min(RGB)
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS phash_hi UINTEGER;     -- 64-bit pHash, high half
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS phash_lo UINTEGER;
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS dhash_hi UINTEGER;     -- 64-bit dHash
ALTER TABLE image_quality_measures ADD COLUMN IF NOT EXISTS dhash_lo UINTEGER;
ALTER TABLE image_quality ADD COLUMN IF NOT EXISTS sharpness DOUBLE;
ALTER TABLE image_quality ADD COLUMN IF NOT EXISTS colourfulness DOUBLE;
-- Why a pair is a near-duplicate: same_bytes | same_hash | embedding (the strongest reason).
ALTER TABLE near_duplicates ADD COLUMN IF NOT EXISTS reason VARCHAR;
ALTER TABLE near_duplicates ADD COLUMN IF NOT EXISTS hash_distance INTEGER;  -- pHash bits that differ
CREATE TABLE IF NOT EXISTS outliers (
    image_id   BIGINT NOT NULL,
    distance   DOUBLE NOT NULL,            -- mean cosine distance to its k nearest neighbours
    threshold  DOUBLE NOT NULL,            -- median + z * MAD of all distances
    flagged    BOOLEAN NOT NULL,
    model_key  VARCHAR NOT NULL
);
CREATE TABLE IF NOT EXISTS dataset_checks (
    check_name VARCHAR NOT NULL,           -- label_counts | class_imbalance | non_iid
    subject    VARCHAR NOT NULL,           -- the class, or '' for the whole set
    value      DOUBLE,                     -- the count, ratio or statistic
    p_value    DOUBLE,
    warning    BOOLEAN NOT NULL,
    detail     VARCHAR NOT NULL,
    model_key  VARCHAR NOT NULL
);
ALTER TABLE batch_drift ADD COLUMN IF NOT EXISTS effect_size DOUBLE;  -- classifier AUC - 0.5 style
ALTER TABLE batch_drift ADD COLUMN IF NOT EXISTS alpha DOUBLE;        -- per-batch level after Holm
