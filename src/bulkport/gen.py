"""``bulkport gen``: users CSV, articles NDJSON and comments NDJSON with known flaws.

The files are deterministic for a given ``--seed`` and come with the exact
outcome bulkport must produce when they are imported in insert mode, in the
order users -> articles -> comments, into a database that holds none of their
records (with the default allowed roles): records, successful, rejected and the
count of every error code. That outcome is written next to the files as
``expected.json`` and printed.

How the expectation stays exact
-------------------------------
Every row is either clean or carries exactly one *flaw kind* from
:data:`FLAWS`; each kind yields a fixed set of error codes whatever the batch
boundaries are, because the generator only builds situations whose outcome the
import semantics settle alone:

* field problems are all reported together (``email_and_role`` yields two codes);
* a duplicate (``duplicate_email``, ``duplicate_slug``, ``duplicate_id``) copies
  the key of an *earlier record that is accepted*, and is itself free of any
  other problem, so it is rejected with exactly one code;
* a record may reuse the key of an earlier record that *field validation*
  rejects (``email_of_rejected``, ``slug_of_rejected``): that earlier record is
  no twin, so the later one is accepted;
* references of clean records point at records that are accepted; broken
  references point at ids that never reach the database (``a-missing-N``,
  non-UUID text, ids of rejected records) and appear only on records with no
  other problem. A record rejected only by the database is never used as a twin
  or as a reference target: whether it shadows a later record depends on batch
  boundaries.

Which rows carry which flaw is a seeded shuffle of exact counts
(``round(share * rows)`` per kind); a duplicate that finds no earlier record to
copy (the first rows of a file) is written clean, and the expectation counts
what was written.

Memory: one byte per generated user and article (the flaw plan, needed to pick
references at random), plus the keys of the ``--users-file`` when one is used.
Ids, emails and slugs are pure functions of (seed, row), so nothing else is kept.
"""

from __future__ import annotations

import argparse
import csv
import enum
import hashlib
import random
import re
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

# --- defaults ---------------------------------------------------------------------------

#: The repository root when running from a checkout (src layout).
REPO_DIR = Path(__file__).resolve().parents[2]
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
RESOURCE_NAMES = ("users", "articles", "comments")
#: The roles bulkport accepts by default (``BULKPORT_ALLOWED_ROLES``).
ROLES = ("admin", "author", "reader")
USERS_HEADER = ("id", "email", "name", "role", "active", "created_at", "updated_at")
#: 2024-01-01T00:00:00Z (seconds since the epoch): first generated timestamp.
BASE_EPOCH_SECONDS = 1_704_067_200
#: Spacing of consecutive records' created_at (seconds).
ROW_SPACING_SECONDS = 61
#: Random draws spent looking for an earlier record to copy before using the latest one.
TWIN_TRIES = 64
#: Output buffer of each file (bytes).
WRITE_BUFFER_BYTES = 1 << 20


class Stage(enum.Enum):
    """Where bulkport settles a record carrying a flaw."""

    ACCEPTED = "accepted"
    PARSE = "parse"        # the line/row cannot be read (malformed_record)
    FIELD = "field"        # field validation rejects it
    DATABASE = "database"  # uniqueness or a reference rejects it


@dataclass(frozen=True)
class Flaw:
    """One kind of row: what is wrong with it and what bulkport reports."""

    name: str
    codes: tuple[str, ...]
    stage: Stage
    doc: str
    #: The record carries its own id (the one derived from its row).
    own_id: bool = True
    #: The record carries its own natural key (email / slug derived from its row).
    own_key: bool = True

    @property
    def accepted(self) -> bool:
        return self.stage is Stage.ACCEPTED


def _ok(name: str, doc: str, **kw: bool) -> Flaw:
    return Flaw(name, (), Stage.ACCEPTED, doc, **kw)


def _bad(name: str, codes: str, stage: Stage, doc: str, **kw: bool) -> Flaw:
    return Flaw(name, tuple(codes.split()), stage, doc, **kw)


F, D, P = Stage.FIELD, Stage.DATABASE, Stage.PARSE

