"""The data generator: determinism, flaw shares, and expectations that bulkport's rules confirm.

The database half of the expectation (references) is checked against real
PostgreSQL in tests/integration/test_gen_import.py; here each file goes through
bulkport's parse and prepare stages in memory, which settle every other code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from bulkport import cli
from bulkport.gen import (
    DEFAULT_MIX,
    FILE_NAMES,
    FLAWS,
    GenConfig,
    Stage,
    build_mix,
    generate,
)
from bulkport.pipeline.formats import Format
from bulkport.pipeline.sources import read_records
from bulkport.pipeline.stage import Stager, prepare
from bulkport.pipeline.types import Mode
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES

ALL_KINDS = [f"{r}.{k.name}=0.03" for r, kinds in FLAWS.items() for k in kinds[1:]]
#: Codes the database decides (references); everything else is settled by the file alone.
REFERENCE_CODES = {"invalid_author_id", "invalid_article_id", "invalid_user_id"}
#: Decided when the batch meets the database: a repeat of an earlier record of the
#: file is deferred by the prepare stage and loaded once its twin is settled.
DUPLICATE_CODES = {"duplicate_id", "duplicate_email", "duplicate_slug"}
DB_CODES = REFERENCE_CODES | DUPLICATE_CODES


def _digest(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.iterdir())}


def _small(out: Path, seed: int = 3, **kw: Any) -> dict[str, Any]:
    cfg = GenConfig(out_dir=out, seed=seed, users=kw.pop("users", 900),
                    articles=kw.pop("articles", 700), comments=kw.pop("comments", 800),
                    mix=kw.pop("mix", build_mix(0, ALL_KINDS)))
    return generate(cfg)


def _replay(path: Path, resource: str) -> tuple[int, int, Counter[str], int]:
    """Run ``path`` through bulkport's parse and prepare stages as one batch (insert mode).

    That is everything the file alone decides: field rules, and which records
    repeat an earlier one. Returns (records, rejected, codes, deferred); reference
    and duplicate verdicts are left to the database.
    """
    fmt = Format.CSV if path.suffix == ".csv" else Format.NDJSON
    with path.open("rb") as f:
        columns, records = read_records(f, fmt, max_line_bytes=1 << 20)
        batch = prepare(RecordValidator(RESOURCES[resource], columns),
                        Stager(RESOURCES[resource], Mode.INSERT), records)
    codes = Counter(e.code for rej in batch.rejected for e in rej.errors)
    return batch.size, len(batch.rejected), codes, len(batch.deferred)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    a = _small(tmp_path / "a")
    b = _small(tmp_path / "b")
    c = _small(tmp_path / "c", seed=4)
    for e in (a, b, c):
        e.pop("seconds")
    assert _digest(tmp_path / "a") != {}
    assert {k: v for k, v in _digest(tmp_path / "a").items() if k != "expected.json"} == {
        k: v for k, v in _digest(tmp_path / "b").items() if k != "expected.json"}
    assert a == b
    digests_c = _digest(tmp_path / "c")
    for name in FILE_NAMES.values():
        assert digests_c[name] != _digest(tmp_path / "a")[name]


@pytest.mark.parametrize("resource", ["users", "articles", "comments"])
def test_expectation_matches_bulkport_rules(tmp_path: Path, resource: str) -> None:
    expected = _small(tmp_path)
    want = expected[resource]
    records, rejected, codes, deferred = _replay(tmp_path / FILE_NAMES[resource], resource)
    references = sum(want["error_counts"].get(c, 0) for c in REFERENCE_CODES)
    db_rows = sum(n for kind, n in want["flaws"].items()
                  if set(_kind(resource, kind).codes) & DB_CODES)
    duplicate_rows = sum(n for kind, n in want["flaws"].items()
                         if set(_kind(resource, kind).codes) & DUPLICATE_CODES)
    assert records == want["records"]
    assert rejected == want["rejected"] - db_rows
    assert deferred == duplicate_rows
    assert codes == {c: n for c, n in want["error_counts"].items() if c not in DB_CODES}
    assert references == sum(n * len(set(_kind(resource, k).codes) & REFERENCE_CODES)
                             for k, n in want["flaws"].items())


def _kind(resource: str, name: str) -> Any:
    return next(k for k in FLAWS[resource] if k.name == name)


def test_flaw_shares_are_exact(tmp_path: Path) -> None:
    mix = build_mix(0.1)
    expected = generate(GenConfig(out_dir=tmp_path, users=20_000, articles=10_000,
                                  comments=10_000, mix=mix))
    for resource in ("users", "articles", "comments"):
        part = expected[resource]
        flawed = part["records"] - part["flaws"].get("clean", 0)
        # Duplicates of the first rows may find nothing earlier to copy: a handful at most.
        assert abs(flawed - round(0.1 * part["records"])) <= 3, resource
        for kind, share in mix[resource].items():
            assert abs(part["flaws"].get(kind, 0) - round(share * part["records"])) <= 3
        rejected_kinds = sum(n for k, n in part["flaws"].items()
                             if not _kind(resource, k).accepted)
        assert part["rejected"] == rejected_kinds
        assert part["successful"] + part["rejected"] == part["records"]


def test_clean_files_are_clean(tmp_path: Path) -> None:
    expected = generate(GenConfig(out_dir=tmp_path, users=3000, articles=2000, comments=2000,
                                  mix=build_mix(0)))
    for resource in ("users", "articles", "comments"):
        assert expected[resource]["rejected"] == 0
        assert expected[resource]["flaws"] == {"clean": expected[resource]["records"]}
    # Every user row has its own id and a unique email: raw COPY would take it.
    lines = (tmp_path / "users.csv").read_text().splitlines()[1:]
    ids = [line.split(",", 1)[0] for line in lines]
    assert all(ids) and len(set(ids)) == len(ids) == 3000


def test_build_mix() -> None:
    assert build_mix() == DEFAULT_MIX
    scaled = build_mix(0.05)
    for resource, shares in scaled.items():
        assert sum(shares.values()) == pytest.approx(0.05)
        ratio = {k: v / DEFAULT_MIX[resource][k] for k, v in shares.items()}
        assert max(ratio.values()) == pytest.approx(min(ratio.values()))
    mix = build_mix(0, ["articles.invalid_slug=0.25"])
    assert mix["articles"]["invalid_slug"] == 0.25
    assert sum(mix["users"].values()) == 0
    for bad in ("articles.nope=0.1", "nope.invalid_slug=0.1", "articles.invalid_slug",
                "articles.clean=0.5", "articles.invalid_slug=2"):
        with pytest.raises(ValueError):
            build_mix(None, [bad])
    with pytest.raises(ValueError, match="more than 1"):
        build_mix(None, ["users.invalid_role=0.6", "users.invalid_email=0.6"])


def test_every_kind_is_documented_once() -> None:
    for resource, kinds in FLAWS.items():
        names = [k.name for k in kinds]
        assert names[0] == "clean" and len(set(names)) == len(names)
        assert set(DEFAULT_MIX[resource]) <= set(names)
        for k in kinds:
            assert k.doc
            assert (k.stage is Stage.ACCEPTED) == (not k.codes)
    docs = (Path(__file__).resolve().parents[2] / "docs" / "generator.md").read_text()
    for resource, kinds in FLAWS.items():
        for k in kinds[1:]:
            assert f"`{k.name}`" in docs, f"docs/generator.md misses {resource}.{k.name}"


_PEAK_RSS = """
import resource, sys
from pathlib import Path
from bulkport.gen import GenConfig, generate
n = int(sys.argv[1])
generate(GenConfig(out_dir=Path(sys.argv[2]), users=n, articles=n // 2, comments=n // 2))
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def test_memory_does_not_grow_with_rows(tmp_path: Path) -> None:
    def peak_kib(users: int) -> int:
        out = subprocess.run([sys.executable, "-c", _PEAK_RSS, str(users), str(tmp_path / "x")],
                             check=True, capture_output=True, text=True).stdout
        return int(out)

    small, large = peak_kib(5_000), peak_kib(100_000)
    # 95,000 more users and 47,500 more articles and comments: holding them would cost
    # over 100 MiB; the flaw plan costs one byte per user and article.
    assert large - small < 12 * 1024, (small, large)


def test_cli_prints_and_writes_the_expectation(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["gen", "-o", str(tmp_path), "--users", "300", "--articles", "200",
              "--comments", "100", "--seed", "9", "--flaw-rate", "0.2",
              "--flaw", "comments.duplicate_id=0.05"])
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "expected.json").read_text())
    assert printed["comments"]["flaws"]["duplicate_id"] == 5
    assert printed["users"]["records"] == 300
    with pytest.raises(SystemExit, match="not both"):
        cli.main(["gen", "-o", str(tmp_path), "--users", "5", "--users-file", "x.csv"])
    with pytest.raises(SystemExit, match="articles too"):
        cli.main(["gen", "-o", str(tmp_path), "--users", "5", "--articles", "0"])


def test_users_file_references_only_users_that_import(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text(
        "id,email,name,role,active,created_at,updated_at\n"
        "u1,a@example.com,A,admin,true,2024-01-01T00:00:00Z,2024-01-01T00:00:00Z\n"
        "u2,foo@bar,B,admin,true,,\n"              # invalid email
        "u3,c@example.com,C,manager,true,,\n"      # invalid role
        ",d@example.com,D,reader,false,,\n"        # no id: cannot be referred to
        "u5,e@example.com,E,reader,,,\n"
        "u6,E@example.com,E2,reader,true,,\n"      # duplicate email: neither is safe
        "u7,g@example.com,G,author,true,,\n"
        "u7,h@example.com,H,author,true,,\n"       # duplicate id: neither is safe
        "u9,i@example.com,,author,true,,\n"        # no name
    )
    expected = generate(GenConfig(out_dir=tmp_path / "out", users_file=users, articles=400,
                                  comments=0, mix=build_mix(0)))
    assert expected["users"]["referenced_users"] == 1
    authors = {json.loads(line)["author_id"]
               for line in (tmp_path / "out" / "articles.ndjson").read_text().splitlines()}
    assert authors == {"u1"}
