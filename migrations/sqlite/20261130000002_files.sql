-- Files uploaded through POST /v1/files (training and validation data), kept on disk under
-- <data_dir>/files/<id>.jsonl; `path` is that file.
CREATE TABLE files (
    id          TEXT PRIMARY KEY,
    seq         INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    filename    TEXT NOT NULL,
    purpose     TEXT NOT NULL,
    bytes       INTEGER NOT NULL,
    records     INTEGER NOT NULL,
    path        TEXT NOT NULL
);