#: Every row kind per resource; index 0 is the clean row.
FLAWS: dict[str, tuple[Flaw, ...]] = {
    "users": (
        _ok("clean", "a valid user"),
        _ok("missing_id", "no id: the email identifies the user, an id is generated",
            own_id=False),
        _ok("email_of_rejected", "reuses the email of an earlier user rejected by field "
            "validation; accepted, since a rejected record is no twin", own_key=False),
        _ok("active_missing", "active left empty: defaults to true"),
        _bad("invalid_email", "invalid_email_format", F, "malformed email (foo@bar, ...)",
             own_key=False),
        _bad("invalid_role", "invalid_role", F, "role outside admin/author/reader"),
        _bad("email_and_role", "invalid_email_format invalid_role", F,
             "malformed email and unknown role: both reported", own_key=False),
        _bad("email_missing", "email_required", F, "empty email", own_key=False),
        _bad("name_missing", "name_required", F, "empty or blank name"),
        _bad("invalid_active", "invalid_active", F, "active neither true nor false"),
        _bad("invalid_created_at", "invalid_created_at", F, "created_at not ISO-8601"),
        _bad("invalid_id", "invalid_id_format", F, "id with spaces/symbols or too long",
             own_id=False),
        _bad("duplicate_email", "duplicate_email", D,
             "email of an earlier accepted user, case changed half of the time",
             own_key=False),
        _bad("duplicate_id", "duplicate_id", D, "id of an earlier accepted user",
             own_id=False),
        _bad("malformed", "malformed_record", P, "CSV row with a wrong column count",
             own_id=False, own_key=False),
    ),
    "articles": (
        _ok("clean", "a valid article"),
        _ok("missing_id", "no id: the slug identifies the article, an id is generated",
            own_id=False),
        _ok("slug_of_rejected", "reuses the slug of an earlier article rejected by field "
            "validation; accepted", own_key=False),
        _bad("invalid_slug", "invalid_slug_format", F, "slug not kebab-case", own_key=False),
        _bad("duplicate_slug", "duplicate_slug", D, "slug of an earlier accepted article",
             own_key=False),
        _bad("invalid_author", "invalid_author_id", D,
             "author_id of no user (a-missing-N, non-UUID text, a rejected user's id)"),
        _bad("author_missing", "author_id_required", F, "no author_id"),
        _bad("draft_published", "draft_cannot_have_published_at", F,
             "status draft with a published_at"),
        _bad("invalid_status", "invalid_status", F, "status outside draft/published/archived"),
        _bad("slug_and_status", "invalid_slug_format invalid_status", F,
             "bad slug and bad status: both reported", own_key=False),
        _bad("title_missing", "title_required", F, "no title"),
        _bad("body_missing", "body_required", F, "no body, empty or blank body"),
        _bad("invalid_published_at", "invalid_published_at", F, "published_at not ISO-8601"),
        _bad("invalid_id", "invalid_id_format", F, "id with spaces/symbols or too long",
             own_id=False),
        _bad("duplicate_id", "duplicate_id", D, "id of an earlier accepted article",
             own_id=False),
        _bad("malformed", "malformed_record", P, "line that is not JSON, or not an object",
             own_id=False, own_key=False),
    ),
    "comments": (
        _ok("clean", "a valid comment"),
        _ok("body_500_words", "body of exactly 500 words (the limit): accepted"),
        _bad("missing_id", "id_required", F, "no id (comments have no natural key)",
             own_id=False),
        _bad("invalid_id", "invalid_id_format", F, "id with spaces/symbols or too long",
             own_id=False),
        _bad("long_body", "body_exceeds_500_words", F,
             "body over 500 words (501 words, or over 10,000 characters)"),
        _bad("empty_body", "body_required", F, "empty or blank body"),
        _bad("missing_body", "body_required", F, "no body field"),
        _bad("no_id_no_body", "id_required body_required", F, "neither id nor body",
             own_id=False),
        _bad("invalid_created_at", "invalid_created_at", F, "created_at not ISO-8601"),
        _bad("invalid_article", "invalid_article_id", D, "article_id of no article"),
        _bad("invalid_user", "invalid_user_id", D, "user_id of no user"),
        _bad("invalid_article_and_user", "invalid_article_id invalid_user_id", D,
             "both references broken: both reported"),
        _bad("duplicate_id", "duplicate_id", D, "id of an earlier accepted comment",
             own_id=False),
        _bad("malformed", "malformed_record", P, "line that is not valid JSON",
             own_id=False),
    ),
}

