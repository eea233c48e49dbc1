"""API fuzzing: schemathesis against the running server's own ``/openapi.json``.

Every operation of the document is called with generated (valid and invalid)
requests, then along the links between operations (stateful phase). Nothing
may answer 5xx, and every answer must match what the document declares: its
status codes, content types, headers and body schemas.

The server runs without workers, so generated ``file_url`` jobs are never
fetched, and with an API key, so that authentication is part of what is tested.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ServerProcess
from tests.reliability.conftest import kill_group

API_KEY = "fuzz-key-0123456789"
CHECKS = ",".join([
    "not_a_server_error", "status_code_conformance", "content_type_conformance",
    "response_headers_conformance", "response_schema_conformance", "use_after_free",
    "ensure_resource_availability",
])
MAX_EXAMPLES = os.environ.get("BULKPORT_FUZZ_EXAMPLES", "25")
SEED = os.environ.get("BULKPORT_FUZZ_SEED", "20240601")
#: Bound of the whole run (seconds); it takes about 15 s here.
TIME_LIMIT_SECONDS = 150


@pytest.fixture
def api_server(clean_db: str, tmp_path: Path) -> Iterator[ServerProcess]:
    srv = ServerProcess(clean_db, tmp_path / "data", workers=0,
                        env={"BULKPORT_API_KEYS": API_KEY,
                             "BULKPORT_RATE_LIMIT_PER_MINUTE": "0"})
    try:
        yield srv.start()
    finally:
        srv.stop()
        kill_group(srv.proc)


def test_schemathesis_finds_no_5xx_and_no_schema_violation(api_server: ServerProcess,
                                                           tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", f"{api_server.base}/openapi.json",
           "--header", f"Authorization: Bearer {API_KEY}", "--checks", CHECKS,
           "--max-examples", MAX_EXAMPLES, "--seed", SEED, "--workers", "1",
           "--no-color",
           "--suppress-health-check", "all"]
    env = {**os.environ, "SCHEMATHESIS_HOOKS": "", "HYPOTHESIS_STORAGE_DIRECTORY":
           str(tmp_path / "hypothesis")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            cwd=tmp_path, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=TIME_LIMIT_SECONDS)
    finally:
        kill_group(proc)  # type: ignore[arg-type]
    report = out.decode(errors="replace")
    assert proc.returncode == 0, report[-12_000:]
    assert " passed" in report and "generated" in report, report[-3000:]
    log = api_server.log.read_text(errors="replace")
    assert not re.search(r'"status":5\d\d', log), "the server logged a 5xx"
    assert "unhandled error" not in log
