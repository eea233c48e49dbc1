"""References: the ids a generated record may point at, accepted or surely missing.

:class:`PlanRefs` points into a file generated in the same run (through its flaw
plan); :class:`FileUserRefs` into an existing users CSV, keeping only the users
that surely import.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

from bulkport.gen.flaws import FLAWS
from bulkport.gen.values import ROLES
from bulkport.resources import RESOURCES
from bulkport.resources.base import ID_PATTERN

#: Random draws spent looking for an earlier record to copy before using the latest one.
TWIN_TRIES = 64
#: The columns a users CSV must have to be referred to: the id and the required fields.
_USERS_NEEDED = frozenset({"id"} | {f.name for f in RESOURCES["users"].fields if f.required})


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
    STRICT_ID = ID_PATTERN
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
            missing = _USERS_NEEDED - set(header)
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
