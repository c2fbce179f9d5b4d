-- Images in object storage (issue 17): image_dir may be an s3://, gs://, az://... URL. An object's
-- images.path is its full URL; its ETag (with its size) tells a changed object on a re-scan, where
-- a local file's mtime_ns does (NULL for local files, and mtime_ns NULL for objects).
ALTER TABLE images ADD COLUMN IF NOT EXISTS etag VARCHAR;
