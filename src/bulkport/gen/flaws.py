"""The flaw catalogue: every kind of row per resource, what bulkport reports for it,
SPEC §7's default mix of kinds, and how a mix is scaled and overridden."""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bulkport.resources import RESOURCES


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


# The catalogue covers declared resources only (a renamed resource fails here, at import).
assert set(FLAWS) <= set(RESOURCES), sorted(set(FLAWS) - set(RESOURCES))
