-- FAISS similarity indexes and near-duplicate pairs (issue: similarity index and retrieval).
-- Every build is a versioned file; only a version whose recall check passed is published (by
-- the `published_index` asset), and search uses the newest published version of its model key.
CREATE TABLE IF NOT EXISTS faiss_indexes (
    model_key      VARCHAR NOT NULL,
    version        VARCHAR NOT NULL,
    path           VARCHAR NOT NULL,
    index_type     VARCHAR NOT NULL,       -- the FAISS index_factory string, e.g. HNSW32,Flat
    vectors        BIGINT NOT NULL,
    dim            INTEGER NOT NULL,
    bytes          BIGINT NOT NULL,
    search_params  JSON,                   -- tuned nprobe / efSearch
    build_seconds  DOUBLE,
    recall_at_5    DOUBLE,                 -- measured at build time on a query sample
    check_recall_at_5 DOUBLE,              -- the blocking check's, on another sample (when published)
    published      BOOLEAN NOT NULL DEFAULT false,
    created_at     TIMESTAMP NOT NULL,
    published_at   TIMESTAMP,
    PRIMARY KEY (model_key, version)
);
CREATE TABLE IF NOT EXISTS near_duplicates (
    image_id_a  BIGINT NOT NULL,           -- image_id_a < image_id_b
    image_id_b  BIGINT NOT NULL,
    similarity  FLOAT NOT NULL,            -- cosine similarity (inner product of unit vectors)
    model_key   VARCHAR NOT NULL,
    group_id    BIGINT NOT NULL            -- the smallest image_id of the connected group
);
