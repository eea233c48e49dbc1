"""The export pipeline: ``COPY … TO STDOUT`` whose bytes go out as they come.

One reader, two consumers, no web server:

* :mod:`.reader` runs one COPY and gathers its rows into chunks, straight
  from libpq; both ways out below read through it, so a streamed export and
  an export file hold the same bytes.
* :mod:`.encoder` frames JSON arrays and gzips.
* :mod:`.lanes` splits a large table into id ranges read by several
  connections in one snapshot, merged back in order.
* :mod:`.bridge` (:class:`~.bridge.CopyStream`) hands the chunks from reader
  threads to async code: the API's ``GET /v1/exports``.
* :mod:`.filesink` (:func:`~.filesink.write_export`) writes them to a file:
  the export jobs of :mod:`bulkport.pipeline.export_job`.

PostgreSQL renders the rows (:mod:`bulkport.sql.exporting`); Python only joins
buffers, frames and compresses. Nothing is imported here, so that a worker
writing export files never loads the async bridge.
"""