#: SPEC §7's mix: the share of rows of each kind (the rest is clean). Close to
#: users_huge.csv (2% invalid emails, 1.7% invalid roles, 2% missing ids, a few
#: duplicate emails, one row in 120 with both a bad email and a bad role).
DEFAULT_MIX: dict[str, dict[str, float]] = {
    "users": {"missing_id": 0.02, "invalid_email": 0.012, "invalid_role": 0.008,
              "email_and_role": 0.008, "duplicate_email": 0.004},
    "articles": {"missing_id": 0.02, "invalid_slug": 0.01, "duplicate_slug": 0.006,
                 "invalid_author": 0.01, "draft_published": 0.01},
    "comments": {"missing_id": 0.01, "invalid_article": 0.008, "invalid_user": 0.008,
                 "long_body": 0.005, "empty_body": 0.004, "missing_body": 0.004},
}

Mix = dict[str, dict[str, float]]


def flaw_index(resource: str) -> dict[str, int]:
    return {f.name: i for i, f in enumerate(FLAWS[resource])}


def build_mix(flaw_rate: float | None = None, overrides: Iterable[str] = ()) -> Mix:
    """The per-resource shares: SPEC §7's mix, scaled to ``flaw_rate``, then ``overrides``.

    ``flaw_rate`` is the share of flawed rows of each file (0 gives clean files);
    the default mix keeps its proportions. An override ``RESOURCE.KIND=SHARE``
    (e.g. ``articles.invalid_slug=0.02``) then sets one kind's share exactly.
    """
    mix = {r: dict(m) for r, m in DEFAULT_MIX.items()}
    if flaw_rate is not None:
        if not 0 <= flaw_rate <= 1:
            raise ValueError(f"--flaw-rate must be between 0 and 1, not {flaw_rate}")
        for shares in mix.values():
            total = sum(shares.values())
            for kind in shares:
                shares[kind] = shares[kind] * flaw_rate / total if total else 0.0
    for text in overrides:
        match = re.fullmatch(r"(\w+)\.(\w+)=([0-9.eE+-]+)", text.strip())
        if match is None:
            raise ValueError(f"--flaw {text!r}: expected RESOURCE.KIND=SHARE, "
                             "e.g. articles.invalid_slug=0.02")
        resource, kind, share_text = match.groups()
        if resource not in FLAWS:
            raise ValueError(f"--flaw {text!r}: unknown resource {resource!r}; "
                             f"use one of: {', '.join(FLAWS)}")
        if kind not in flaw_index(resource) or kind == "clean":
            kinds = ", ".join(f.name for f in FLAWS[resource][1:])
            raise ValueError(f"--flaw {text!r}: unknown {resource} flaw {kind!r}; "
                             f"use one of: {kinds}")
        share = float(share_text)
        if not 0 <= share <= 1:
            raise ValueError(f"--flaw {text!r}: the share must be between 0 and 1")
        mix[resource][kind] = share
    for resource, shares in mix.items():
        if sum(shares.values()) > 1 + 1e-9:
            raise ValueError(f"the {resource} flaw shares add up to more than 1")
    return mix


# --- values derived from (seed, row) ----------------------------------------------------

_MASK128 = (1 << 128) - 1
_MULT_A = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MULT_B = 0xD6E8FEB86659FD93C13A2F6B9E2BD1A7


def _salt(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=16).digest())


def _mix128(i: int, salt: int) -> int:
    """A bijection of 128-bit integers: distinct rows always get distinct ids."""
    x = ((i + salt) * _MULT_A) & _MASK128
    x ^= x >> 67
    x = (x * _MULT_B) & _MASK128
    return x ^ (x >> 59)


def _uuid_text(x: int) -> str:
    h = f"{x:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _iso(epoch_seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch_seconds))


FIRST_NAMES = ("Ada", "Alan", "Grace", "Linus", "Zoë", "José", "Chloé", "Søren", "Aiko",
               "Mei", "Omar", "Priya", "Noah", "Emma", "Lucía", "Jürgen", "Fatima", "Ivan",
               "Olga", "Kwame", "Nia", "Mateo", "Sofia", "Hiro", "Ana", "Björn", "Amara",
               "Liam", "Yusuf", "Maya")
