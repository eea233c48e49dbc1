"""``scripts/e2e.sh`` passes: the real server on its embedded PostgreSQL, driven with curl.

The script starts ``bulkport serve`` without ``BULKPORT_DATABASE_URL`` (so the
embedded database is the one in use), checks the exact outcome of the public
evaluation file and stops the server, its workers and its database.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from tests.conftest import REPO, USERS_HUGE

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed"),
]


def test_e2e_script_passes() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BULKPORT_")}
    env["PYTHON"] = sys.executable
    proc = subprocess.run(["bash", str(REPO / "scripts" / "e2e.sh"), str(USERS_HUGE)],
                          env=env, capture_output=True, text=True, timeout=600, check=False)
    summary = proc.stdout.splitlines()
    assert proc.returncode == 0, "\n".join(summary[-80:]) + proc.stderr[-3000:]
    assert summary[-1].startswith("e2e: all ")
    assert "embedded PostgreSQL stopped" in proc.stdout
