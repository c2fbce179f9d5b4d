-- Embedding sets: one row per model key; the Parquet file holds the vectors (issue: embeddings).
CREATE TABLE IF NOT EXISTS embedding_sets (
    model_key    VARCHAR PRIMARY KEY,   -- model + weights + preprocessing, hashed into a name
    model        VARCHAR NOT NULL,
    weights      VARCHAR,
    dim          INTEGER NOT NULL,
    count        BIGINT NOT NULL,
    parquet_path VARCHAR NOT NULL,
    params       JSON,
    updated_at   TIMESTAMP NOT NULL
);
