"""``bulkport import`` with --delimiter, --encoding, --map and --preview, as processes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg

from tests.cli.conftest import bulkport, cli_env
from tests.conftest import ServerProcess


def spreadsheet_file(path: Path, tag: str) -> Path:
    """What a European spreadsheet writes: semicolons, cp1252, its own column names."""
    text = ("Kennung;E-Mail;Name;Rolle\r\n"
            f"{tag}-1;a-{tag}@example.com;José Müller;reader\r\n"
            f"{tag}-2;b-{tag}@example.com;Zoë “Z”;reader\r\n"
            f"{tag}-3;not-an-email;Bad;reader\r\n")
    path.write_bytes(text.encode("cp1252"))
    return path


MAPS = ["--map", "Kennung=id", "--map", "E-Mail=email", "--map", "Rolle=role"]


def test_preview_as_json_and_table(srv: ServerProcess, tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:8]
    path = spreadsheet_file(tmp_path / "export.csv", tag)
    env = cli_env(srv)
    done = bulkport("import", str(path), "-r", "users", "--delimiter", ";", "--encoding",
                    "cp1252", *MAPS, "--preview", "--json", env=env)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout)
    assert (got["delimiter"], got["encoding"], got["missing_required_fields"]) == (
        ";", "cp1252", [])
    assert [r["valid"] for r in got["records"]] == [True, True, False]
    assert got["records"][0]["record"]["name"] == "José Müller"

    done = bulkport("import", str(path), "-r", "users", "--preview", env=env)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "delimiter ;" in out and "missing required fields: email, role" in out
    assert "--map E-Mail=email" in out and "--map Rolle=role" in out
    assert "encoding=cp1252" in out  # the hint
    assert "email_required" in out and "0 of 3 records valid" in out


def test_import_with_the_options(srv: ServerProcess, tmp_path: Path, pg_url: str) -> None:
    tag = uuid.uuid4().hex[:8]
    path = spreadsheet_file(tmp_path / "export.csv", tag)
    done = bulkport("import", str(path), "-r", "users", "--delimiter", ";", "--encoding",
                    "cp1252", *MAPS, "--wait", "--json", env=cli_env(srv))
    job = json.loads(done.stdout)
    assert (job["successful_records"], job["error_records"]) == (2, 1), done.stderr
    with psycopg.connect(pg_url) as c:
        names = [r[0] for r in c.execute("SELECT name FROM users WHERE id LIKE %s ORDER BY id",
                                         (f"{tag}-%",))]
    assert names == ["José Müller", "Zoë “Z”"]


def test_bad_map_is_a_usage_error(srv: ServerProcess, tmp_path: Path) -> None:
    path = spreadsheet_file(tmp_path / "export.csv", uuid.uuid4().hex[:8])
    done = bulkport("import", str(path), "-r", "users", "--map", "Email", "--preview",
                    env=cli_env(srv))
    assert done.returncode != 0 and "SOURCE=FIELD" in done.stderr
