-- Files as people have them (docs/imports.md, "Column names", "Delimiters",
-- "Encodings"): the options an import was submitted with, and what the worker
-- noticed about the file's encoding. NULL everywhere for jobs created before.
ALTER TABLE import_jobs ADD COLUMN column_map jsonb;
ALTER TABLE import_jobs ADD COLUMN delimiter text;
ALTER TABLE import_jobs ADD COLUMN encoding text;
-- "the file looks like cp1252": set once by the worker when a file read as UTF-8
-- is not valid UTF-8 but reads as another encoding.
ALTER TABLE import_jobs ADD COLUMN encoding_hint text;
