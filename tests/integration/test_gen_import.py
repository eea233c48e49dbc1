"""Generated files go through the real pipeline and give exactly the generator's expectation."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import pytest

from bulkport.config import Settings
from bulkport.gen import FILE_NAMES, FLAWS, GenConfig, build_mix, generate
from tests.conftest import USERS_HUGE, get_job, run_jobs, submit_import


def _error_codes(conn: psycopg.Connection[Any], job_id: str) -> Counter[str]:
    rows = conn.execute(
        "SELECT e->>'code' FROM import_errors, jsonb_array_elements(errors) e WHERE job_id = %s",
        (job_id,)).fetchall()
    return Counter(r[0] for r in rows)


def _import_and_check(url: str, settings: Settings, conn: psycopg.Connection[Any],
                      path: Path, resource: str, expected: dict[str, Any]) -> None:
    want = expected[resource]
    job_id = submit_import(url, settings, path, resource)
    run_jobs(url, settings)
    job = get_job(url, job_id)
    assert job["status"] == ("completed_with_errors" if want["rejected"] else "completed")
    assert job["processed_records"] == job["total_records"] == want["records"]
    assert (job["successful_records"], job["error_records"]) == (
        want["successful"], want["rejected"]), resource
    assert job["error_counts"] == want["error_counts"], resource
    assert _error_codes(conn, job_id) == want["error_counts"], resource
    assert conn.execute("SELECT count(*) FROM import_errors WHERE job_id = %s",
                        (job_id,)).fetchone() == (want["rejected"],)


def test_default_companions_of_users_huge(clean_db: str, settings: Settings,
                                           conn: psycopg.Connection[Any], tmp_path: Path
                                           ) -> None:
    expected = generate(GenConfig(out_dir=tmp_path / "gen", users_file=USERS_HUGE))
    assert (expected["articles"]["records"], expected["comments"]["records"]) == (15_000, 20_000)
    # SPEC §7's flaws are all present.
    assert set(expected["articles"]["error_counts"]) == {
        "invalid_slug_format", "duplicate_slug", "invalid_author_id",
        "draft_cannot_have_published_at"}
    assert set(expected["comments"]["error_counts"]) == {
        "invalid_article_id", "invalid_user_id", "body_exceeds_500_words", "body_required",
        "id_required"}

    job_id = submit_import(clean_db, settings, USERS_HUGE, "users")
    run_jobs(clean_db, settings)
    assert get_job(clean_db, job_id)["successful_records"] == 9667
    for resource in ("articles", "comments"):
        _import_and_check(clean_db, settings, conn, tmp_path / "gen" / FILE_NAMES[resource],
                          resource, expected)
    articles = conn.execute("SELECT count(*) FROM articles").fetchone()
    comments = conn.execute("SELECT count(*) FROM comments").fetchone()
    assert articles == (expected["articles"]["successful"],)
    assert comments == (expected["comments"]["successful"],)


@pytest.mark.parametrize("batch_size", [23, 5000])
def test_every_flaw_kind_with_generated_users(clean_db: str, settings: Settings,
                                              conn: psycopg.Connection[Any], tmp_path: Path,
                                              batch_size: int) -> None:
    """All kinds at once, at two batch sizes: duplicates and twins land in and across batches."""
    overrides = [f"{r}.{k.name}=0.03" for r, kinds in FLAWS.items() for k in kinds[1:]]
    expected = generate(GenConfig(out_dir=tmp_path / "gen", seed=7, users=1200, articles=1000,
                                  comments=1200, mix=build_mix(0, overrides)))
    for resource, kinds in FLAWS.items():
        written = set(expected[resource]["flaws"])
        assert written == {k.name for k in kinds}, f"{resource}: some kind never written"
    settings = settings.model_copy(update={"batch_size": batch_size})
    for resource in ("users", "articles", "comments"):
        _import_and_check(clean_db, settings, conn, tmp_path / "gen" / FILE_NAMES[resource],
                          resource, expected)
