"""The users CSV: one row per planned kind, with its flaw applied."""

from __future__ import annotations

import csv

from bulkport.gen.expected import Tally
from bulkport.gen.flaws import Flaw
from bulkport.gen.generator import WRITE_BUFFER_BYTES, Generator
from bulkport.gen.values import (
    BAD_BOOLEANS,
    BAD_EMAILS,
    BAD_ROLES,
    BAD_TIMESTAMPS,
    BASE_EPOCH_SECONDS,
    DOMAINS,
    FIRST_NAMES,
    ID_FLAWS,
    LAST_NAMES,
    LOCAL_FIRST,
    LOCAL_LAST,
    OPTIONAL_ID_DROP,
    ROLES,
    ROW_SPACING_SECONDS,
    USERS_HEADER,
    bad_id,
    iso,
    mix128,
)

#: Positions of the columns a flaw changes, in the declared column order.
ID, EMAIL, NAME, ROLE, ACTIVE, CREATED_AT = (
    USERS_HEADER.index(c) for c in ("id", "email", "name", "role", "active", "created_at"))


class UsersGenerator(Generator):
    resource = "users"

    def email_of(self, i: int) -> str:
        h = mix128(i, self.key_salt)
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
                row = [self.id_of(i), self.email_of(i),  # in USERS_HEADER order
                       f"{FIRST_NAMES[int(random_() * n_first)]} "
                       f"{LAST_NAMES[int(random_() * n_last)]}",
                       ROLES[int(random_() * len(ROLES))], "true" if random_() < 0.75 else "false",
                       iso(created), iso(created + int(random_() * 86_400))]
                if random_() < 0.02:  # a comma to quote
                    row[NAME] = f"{row[NAME].split()[1]}, {row[NAME].split()[0]}"
                if kind.name != "clean":
                    kind = self._flaw(i, kind, row)
                if kind.name == "malformed":
                    row.append(choice(("extra", "")))
                    if random_() < 0.5:
                        del row[NAME:NAME + 2]
                writer.writerow(row)
                self.emitted(i)
        return self.tally()

    def _flaw(self, i: int, kind: Flaw, row: list[str]) -> Flaw:
        rng = self.rng
        name = kind.name
        if name == "missing_id":
            row[ID] = ""
        elif name == "active_missing":
            row[ACTIVE] = ""
        elif name == "email_of_rejected":
            j = self.take_rejected_key()
            if j is None:
                return self.downgrade(i)
            row[EMAIL] = self.email_of(j)
        elif name in ("invalid_email", "email_and_role"):
            row[EMAIL] = rng.choice(BAD_EMAILS)
            if name == "email_and_role":
                row[ROLE] = rng.choice(BAD_ROLES)
        elif name == "invalid_role":
            row[ROLE] = rng.choice(BAD_ROLES)
        elif name == "email_missing":
            row[EMAIL] = rng.choice(("", "  "))
        elif name == "name_missing":
            row[NAME] = rng.choice(("", "   "))
        elif name == "invalid_active":
            row[ACTIVE] = rng.choice(BAD_BOOLEANS)
        elif name == "invalid_created_at":
            row[CREATED_AT] = rng.choice(BAD_TIMESTAMPS)
        elif name == "invalid_id":
            row[ID] = bad_id(rng, i)
        elif name == "duplicate_email":
            j = self.key_twin_of(i)
            if j is None:
                return self.downgrade(i)
            email = self.email_of(j)
            # the draw is made either way, so the files do not depend on the declaration
            upper = rng.random() < 0.5 and self.declared.natural_key_ci
            row[EMAIL] = email.upper() if upper else email
        elif name == "duplicate_id":
            j = self.id_twin_of(i)
            if j is None:
                return self.downgrade(i)
            row[ID] = self.id_of(j)
        if (self.id_optional and not kind.accepted and name not in ID_FLAWS
                and rng.random() < OPTIONAL_ID_DROP):
            row[ID] = ""  # the id is optional: without it the outcome is the same
        return kind
