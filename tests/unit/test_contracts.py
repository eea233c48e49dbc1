"""Cheap checks that the pieces which must agree do agree."""

from __future__ import annotations

import re
from pathlib import Path

from bulkport.config import Settings
from bulkport.jobs.status import JobStatus
from bulkport.sql import QUERIES

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "bulkport"


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text()
    missing = [f"BULKPORT_{n.upper()}" for n in Settings.__dataclass_fields__
               if f"BULKPORT_{n.upper()}" not in readme
               and not n.startswith("s3_")]  # storage settings live in docs/exports.md
    assert missing == []


def test_every_named_query_used_exists() -> None:
    used: set[str] = set()
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        used |= set(re.findall(r'QUERIES\["(\w+)"\]', text))
        # JobStore builds names like f"claim_{kind}_job" for both kinds
        for template in re.findall(r'f"(\w*\{kind\}\w*)"', text):
            used |= {template.replace("{kind}", k) for k in ("import", "export")}
    assert used, "no query names found: the scan is broken"
    assert sorted(used - set(QUERIES)) == []


def test_job_status_enum_matches_the_migration() -> None:
    sql = (SRC / "migrations" / "0001_initial.sql").read_text()
    declared = re.search(r"CREATE TYPE job_status AS ENUM \(([^)]*)\)", sql)
    assert declared is not None
    values = re.findall(r"'(\w+)'", declared.group(1))
    assert values == [s.value for s in JobStatus]


def test_the_readme_states_the_error_page_limit_the_api_enforces() -> None:
    from bulkport.api.app import create_app

    spec = create_app(Settings()).openapi()
    params = spec["paths"]["/v1/imports/{job_id}/errors"]["get"]["parameters"]
    limit = next(p for p in params if p["name"] == "limit")["schema"]
    readme = (ROOT / "README.md").read_text()
    assert f"{limit['default']} per page by default, limit up to {limit['maximum']}" in readme


def test_the_readme_states_what_upsert_does_with_updated_at() -> None:
    from bulkport.resources import get_resource

    # The upsert statement keeps the file's value and falls back to update_default.
    assert get_resource("users").field("updated_at").update_default == "now()"
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert "`updated_at` takes the file's value, else now" in readme
