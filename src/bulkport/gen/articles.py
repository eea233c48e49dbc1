"""The articles NDJSON: one object per planned kind, with its flaw applied."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from bulkport.gen.expected import Tally
from bulkport.gen.flaws import Flaw
from bulkport.gen.generator import WRITE_BUFFER_BYTES, Generator
from bulkport.gen.refs import Refs
from bulkport.gen.values import (
    ARTICLE_STATUSES,
    BAD_SLUGS,
    BAD_STATUSES,
    BAD_TIMESTAMPS,
    BASE_EPOCH_SECONDS,
    ID_FLAWS,
    OPTIONAL_ID_DROP,
    ROW_SPACING_SECONDS,
    TAGS,
    WORDS,
    bad_id,
    iso,
    mix128,
)


class ArticlesGenerator(Generator):
    resource = "articles"

    def __init__(self, seed: int, rows: int, shares: dict[str, float], path: Path,
                 users: Refs) -> None:
        super().__init__(seed, rows, shares, path)
        self.users = users
        words = self.rng.sample(WORDS, len(WORDS))
        self.bodies = [
            " ".join(self.rng.choice(words) for _ in range(self.rng.randrange(20, 160)))
            for _ in range(64)
        ]

    def slug_of(self, i: int) -> str:
        h = mix128(i, self.key_salt)
        n = len(WORDS)
        return f"{WORDS[h % n]}-{WORDS[(h >> 8) % n]}-{WORDS[(h >> 16) % n]}-{i}"

    def run(self) -> Tally:
        rng = self.rng
        random_, randrange = rng.random, rng.randrange
        kinds, plan, users, bodies = self.kinds, self.plan, self.users, self.bodies
        n_status, n_bodies = len(ARTICLE_STATUSES), len(bodies)
        with self.path.open("wb", buffering=WRITE_BUFFER_BYTES) as f:
            write = f.write
            for i in range(len(plan)):
                kind = kinds[plan[i]]
                slug = self.slug_of(i)
                status = ARTICLE_STATUSES[int(random_() * n_status)]
                created = BASE_EPOCH_SECONDS + 86_400 * 8 + i * ROW_SPACING_SECONDS
                rec: dict[str, Any] = {
                    "id": self.id_of(i), "slug": slug,
                    "title": slug.rsplit("-", 1)[0].replace("-", " ").capitalize(),
                    "description": f"Notes on {slug.split('-')[0]}",
                    "body": bodies[int(random_() * n_bodies)], "author_id": users.valid(rng),
                    "tags": rng.sample(TAGS, int(random_() * 4)),
                    "published_at": None if status == "draft" else iso(created + 3600),
                    "status": status, "created_at": iso(created),
                    "updated_at": iso(created + int(random_() * 86_400)),
                }
                r = random_()
                if r < 0.05:
                    del rec["description"]  # optional
                elif r < 0.08:
                    del rec["tags"]  # optional
                elif r < 0.10:
                    rec["views"] = randrange(10_000)  # unknown fields are ignored
                if kind.name != "clean":
                    kind = self._flaw(i, kind, rec)
                if kind.name == "malformed":
                    write(self._malformed(rec))
                else:
                    write(orjson.dumps(rec))
                write(b"\n")
                self.emitted(i)
        return self.tally()

    def _malformed(self, rec: dict[str, Any]) -> bytes:
        text = orjson.dumps(rec)
        return self.rng.choice((text[: len(text) // 2], b"[" + text + b"]", b"not json at all",
                                text.replace(b'"', b"'", 4)))

    def _flaw(self, i: int, kind: Flaw, rec: dict[str, Any]) -> Flaw:
        rng = self.rng
        name = kind.name
        if name == "missing_id":
            rec.pop("id", None)
        elif name == "slug_of_rejected":
            j = self.take_rejected_key()
            if j is None:
                return self.downgrade(i)
            rec["slug"] = self.slug_of(j)
        elif name in ("invalid_slug", "slug_and_status"):
            rec["slug"] = f"{rng.choice(BAD_SLUGS)}-{i}" if rng.random() < 0.5 else (
                rng.choice(BAD_SLUGS))
            if name == "slug_and_status":
                rec["status"] = rng.choice(BAD_STATUSES)
        elif name == "duplicate_slug":
            j = self.key_twin_of(i)
            if j is None:
                return self.downgrade(i)
            rec["slug"] = self.slug_of(j)
        elif name == "invalid_author":
            rec["author_id"] = self.users.invalid(rng)
        elif name == "author_missing":
            if rng.random() < 0.5:
                del rec["author_id"]
            else:
                rec["author_id"] = ""
        elif name == "draft_published":
            rec["status"] = "draft"
            rec["published_at"] = rec["created_at"]
        elif name == "invalid_status":
            rec["status"] = rng.choice(BAD_STATUSES)
        elif name == "title_missing":
            rec["title"] = rng.choice(("", "  ", None))
        elif name == "body_missing":
            if rng.random() < 0.4:
                del rec["body"]
            else:
                rec["body"] = rng.choice(("", " \n ", None))
        elif name == "invalid_published_at":
            rec["status"] = "published"
            rec["published_at"] = rng.choice(BAD_TIMESTAMPS)
        elif name == "invalid_id":
            rec["id"] = bad_id(rng, i)
        elif name == "duplicate_id":
            j = self.id_twin_of(i)
            if j is None:
                return self.downgrade(i)
            rec["id"] = self.id_of(j)
        if (self.id_optional and not kind.accepted and name not in ID_FLAWS
                and rng.random() < OPTIONAL_ID_DROP):
            del rec["id"]  # the id is optional: without it the outcome is the same
        return kind
