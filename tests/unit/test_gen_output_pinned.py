"""``bulkport gen`` writes the same bytes for the same seed and arguments, release to release.

Benchmarks and tests compare runs over generated files; a change in the
generator's code must not change what a seed produces. The digests below were
taken from the generator's output before it was split into ``bulkport/gen/``.
``expected.json`` is compared without its run time and with the users file's
path made relative.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import orjson
import pytest

from bulkport import cli
from tests.conftest import USERS_HUGE

RUNS: dict[str, tuple[list[str], dict[str, str]]] = {
    "generated users, default mix": (
        ["--seed", "7", "--users", "3000", "--articles", "2000", "--comments", "2500"],
        {"users.csv": "e3918e39ea64de842edf42963a7d5eeb9748ed2bdb6855e2da5abb2aa99dfb27",
         "articles.ndjson": "604fd6f6488c066c6c1b19a48be6fdf32c6f660385d06a241d28ff5d27ef9e37",
         "comments.ndjson": "f454d0dca58b66fa4044ed697419d1d7df8beb18557efb53cd0ead63c3be28ed",
         "expected.json": "3db6cf1d2a7221df07b949cc7b50c38b19b05fa83c8c117c9465fad078298e53"}),
    "users_huge.csv companions, 30% flawed": (
        ["--seed", "11", "--users-file", str(USERS_HUGE), "--articles", "800",
         "--comments", "900", "--flaw-rate", "0.3"],
        {"articles.ndjson": "623e99c0fbe14893d32fe248714edad0230a7f05ca23b7134df8706b2d3885c6",
         "comments.ndjson": "4744aad57ca9f9079d9766eab5829f816bed850e74072ff0197a1632989c9a50",
         "expected.json": "2910d9a487de9f1bbb986f2e1be0c6933f8dfd6ef46ea00a0db88471658e8544"}),
}
LIST_FLAWS = "56f1a10ed6a24405d53315039162c00a704441ea26413455fffcd119e746bd4d"


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _expectation_digest(path: Path) -> str:
    expected: dict[str, Any] = orjson.loads(path.read_bytes())
    del expected["seconds"]
    if "file" in expected["users"]:
        expected["users"]["file"] = Path(expected["users"]["file"]).name
    return _sha256(orjson.dumps(expected, option=orjson.OPT_SORT_KEYS))


@pytest.mark.parametrize("run", list(RUNS))
def test_the_same_seed_writes_the_same_bytes(tmp_path: Path, run: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    args, digests = RUNS[run]
    cli.main(["gen", "-o", str(tmp_path), *args])
    capsys.readouterr()
    written = {p.name: (_expectation_digest(p) if p.name == "expected.json"
                        else _sha256(p.read_bytes()))
               for p in sorted(tmp_path.iterdir())}
    assert written == digests


def test_the_flaw_catalogue_is_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    cli.main(["gen", "--list-flaws"])
    assert _sha256(capsys.readouterr().out.encode()) == LIST_FLAWS
