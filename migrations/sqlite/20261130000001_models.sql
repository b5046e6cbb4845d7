-- The model registry: base models (a directory, a GGUF file or a Hugging Face id) and the
-- fine-tuned models jobs produce, with their lineage.
CREATE TABLE models (
    id            TEXT PRIMARY KEY,
    created_at    INTEGER NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('base', 'fine_tuned')),
    -- What was registered: a model directory, a .gguf file or a Hugging Face id.
    source        TEXT NOT NULL,
    -- The local directory (for a Hugging Face id: once downloaded).
    path          TEXT,
    -- Fine-tuned: the base model as the job named it, the job, its best checkpoint.
    base_model    TEXT,
    job_id        TEXT,
    checkpoint    TEXT,
    train_loss    REAL,
    valid_loss    REAL,
    -- Fine-tuned: the adapter directory (LoRA / DoRA / QLoRA) or the model (full).
    adapter_path  TEXT,
    fused_path    TEXT
);
CREATE INDEX models_job ON models (job_id);
