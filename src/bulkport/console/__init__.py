"""The web console at ``/`` and the offline Swagger UI at ``/docs``.

The console is static HTML, CSS and plain JavaScript (``static/``) that talks
only to the ``/v1`` API; :mod:`bulkport.console.router` serves it, with the
resource declarations embedded in the page so the export form lists the real
fields and filters. See docs/console.md.
"""
