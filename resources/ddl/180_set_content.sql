-- One reuse mechanism (issue 38): each embedding set's content version (`sets.content_version`:
-- the model key and the set's (image_id, sha256)), computed once when `embeddings` registers
-- the set, so that every downstream fingerprint reads it instead of re-hashing the Parquet.
-- NULL on sets registered before: computed from the Parquet until the set is written again.
ALTER TABLE embedding_sets ADD COLUMN IF NOT EXISTS content_version VARCHAR;