LAST_NAMES = ("Lovelace", "Turing", "Hopper", "Torvalds", "Müller", "García", "O'Brien",
              "Nakamura", "Chen", "Haddad", "Patel", "Smith", "Dubois", "Kowalski",
              "Okafor", "Rossi", "Ivanova", "Andersen", "Silva", "Kim", "Nguyen",
              "Schmidt", "Haraldsen", "Mensah", "Costa", "Novak", "Jensen", "Ali",
              "Tanaka", "Fischer")
_ASCII = str.maketrans({"ë": "e", "é": "e", "ø": "o", "ü": "u", "í": "i", "ö": "o",
                        "'": "", "ú": "u"})
LOCAL_FIRST = tuple(n.lower().translate(_ASCII) for n in FIRST_NAMES)
LOCAL_LAST = tuple(n.lower().translate(_ASCII) for n in LAST_NAMES)
DOMAINS = ("example.com", "mail.dev", "test.org", "sample.net", "corp.example.co.uk")
WORDS = (
    "postgres", "bulk", "import", "export", "stream", "batch", "index", "query", "schema",
    "python", "async", "worker", "queue", "lease", "cursor", "vacuum", "tuple", "commit",
    "design", "notes", "guide", "deep", "dive", "lessons", "learned", "scaling", "fast",
    "simple", "modern", "practical", "hidden", "costs", "real", "world", "data", "model",
    "testing", "review", "release", "roadmap", "tips", "tricks", "patterns", "anti",
    "garden", "coffee", "travel", "music", "winter", "summer", "city", "river", "mountain",
    "kitchen", "recipes", "bread", "books", "reading", "writing", "habits", "focus", "calm",
)
TAGS = ("postgres", "python", "performance", "howto", "opinion", "news", "tutorial",
        "devops", "data", "life", "food", "travel")

BAD_EMAILS = ("foo@bar", "no-at-sign.example.com", "two@@example.com", "spaces in@example.com",
              "trailing@dot.", "@example.com", "user@", "user@exa mple.com")
BAD_ROLES = ("manager", "superuser", "Admin", "guest", "owner")
BAD_BOOLEANS = ("yes", "no", "1", "maybe", "TRUEISH")
BAD_TIMESTAMPS = ("yesterday", "01/02/2024 10:00", "2024-13-45T00:00:00Z", "not-a-date",
                  "2024/01/01")
BAD_STATUSES = ("deleted", "Published", "pending", "live", "DRAFT")
BAD_SLUGS = ("Hello World", "hello_world", "-leading-dash", "trailing-dash-", "double--dash",
             "UPPER-case", "ünïcode-slug", "slash/slug", "dot.slug")
ARTICLE_STATUSES = ("published", "published", "published", "draft", "draft", "archived")


#: Share of rejected users/articles written without their (optional) id.
OPTIONAL_ID_DROP = 0.2
#: Kinds whose outcome depends on the id, so it is never dropped from them.
_ID_FLAWS = ("invalid_id", "duplicate_id", "malformed")


def _bad_id(rng: Any, i: int) -> str:
    return rng.choice((f"bad id {i}", f"id#{i}!", "x" * 65 + str(i), f"id/{i}", f"é-{i}"))


# --- references --------------------------------------------------------------------------


