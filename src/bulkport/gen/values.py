"""Value makers: everything a generated row holds, as pure functions of (seed, row)
or draws from the generator's seeded random source.

What a valid value is comes from the resource declarations: the users' columns,
the article statuses, the id alphabet and the longest comment body. The roles
are the default ``BULKPORT_ALLOWED_ROLES``: the expectation assumes them.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from bulkport.config import default
from bulkport.resources import RESOURCES
from bulkport.resources.base import ID_PATTERN

#: The roles bulkport accepts by default (``BULKPORT_ALLOWED_ROLES``).
ROLES: tuple[str, ...] = tuple(default("allowed_roles"))
#: The users CSV header: the declared fields, in order.
USERS_HEADER = tuple(RESOURCES["users"].column_names)
#: Share of each declared article status among generated articles (weights).
_STATUS_WEIGHTS = {"published": 3, "draft": 2, "archived": 1}
_status_choices = RESOURCES["articles"].field("status").choices
assert _status_choices is not None and set(_status_choices()) == set(_STATUS_WEIGHTS)
ARTICLE_STATUSES = tuple(s for s, weight in _STATUS_WEIGHTS.items() for _ in range(weight))
#: Most words of a comment body bulkport accepts.
_max_words = RESOURCES["comments"].field("body").max_words
assert _max_words is not None
BODY_MAX_WORDS: int = _max_words
#: 2024-01-01T00:00:00Z (seconds since the epoch): first generated timestamp.
BASE_EPOCH_SECONDS = 1_704_067_200
#: Spacing of consecutive records' created_at (seconds).
ROW_SPACING_SECONDS = 61

_MASK128 = (1 << 128) - 1
_MULT_A = 0x9E3779B97F4A7C15F39CC0605CEDC835
_MULT_B = 0xD6E8FEB86659FD93C13A2F6B9E2BD1A7


def salt(seed: int, name: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}:{name}".encode(), digest_size=16).digest())


def mix128(i: int, salt: int) -> int:
    """A bijection of 128-bit integers: distinct rows always get distinct ids."""
    x = ((i + salt) * _MULT_A) & _MASK128
    x ^= x >> 67
    x = (x * _MULT_B) & _MASK128
    return x ^ (x >> 59)


def uuid_text(x: int) -> str:
    h = f"{x:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def iso(epoch_seconds: int) -> str:
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


#: Share of rejected users/articles written without their (optional) id.
OPTIONAL_ID_DROP = 0.2
#: Kinds whose outcome depends on the id, so it is never dropped from them.
ID_FLAWS = ("invalid_id", "duplicate_id", "malformed")


def bad_id(rng: Any, i: int) -> str:
    """An id outside the declared id alphabet or longer than it allows."""
    bad = rng.choice((f"bad id {i}", f"id#{i}!", "x" * 65 + str(i), f"id/{i}", f"é-{i}"))
    assert not ID_PATTERN.fullmatch(bad)
    return bad
