"""Deterministic input files for the reliability tests, with a known mix of flaws.

The same seed always gives the same bytes, so a run that was interrupted can be
compared with an uninterrupted run of the same file.
"""

from __future__ import annotations

import csv
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROLES = ("admin", "author", "reader")
BASE_TIME = datetime(2024, 1, 1, tzinfo=UTC)
HEADER = ["id", "email", "name", "role", "active", "created_at", "updated_at"]


def users_csv(path: Path, rows: int, *, seed: int = 7, flaw_rate: float = 0.03,
              missing_id_rate: float = 0.02, email_prefix: str = "user") -> Path:
    """Write ``rows`` user records (CSV) with about ``flaw_rate`` of them flawed.

    Flaws: invalid email, invalid role, duplicate email (an earlier one, other case),
    invalid ``active``, invalid timestamp, invalid id, missing name, a row with an
    extra column. Every record has explicit timestamps so that two runs store
    identical rows; ``missing_id_rate`` of them have no id (one is generated).
    """
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f, lineterminator="\n")
        out.writerow(HEADER)
        for i in range(1, rows + 1):
            ts = (BASE_TIME + timedelta(seconds=i)).strftime("%Y-%m-%dT%H:%M:%SZ")
            rec = [
                "" if rng.random() < missing_id_rate else f"u-{seed}-{i:07d}",
                f"{email_prefix}{i}@example.com",
                f"User {i}" if i % 97 else f"User, {i}\nsecond line",  # quoted newline
                ROLES[i % 3], "true" if i % 5 else "false", ts, ts,
            ]
            if rng.random() < flaw_rate:
                flaw = rng.randrange(8)
                if flaw == 0:
                    rec[1] = f"{email_prefix}{i}@bad"
                elif flaw == 1:
                    rec[3] = "manager"
                elif flaw == 2 and i > 1:
                    rec[1] = f"{email_prefix}{rng.randrange(1, i)}@EXAMPLE.com"
                elif flaw == 3:
                    rec[4] = "yes"
                elif flaw == 4:
                    rec[5] = "yesterday"
                elif flaw == 5:
                    rec[0] = "bad id!"
                elif flaw == 6:
                    rec[2] = ""
                else:
                    rec.append("extra")
            out.writerow(rec)
    return path
