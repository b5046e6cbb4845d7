-- OpenAI's `metadata` of a job (a JSON object of strings), as submitted.
ALTER TABLE jobs ADD COLUMN metadata TEXT;