class Refs:
    """Ids of one resource that another resource refers to: accepted ones, or missing ones."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def valid(self, rng: Any) -> str:
        raise NotImplementedError

    def invalid(self, rng: Any) -> str:
        """An id no accepted record has: ``a-missing-N``, non-UUID text or a rejected id."""
        n = rng.randrange(1_000_000)
        if rng.random() < 0.2:
            return f"not a {self.prefix} id {n}"
        return f"{self.prefix}-missing-{n}"


class PlanRefs(Refs):
    """References into a file generated in this run, through its flaw plan."""

    def __init__(self, prefix: str, resource: str, plan: bytearray,
                 id_of: Callable[[int], str]) -> None:
        super().__init__(prefix)
        kinds = FLAWS[resource]
        self.plan = plan
        self.id_of = id_of
        self.good = bytes(int(k.accepted and k.own_id) for k in kinds)
        self.rejected = bytes(int(not k.accepted) for k in kinds)
        # A few targets found by a scan, for when random draws keep missing.
        good = self.good
        self.fallback = list(islice((j for j in range(len(plan)) if good[plan[j]]), 4096))
        if not self.fallback:
            raise ValueError(f"no {resource} record is accepted: nothing to refer to")

    def valid(self, rng: Any) -> str:
        plan, good, n, random_ = self.plan, self.good, len(self.plan), rng.random
        for _ in range(TWIN_TRIES):
            j = int(random_() * n)
            if good[plan[j]]:
                return self.id_of(j)
        return self.id_of(rng.choice(self.fallback))

    def invalid(self, rng: Any) -> str:
        if rng.random() < 0.3:
            # The id of a record that does not import (never the one of an accepted record:
            # only duplicate_id rows copy ids, and they copy accepted ones).
            for _ in range(8):
                j = rng.randrange(len(self.plan))
                if self.rejected[self.plan[j]]:
                    return self.id_of(j)
        return super().invalid(rng)


class FileUserRefs(Refs):
    """References to the users of an existing CSV file that surely import.

    A user qualifies when every field is plainly valid (a stricter check than
    bulkport's) and its id and email occur once in the whole file, so that no
    earlier row can shadow it.
    """

    STRICT_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
    STRICT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
    STRICT_TS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")

    def __init__(self, path: Path) -> None:
        super().__init__("u")
        self.path = path
        ids: Counter[str] = Counter()
        emails: Counter[str] = Counter()
        candidates: list[tuple[str, str]] = []
        with path.open(encoding="utf-8", newline="") as f:
            reader = csv.reader(f)
            header = [h.strip().lstrip("\ufeff") for h in next(reader)]
            missing = {"id", "email", "name", "role"} - set(header)
            if missing:
                raise ValueError(f"{path}: not a users CSV (no {', '.join(sorted(missing))})")
            for values in reader:
                if not values:
                    continue
                rec = dict(zip(header, values, strict=False))
                uid, email = rec.get("id", ""), rec.get("email", "").strip().lower()
                ids[uid] += 1
                emails[email] += 1
                if len(values) == len(header) and self._plainly_valid(rec):
                    candidates.append((uid, email))
        self.all_ids = set(ids)
        self.ids = [uid for uid, email in candidates if ids[uid] == 1 and emails[email] == 1]
        if not self.ids:
            raise ValueError(f"{path}: no user of this file surely imports")
        self.records = sum(ids.values())

    def _plainly_valid(self, rec: dict[str, str]) -> bool:
        ts_ok = all(not rec.get(t) or (self.STRICT_TS.fullmatch(rec[t]) and _parses(rec[t]))
                    for t in ("created_at", "updated_at"))
        return bool(self.STRICT_ID.fullmatch(rec["id"])
                    and self.STRICT_EMAIL.fullmatch(rec["email"].strip())
                    and rec["role"] in ROLES and rec["name"].strip()
                    and "\x00" not in rec["name"]
                    and rec.get("active", "").strip().lower() in ("", "true", "false")
                    and ts_ok)

    def valid(self, rng: Any) -> str:
        ids = self.ids
        return ids[int(rng.random() * len(ids))]

    def invalid(self, rng: Any) -> str:
        while True:
            ref = super().invalid(rng)
            if ref not in self.all_ids:
                return ref


def _parses(ts: str) -> bool:
    try:
        datetime.fromisoformat(ts)
    except ValueError:
        return False
    return True


# --- generators --------------------------------------------------------------------------


@dataclass
class Tally:
    """What one generated file will produce on import."""

    resource: str
    file: str
    records: int = 0
    successful: int = 0
    rejected: int = 0
    error_counts: Counter[str] = field(default_factory=Counter)
    flaws: Counter[str] = field(default_factory=Counter)

    def add(self, kind: Flaw, rows: int = 1) -> None:
        self.records += rows
        self.flaws[kind.name] += rows
        if kind.accepted:
            self.successful += rows
        else:
            self.rejected += rows
            for code in kind.codes:
                self.error_counts[code] += rows

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "records": self.records, "successful": self.successful,
                "rejected": self.rejected, "error_counts": dict(sorted(self.error_counts.items())),
                "flaws": dict(sorted(self.flaws.items()))}


def make_plan(rows: int, resource: str, shares: dict[str, float], rng: Any) -> bytearray:
    """Exactly ``round(share * rows)`` rows of each kind, in seeded random order."""
    index = flaw_index(resource)
    plan = bytearray()
    for kind, share in shares.items():
        plan += bytes([index[kind]]) * round(share * rows)
    if len(plan) > rows:
        raise ValueError(f"the {resource} flaw shares add up to more than 1")
    plan += bytes(rows - len(plan))
    rng.shuffle(plan)
    return plan


class _Generator:
    """Shared machinery: the flaw plan, twins (earlier records to copy) and the tally."""

    resource = ""

    def __init__(self, seed: int, rows: int, shares: dict[str, float], path: Path) -> None:
        self.seed = seed
        self.rng = random.Random(f"{seed}:{self.resource}")
        self.kinds = FLAWS[self.resource]
        self.index = flaw_index(self.resource)
        self.plan = make_plan(rows, self.resource, shares, self.rng)
        self.path = path
        self.id_salt = _salt(seed, self.resource)
        self.key_salt = _salt(seed, self.resource + ":key")
        # Which kinds a duplicate may copy, and which a reuse of a rejected key may.
        self.key_twin = bytes(int(k.accepted and k.own_key) for k in self.kinds)
        self.id_twin = bytes(int(k.accepted and k.own_id) for k in self.kinds)
        self.rejected_key = bytes(int(k.stage is Stage.FIELD and k.own_key) for k in self.kinds)
        self.last_key_twin: int | None = None
        self.last_id_twin: int | None = None
        self.free_rejected_keys: list[int] = []

    def id_of(self, i: int) -> str:
        return _uuid_text(_mix128(i, self.id_salt))

    def _earlier(self, i: int, table: bytes, last: int | None) -> int | None:
        """An earlier row whose kind ``table`` allows; the latest such row if draws miss."""
        if i == 0 or last is None:
            return None
        plan, rand = self.plan, self.rng.randrange
        for _ in range(TWIN_TRIES):
            j = rand(i)
            if table[plan[j]]:
                return j
        return last

    def key_twin_of(self, i: int) -> int | None:
        return self._earlier(i, self.key_twin, self.last_key_twin)

    def id_twin_of(self, i: int) -> int | None:
        return self._earlier(i, self.id_twin, self.last_id_twin)

    def take_rejected_key(self) -> int | None:
        """An earlier field-rejected row whose key no later row has reused yet."""
        free = self.free_rejected_keys
        if not free:
            return None
        k = self.rng.randrange(len(free))
        free[k], free[-1] = free[-1], free[k]
        return free.pop()

    def downgrade(self, i: int) -> Flaw:
        """Write row ``i`` clean: its flaw found no earlier record to copy."""
        self.plan[i] = 0
        return self.kinds[0]

    def emitted(self, i: int) -> None:
        code = self.plan[i]
        if self.key_twin[code]:
            self.last_key_twin = i
        if self.id_twin[code]:
            self.last_id_twin = i
        if self.rejected_key[code]:
            self.free_rejected_keys.append(i)

    def tally(self) -> Tally:
        """What the written file will produce: the plan holds the kind of every row written."""
        tally = Tally(self.resource, self.path.name)
        for code, rows in sorted(Counter(self.plan).items()):
            tally.add(self.kinds[code], rows)
        return tally

    def run(self) -> Tally:
        raise NotImplementedError


class UsersGenerator(_Generator):
    resource = "users"

    def email_of(self, i: int) -> str:
        h = _mix128(i, self.key_salt)
        first = LOCAL_FIRST[h % len(LOCAL_FIRST)]
        last = LOCAL_LAST[(h >> 8) % len(LOCAL_LAST)]
        domain = DOMAINS[(h >> 16) % len(DOMAINS)]
        tag = "+news" if (h >> 24) % 13 == 0 else ""
        return f"{first}.{last}{i}{tag}@{domain}"

    def run(self) -> Tally:
        rng = self.rng
        random_, choice = rng.random, rng.choice
        n_first, n_last = len(FIRST_NAMES), len(LAST_NAMES)
        kinds, plan = self.kinds, self.plan
        with self.path.open("w", encoding="utf-8", newline="",
                            buffering=WRITE_BUFFER_BYTES) as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(USERS_HEADER)
            for i in range(len(plan)):
                kind = kinds[plan[i]]
                created = BASE_EPOCH_SECONDS + i * ROW_SPACING_SECONDS
                row = [self.id_of(i), self.email_of(i),
                       f"{FIRST_NAMES[int(random_() * n_first)]} "
                       f"{LAST_NAMES[int(random_() * n_last)]}",
                       ROLES[int(random_() * 3)], "true" if random_() < 0.75 else "false",
                       _iso(created), _iso(created + int(random_() * 86_400))]
                if random_() < 0.02:
                    row[2] = f"{row[2].split()[1]}, {row[2].split()[0]}"  # a comma to quote
                if kind.name != "clean":
                    kind = self._flaw(i, kind, row)
                if kind.name == "malformed":
                    row.append(choice(("extra", "")))
                    if random_() < 0.5:
                        del row[2:4]
                writer.writerow(row)
                self.emitted(i)
        return self.tally()

    def _flaw(self, i: int, kind: Flaw, row: list[str]) -> Flaw:
        rng = self.rng
        name = kind.name
        if name == "missing_id":
            row[0] = ""
        elif name == "active_missing":
            row[4] = ""
        elif name == "email_of_rejected":
            j = self.take_rejected_key()
            if j is None:
                return self.downgrade(i)
            row[1] = self.email_of(j)
        elif name in ("invalid_email", "email_and_role"):
            row[1] = rng.choice(BAD_EMAILS)
            if name == "email_and_role":
                row[3] = rng.choice(BAD_ROLES)
        elif name == "invalid_role":
            row[3] = rng.choice(BAD_ROLES)
        elif name == "email_missing":
            row[1] = rng.choice(("", "  "))
        elif name == "name_missing":
            row[2] = rng.choice(("", "   "))
        elif name == "invalid_active":
            row[4] = rng.choice(BAD_BOOLEANS)
        elif name == "invalid_created_at":
            row[5] = rng.choice(BAD_TIMESTAMPS)
        elif name == "invalid_id":
            row[0] = _bad_id(rng, i)
        elif name == "duplicate_email":
            j = self.key_twin_of(i)
            if j is None:
                return self.downgrade(i)
            email = self.email_of(j)
            row[1] = email.upper() if rng.random() < 0.5 else email
        elif name == "duplicate_id":
            j = self.id_twin_of(i)
            if j is None:
                return self.downgrade(i)
            row[0] = self.id_of(j)
        if not kind.accepted and name not in _ID_FLAWS and rng.random() < OPTIONAL_ID_DROP:
            row[0] = ""  # the id is optional: without it the outcome is the same
        return kind


class ArticlesGenerator(_Generator):
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
        h = _mix128(i, self.key_salt)
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
                    "published_at": None if status == "draft" else _iso(created + 3600),
                    "status": status, "created_at": _iso(created),
                    "updated_at": _iso(created + int(random_() * 86_400)),
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
            rec["id"] = _bad_id(rng, i)
        elif name == "duplicate_id":
            j = self.id_twin_of(i)
            if j is None:
                return self.downgrade(i)
            rec["id"] = self.id_of(j)
        if not kind.accepted and name not in _ID_FLAWS and rng.random() < OPTIONAL_ID_DROP:
            del rec["id"]  # the id is optional: without it the outcome is the same
        return kind


class CommentsGenerator(_Generator):
    resource = "comments"

    def __init__(self, seed: int, rows: int, shares: dict[str, float], path: Path,
                 users: Refs, articles: Refs) -> None:
        super().__init__(seed, rows, shares, path)
        self.users = users
        self.articles = articles
        rng = self.rng
        self.bodies = [" ".join(rng.choice(WORDS) for _ in range(rng.randrange(1, 60)))
                       + rng.choice((".", "!", "?", " 👍", " — thanks")) for _ in range(256)]
        self.limit_body = " ".join(rng.choice(WORDS) for _ in range(500))
        long_words = ("incomprehensibilities", "internationalization", "postgresql")
        self.long_bodies = [
            " ".join(rng.choice(WORDS) for _ in range(501)),
            "\n".join(rng.choice(WORDS) for _ in range(800)),
            " ".join(rng.choice(long_words) for _ in range(1_000)),  # over 10,000 characters
        ]

    def id_of(self, i: int) -> str:
        return f"cm_{_mix128(i, self.id_salt):032x}"

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
                    "created_at": _iso(created + int(random_() * 60)),
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
            rec["id"] = _bad_id(rng, i)
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


# --- the run -----------------------------------------------------------------------------


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


# --- command line ------------------------------------------------------------------------


def _catalogue() -> str:
    lines = []
    for resource, kinds in FLAWS.items():
        lines.append(f"{resource}:")
        for k in kinds[1:]:
            share = DEFAULT_MIX[resource].get(k.name, 0.0)
            codes = ", ".join(k.codes) or "accepted"
            lines.append(f"  {k.name:<26} {share:>6.2%}  -> {codes}: {k.doc}")
    return "\n".join(lines)


HELP = f"""\
Write users.csv, articles.ndjson and comments.ndjson with a known mix of flaws,
deterministic by --seed, and print the exact outcome of importing them (insert
mode, users -> articles -> comments, into a database without these records):
records, successful, rejected and the count of each error code. The same JSON
is written to OUT/expected.json.

Default: the companions of users_huge.csv: {DEFAULT_ARTICLES:,} articles and
{DEFAULT_COMMENTS:,} comments referring to users of --users-file that import, with
SPEC §7's mix of flaws. --users N generates N users instead (and the articles
and comments refer to them).

