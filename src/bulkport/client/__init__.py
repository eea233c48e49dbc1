"""The command-line client: ``bulkport import|export|jobs`` against a running server.

It speaks only the public HTTP API (``/v1``), so it works against any bulkport
server it can reach. Layout: http.py (connection, errors and exit codes),
progress.py (rich bars), imports.py, exports.py, jobs.py (the commands),
watch.py (waiting for a job, summaries), download.py and rows.py (streaming a
response to a file, counting its records), commands.py (arguments, running).
"""

import sys

# httpx's package imports its own command-line tool (httpx._main) whenever click and
# rich are installed, pulling in click, rich and pygments: over a third of this
# client's start-up, paid on every command. A None entry makes that import fail, which
# httpx handles (its `httpx` console script is then unavailable in this process only).
sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
