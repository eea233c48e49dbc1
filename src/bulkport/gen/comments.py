"""The comments NDJSON: one object per planned kind, with its flaw applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkport.gen.expected import Tally
from bulkport.gen.flaws import Flaw
from bulkport.gen.generator import WRITE_BUFFER_BYTES, Generator
from bulkport.gen.refs import Refs
from bulkport.gen.values import (
    BAD_TIMESTAMPS,
    BASE_EPOCH_SECONDS,
    BODY_MAX_WORDS,
    ROW_SPACING_SECONDS,
    WORDS,
    bad_id,
    iso,
    mix128,
)


class CommentsGenerator(Generator):
    resource = "comments"

    def __init__(self, seed: int, rows: int, shares: dict[str, float], path: Path,
                 users: Refs, articles: Refs) -> None:
        super().__init__(seed, rows, shares, path)
        self.users = users
        self.articles = articles
        rng = self.rng
        self.bodies = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 60)))
                       + rng.choice((".", "!", "?", " 👍", " — thanks")) for _ in range(256)]
        self.limit_body = " ".join(rng.choice(WORDS) for _ in range(BODY_MAX_WORDS))
        long_words = ("incomprehensibilities", "internationalization", "postgresql")
        self.long_bodies = [
            " ".join(rng.choice(WORDS) for _ in range(BODY_MAX_WORDS + 1)),
            "\n".join(rng.choice(WORDS) for _ in range(800)),
            " ".join(rng.choice(long_words) for _ in range(1_000)),  # over 10,000 characters
        ]

    def id_of(self, i: int) -> str:
        return f"cm_{mix128(i, self.id_salt):032x}"

    def run(self) -> Tally:
        rng = self.rng
        random_, choice = rng.random, rng.choice
        kinds, plan, bodies = self.kinds, self.plan, self.bodies
        n_bodies = len(bodies)
        users, articles = self.users, self.articles
        with self.path.open("wb", buffering=WRITE_BUFFER_BYTES) as f:
            write = f.write
            for i in range(len(plan)):
                kind = kinds[plan[i]]
                created = BASE_EPOCH_SECONDS + 86_400 * 30 + i * ROW_SPACING_SECONDS
                rec: dict[str, Any] = {
                    "id": self.id_of(i), "body": bodies[int(random_() * n_bodies)],
                    "article_id": articles.valid(rng), "user_id": users.valid(rng),
                    "created_at": iso(created + int(random_() * 60)),
                }
                if kind.name != "clean":
                    kind = self._flaw(i, kind, rec)
                if kind.name == "malformed":
                    text = orjson.dumps(rec)
                    write(choice((text[:-1], text[: len(text) // 3], b"{id: 1}")))
                else:
                    write(orjson.dumps(rec))
                write(b"\n")
                self.emitted(i)
        return self.tally()

    def _flaw(self, i: int, kind: Flaw, rec: dict[str, Any]) -> Flaw:
        rng = self.rng
        name = kind.name
        if name == "body_500_words":
            rec["body"] = self.limit_body
        elif name in ("missing_id", "no_id_no_body"):
            if rng.random() < 0.5:
                del rec["id"]
            else:
                rec["id"] = rng.choice(("", None))
            if name == "no_id_no_body":
                del rec["body"]
        elif name == "invalid_id":
            rec["id"] = bad_id(rng, i)
        elif name == "long_body":
            rec["body"] = rng.choice(self.long_bodies)
        elif name == "empty_body":
            rec["body"] = rng.choice(("", "   ", "\n\t"))
        elif name == "missing_body":
            del rec["body"]
        elif name == "invalid_created_at":
            rec["created_at"] = rng.choice(BAD_TIMESTAMPS)
        elif name in ("invalid_article", "invalid_article_and_user"):
            rec["article_id"] = self.articles.invalid(rng)
            if name == "invalid_article_and_user":
                rec["user_id"] = self.users.invalid(rng)
        elif name == "invalid_user":
            rec["user_id"] = self.users.invalid(rng)
        elif name == "duplicate_id":
            j = self.id_twin_of(i)
            if j is None:
                return self.downgrade(i)
            rec["id"] = self.id_of(j)
        return kind
