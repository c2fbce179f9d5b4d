-- Projections, clusters and anomaly scores per embedding set (issue: analytics).
-- Each materialization replaces the rows of its model_key in one transaction.
CREATE TABLE IF NOT EXISTS projections (
    image_id  BIGINT NOT NULL,
    model_key VARCHAR NOT NULL,
    method    VARCHAR NOT NULL,            -- pca | umap | tsne
    x         FLOAT NOT NULL,
    y         FLOAT NOT NULL
);
CREATE TABLE IF NOT EXISTS clusters (
    image_id  BIGINT NOT NULL,
    model_key VARCHAR NOT NULL,
    cluster   INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS anomaly_scores (
    image_id  BIGINT NOT NULL,
    model_key VARCHAR NOT NULL,
    score     FLOAT NOT NULL,              -- Isolation Forest s(x, n): higher = more unusual
    flagged   BOOLEAN NOT NULL             -- among the top flag_fraction of scores
);
-- One row per usable image with everything known about it for the current embedding set
-- (the most recently updated row of embedding_sets); NULLs where an asset has not run yet.
CREATE OR REPLACE VIEW image_overview AS
    WITH cur AS (
        SELECT model_key FROM embedding_sets ORDER BY updated_at DESC LIMIT 1
    ), proj AS (
        SELECT p.image_id,
               any_value(p.x::DOUBLE) FILTER (p.method = 'pca')  AS pca_x,
               any_value(p.y::DOUBLE) FILTER (p.method = 'pca')  AS pca_y,
               any_value(p.x::DOUBLE) FILTER (p.method = 'umap') AS umap_x,
               any_value(p.y::DOUBLE) FILTER (p.method = 'umap') AS umap_y,
               any_value(p.x::DOUBLE) FILTER (p.method = 'tsne') AS tsne_x,
               any_value(p.y::DOUBLE) FILTER (p.method = 'tsne') AS tsne_y
        FROM projections p JOIN cur USING (model_key)
        GROUP BY p.image_id
    )
    SELECT i.image_id,
           i.path,
           l.label,
           c.cluster,
           a.score::DOUBLE AS anomaly_score,  -- DOUBLE so round() prints cleanly
           a.flagged AS anomaly_flag,
           proj.pca_x, proj.pca_y, proj.umap_x, proj.umap_y, proj.tsne_x, proj.tsne_y,
           cur.model_key
    FROM usable_images i
    LEFT JOIN cur ON true
    LEFT JOIN current_labels l ON l.image_id = i.image_id
    LEFT JOIN clusters c ON c.image_id = i.image_id AND c.model_key = cur.model_key
    LEFT JOIN anomaly_scores a ON a.image_id = i.image_id AND a.model_key = cur.model_key
    LEFT JOIN proj ON proj.image_id = i.image_id;
