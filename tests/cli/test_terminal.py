"""The progress bars in a real pseudo-terminal, rendered by a terminal emulator (pyte)."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pexpect
import psycopg
import pyte
import pytest

from tests.cli.conftest import bulkport, clean_users, cli_env
from tests.conftest import USERS_HUGE, ServerProcess

pytestmark = pytest.mark.e2e

COLUMNS, LINES = 160, 30
#: The job bar while the job runs: "job 1a2b3c4d processing ━━━ 40% 4,000 rows 3,500 rows/s ETA".
JOB_BAR = re.compile(r"job [0-9a-f]{8} processing .*\d+% +[\d,]+ rows +[\d,]+ rows/s +ETA")


def run_in_terminal(*args: str, env: dict[str, str]) -> tuple[int, bytes, list[str], str]:
    """Run ``bulkport ARGS`` on a pty: exit status, raw output, every screen seen, last screen."""
    screen = pyte.Screen(COLUMNS, LINES)
    stream = pyte.ByteStream(screen)
    child = pexpect.spawn(sys.executable, ["-m", "bulkport", *args], env=env,
                          dimensions=(LINES, COLUMNS), timeout=120)
    raw = b""
    frames: list[str] = []
    while True:
        try:
            chunk = child.read_nonblocking(65536, timeout=120)
        except pexpect.EOF:
            break
        raw += chunk
        # rich redraws a bar after a carriage return: a snapshot before each one keeps
        # every drawing, however many of them one read returns.
        for piece in re.split(rb"(?=\r)", chunk):
            stream.feed(piece)
            frames.append("\n".join(screen.display))
    child.close()
    assert child.exitstatus is not None
    return child.exitstatus, raw, frames, "\n".join(screen.display)


def test_import_wait_shows_upload_and_job_progress(
        srv: ServerProcess, sql: psycopg.Connection[Any]) -> None:
    env = cli_env(srv, TERM="xterm-256color", COLUMNS=str(COLUMNS), LINES=str(LINES))
    status, raw, frames, final = run_in_terminal(
        "import", str(USERS_HUGE), "--resource", "users", "--wait", env=env)
    assert status == 3
    # The speed column's unit follows the speed: a 1.2 MB upload over loopback on an
    # idle machine runs at GB/s, on a busy one at MB/s or kB/s.
    assert b"uploading users_huge.csv" in raw
    assert re.search(rb"\d+(\.\d+)? [kMG]?B/s", raw), raw[-2000:]
    running = [f for f in frames if JOB_BAR.search(f)]
    assert running, frames[-5:]
    # The bars are transient: the last screen holds the summary, not a bar.
    assert "successful 9,667  rejected 333" in final
    assert "rows/s ETA" not in final
    assert re.search(r"invalid_email_format +201", final)


def test_json_in_a_terminal_prints_only_the_document(
        srv: ServerProcess, sql: psycopg.Connection[Any], tmp_path: Path) -> None:
    env = cli_env(srv, TERM="xterm-256color")
    path = clean_users(tmp_path / "few.csv", 20, bad_roles=1)
    status, raw, _, _ = run_in_terminal("import", str(path), "-r", "users", "--wait",
                                        "--json", env=env)
    assert status == 3
    assert b"rows/s" not in raw.replace(b'"rows_per_sec"', b"")
    assert b"\x1b[" not in raw


def test_export_off_a_terminal_has_no_bar(srv: ServerProcess,
                                          sql: psycopg.Connection[Any]) -> None:
    r = bulkport("export", "-r", "users", "-o", "-", env=cli_env(srv))
    assert r.returncode == 0
    assert r.stderr.startswith("exported 0 users records")
