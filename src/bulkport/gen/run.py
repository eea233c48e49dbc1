"""One generator run: the files in load order, then ``expected.json``."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from bulkport.gen.articles import ArticlesGenerator
from bulkport.gen.comments import CommentsGenerator
from bulkport.gen.flaws import FLAWS, Mix, build_mix
from bulkport.gen.refs import FileUserRefs, PlanRefs, Refs
from bulkport.gen.users import UsersGenerator

#: The repository root when running from a checkout (src layout).
REPO_DIR = Path(__file__).resolve().parents[3]
#: The public evaluation users file the default articles and comments refer to.
DEFAULT_USERS_FILE = REPO_DIR.parent / "shared" / "testdata" / "users_huge.csv"
DEFAULT_ARTICLES = 15_000
DEFAULT_COMMENTS = 20_000
#: Users generated when no ``--users`` is given and the users file is absent.
DEFAULT_GENERATED_USERS = 10_000
DEFAULT_OUT_DIR = Path("gen-data")
EXPECTED_FILE = "expected.json"
FILE_NAMES = {"users": "users.csv", "articles": "articles.ndjson",
              "comments": "comments.ndjson"}
#: The resources generated, in load order (the order of the flaw catalogue).
RESOURCE_NAMES = tuple(FLAWS)


@dataclass
class GenConfig:
    """One generator run. ``users=None`` refers to ``users_file`` instead of generating."""

    out_dir: Path = DEFAULT_OUT_DIR
    seed: int = 1
    users: int | None = None
    users_file: Path | None = None
    articles: int = DEFAULT_ARTICLES
    comments: int = DEFAULT_COMMENTS
    mix: Mix = field(default_factory=build_mix)


def generate(cfg: GenConfig) -> dict[str, Any]:
    """Write the files of ``cfg`` and ``expected.json``; return the expectation."""
    started = time.perf_counter()
    for name, count in (("users", cfg.users), ("articles", cfg.articles),
                        ("comments", cfg.comments)):
        if count is not None and count < 0:
            raise ValueError(f"--{name} must not be negative")
    if cfg.comments and not cfg.articles:
        raise ValueError("comments refer to articles: generate articles too (--articles N)")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    expected: dict[str, Any] = {
        "seed": cfg.seed, "mode": "insert",
        "assumes": "imported in insert mode in the order users, articles, comments, into a "
                   "database holding none of these records, with the default allowed roles",
        "mix": {r: {k: v for k, v in cfg.mix[r].items() if v} for r in RESOURCE_NAMES},
    }
    user_refs: Refs | None = None
    if cfg.users is None:
        if cfg.users_file is None:
            raise ValueError("give --users N or a --users-file to refer to")
        file_refs = FileUserRefs(cfg.users_file)
        user_refs = file_refs
        expected["users"] = {"file": str(cfg.users_file.resolve()), "generated": False,
                             "records": file_refs.records,
                             "referenced_users": len(file_refs.ids)}
    elif cfg.users:
        users = UsersGenerator(cfg.seed, cfg.users, cfg.mix["users"],
                               cfg.out_dir / FILE_NAMES["users"])
        expected["users"] = {**users.run().as_dict(), "generated": True}
        user_refs = PlanRefs("u", "users", users.plan, users.id_of)
        del users
    if cfg.articles:
        if user_refs is None:
            raise ValueError("articles refer to users: give --users N or a --users-file")
        articles = ArticlesGenerator(cfg.seed, cfg.articles, cfg.mix["articles"],
                                     cfg.out_dir / FILE_NAMES["articles"], user_refs)
        expected["articles"] = articles.run().as_dict()
        if cfg.comments:
            article_refs = PlanRefs("a", "articles", articles.plan, articles.id_of)
            comments = CommentsGenerator(cfg.seed, cfg.comments, cfg.mix["comments"],
                                         cfg.out_dir / FILE_NAMES["comments"], user_refs,
                                         article_refs)
            expected["comments"] = comments.run().as_dict()
    expected["seconds"] = round(time.perf_counter() - started, 3)
    (cfg.out_dir / EXPECTED_FILE).write_bytes(
        orjson.dumps(expected, option=orjson.OPT_INDENT_2) + b"\n")
    return expected
