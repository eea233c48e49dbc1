"""A full disk, for real: the upload and export directories on 1 MiB tmpfs mounts.

An upload that does not fit is a 507 ``insufficient_storage`` (not a 500), an
export job that does not fit fails with a readable reason, and neither leaves a
partial file. A file-size limit of the server process (``ulimit -f``: EFBIG
instead of ENOSPC) is answered the same way. The mounts need root, which the
test machines and CI have (``scripts/test`` runs as root).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import ServerProcess
from tests.reliability.conftest import FAST_ENV, kill_group

#: Size of each tmpfs: far below the 3 MB upload and the ~4 MB export below.
TMPFS_SIZE = "1m"
BIG_UPLOAD_BYTES = 3 * 1024 * 1024


def _mount(path: Path) -> None:
    path.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs",
                           str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.fail(f"mounting a tmpfs needs root (as in CI): {done.stderr.strip()}")


@pytest.fixture
def full_server(clean_db: str, tmp_path: Path) -> Iterator[tuple[ServerProcess, Path]]:
    data = tmp_path / "data"
    mounts = [data / "uploads", data / "exports"]
    for m in mounts:
        _mount(m)
    srv = ServerProcess(clean_db, data, workers=1, env=FAST_ENV)
    try:
        yield srv.start(), data
    finally:
        srv.stop()
        kill_group(srv.proc)
        for m in mounts:
            subprocess.run(["umount", str(m)], check=False)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _big_csv() -> bytes:
    head = b"email,name,role\n"
    rows = b"".join(b"u%07d@example.com,User %07d,reader\n" % (i, i) for i in range(80_000))
    return (head + rows)[:BIG_UPLOAD_BYTES]


def test_an_upload_to_a_full_disk_is_a_507(full_server: tuple[ServerProcess, Path]) -> None:
    srv, data = full_server
    with srv.client() as http:
        resp = http.post("/v1/imports", data={"resource": "users"},
                         files={"file": ("big.csv", _big_csv())})
        assert resp.status_code == 507, resp.text
        body = resp.json()
        assert body["error"] == "insufficient_storage"
        assert "no space left" in body["message"], body["message"]
        assert _leftovers(data / "uploads") == []  # the partial file went
        # The disk is not left full: a small upload right after is accepted.
        ok = http.post("/v1/imports", data={"resource": "users"},
                       files={"file": ("small.csv", b"email,name,role\na@example.com,A,admin\n")})
        assert ok.status_code == 202, ok.text
    assert "unhandled error" not in srv.log.read_text(errors="replace")


def test_an_export_to_a_full_disk_fails_readably(full_server: tuple[ServerProcess, Path],
                                                 clean_db: str) -> None:
    srv, data = full_server
    with psycopg.connect(clean_db, autocommit=True) as c:
        c.execute("INSERT INTO users (id, email, name, role) "
                  "SELECT 'u' || i, 'u' || i || '@example.com', repeat('n', 100), 'reader' "
                  "FROM generate_series(1, 20000) i")
    with srv.client() as http:
        resp = http.post("/v1/exports", json={"resource": "users", "format": "ndjson"})
        assert resp.status_code == 202, resp.text
        job = srv.wait_job(resp.json()["job_id"], "exports", timeout=60)
    assert job["status"] == "failed", job
    assert job["failure_reason"].startswith("no space left on the device"), job
    assert "internal error" not in job["failure_reason"]
    assert job["download_url"] is None
    assert _leftovers(data / "exports") == []


def test_a_file_size_limit_is_a_507_too(clean_db: str, tmp_path: Path) -> None:
    srv = ServerProcess(clean_db, tmp_path / "data", workers=0, env=FAST_ENV)
    # 2 MiB per file (ulimit counts 1 KiB blocks): EFBIG, where a full disk gives ENOSPC.
    srv.args = ["bash", "-c", 'ulimit -f 2048 && exec "$@"', "bash", *srv.args]
    try:
        srv.start()
        resp = httpx.post(f"{srv.base}/v1/imports", data={"resource": "users"},
                          files={"file": ("big.csv", _big_csv())}, timeout=60)
        assert resp.status_code == 507, resp.text
        assert resp.json()["error"] == "insufficient_storage"
        assert _leftovers(tmp_path / "data" / "uploads") == []
    finally:
        srv.stop()
        kill_group(srv.proc)
