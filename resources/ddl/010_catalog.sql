-- The image catalog and the labels log (issue: foundation).
CREATE SEQUENCE IF NOT EXISTS image_id_seq START 1;
CREATE TABLE IF NOT EXISTS images (
    image_id    BIGINT PRIMARY KEY DEFAULT nextval('image_id_seq'),
    path        VARCHAR NOT NULL UNIQUE,   -- absolute; non-UTF-8 bytes shown as \xNN
    path_bytes  BLOB,                      -- the raw file name when it is not valid UTF-8
    root        VARCHAR NOT NULL,          -- the scanned folder this file was found under
    sha256      VARCHAR,
    bytes       BIGINT,
    mtime_ns    BIGINT,
    width       INTEGER,
    height      INTEGER,
    mode        VARCHAR,
    format      VARCHAR,
    status      VARCHAR NOT NULL,          -- ok | corrupt | unsupported | unreadable
    error       VARCHAR,
    first_seen  TIMESTAMP NOT NULL,
    last_seen   TIMESTAMP NOT NULL,
    removed_at  TIMESTAMP                  -- set when the file vanished from its folder
);
CREATE SEQUENCE IF NOT EXISTS label_id_seq START 1;
CREATE TABLE IF NOT EXISTS labels (        -- append-only: the latest row per image counts
    label_id    BIGINT PRIMARY KEY DEFAULT nextval('label_id_seq'),
    image_id    BIGINT NOT NULL,
    label       VARCHAR NOT NULL,
    source      VARCHAR NOT NULL,          -- folder | csv:<file> | cli | <tool name>
    created_at  TIMESTAMP NOT NULL DEFAULT current_timestamp
);
CREATE OR REPLACE VIEW current_labels AS
    SELECT image_id,
           arg_max(label, label_id)  AS label,
           arg_max(source, label_id) AS source,
           max(created_at)           AS labeled_at
    FROM labels GROUP BY image_id;
CREATE OR REPLACE VIEW usable_images AS
    SELECT * FROM images WHERE status = 'ok' AND removed_at IS NULL;
CREATE TABLE IF NOT EXISTS schema_info (key VARCHAR PRIMARY KEY, value VARCHAR);
