"""The import and export pipelines, as plain Python runnable without a web server.

Import stages: :mod:`formats` (bytes -> raw records) -> :mod:`validate`
(raw records -> clean rows + :class:`RecordError` data) -> :mod:`load`
(rows -> PostgreSQL, returning rejected rows) -> :mod:`importer` (batches,
checkpoints, counters).
"""