Flaw mix: each row is clean or carries one flaw kind. --flaw-rate R scales the
default mix so that a share R of the rows of each file is flawed (0 = clean
files; "flawed" includes kinds that are accepted, such as a missing id);
--flaw RESOURCE.KIND=SHARE then sets one kind's share (repeatable). Kinds,
default shares and the codes they yield:

{_catalogue()}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.description = HELP
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("-o", "--out", type=Path, default=DEFAULT_OUT_DIR,
                        help="output directory (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default: 1)")
    parser.add_argument("--users", type=int, default=None, metavar="N",
                        help="generate N users (default: refer to --users-file; "
                             f"{DEFAULT_GENERATED_USERS:,} users when that file is absent)")
    parser.add_argument("--users-file", type=Path, default=None, metavar="CSV",
                        help="users CSV the articles and comments refer to "
                             f"(default: {DEFAULT_USERS_FILE} when present)")
    parser.add_argument("--articles", type=int, default=DEFAULT_ARTICLES, metavar="N",
                        help="articles to generate (default: %(default)s)")
    parser.add_argument("--comments", type=int, default=DEFAULT_COMMENTS, metavar="N",
                        help="comments to generate (default: %(default)s)")
    parser.add_argument("--flaw-rate", type=float, default=None, metavar="R",
                        help="share of flawed rows in each file, spread like the default mix")
    parser.add_argument("--flaw", action="append", default=[], metavar="RESOURCE.KIND=SHARE",
                        help="set the share of one flaw kind, e.g. articles.invalid_slug=0.02")
    parser.add_argument("--list-flaws", action="store_true",
                        help="print the flaw kinds and their default shares, then exit")


def config_from_args(args: argparse.Namespace) -> GenConfig:
    users, users_file = args.users, args.users_file
    if users is not None and users_file is not None:
        raise ValueError("give either --users N or --users-file, not both")
    if users is None and users_file is None:
        if DEFAULT_USERS_FILE.exists():
            users_file = DEFAULT_USERS_FILE
        else:
            users = DEFAULT_GENERATED_USERS
    return GenConfig(out_dir=args.out, seed=args.seed, users=users, users_file=users_file,
                     articles=args.articles, comments=args.comments,
                     mix=build_mix(args.flaw_rate, args.flaw))


def main(args: argparse.Namespace) -> None:
    if args.list_flaws:
        print(_catalogue())
        return
    try:
        cfg = config_from_args(args)
        expected = generate(cfg)
    except (ValueError, OSError) as exc:
        raise SystemExit(f"bulkport gen: {exc}") from None
    print(orjson.dumps(expected, option=orjson.OPT_INDENT_2).decode())


__all__: Sequence[str] = ("DEFAULT_MIX", "FLAWS", "GenConfig", "add_arguments", "build_mix",
                          "config_from_args", "generate", "main")
