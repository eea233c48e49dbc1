"""What every per-resource generator shares: the seeded flaw plan, twins (earlier
records a duplicate copies) and the tally of the file written."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

from bulkport.gen.expected import Tally
from bulkport.gen.flaws import FLAWS, Flaw, Stage, flaw_index
from bulkport.gen.refs import TWIN_TRIES
from bulkport.gen.values import mix128, salt, uuid_text
from bulkport.resources import RESOURCES

#: Output buffer of each file (bytes).
WRITE_BUFFER_BYTES = 1 << 20


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


class Generator:
    """Shared machinery: the flaw plan, twins (earlier records to copy) and the tally."""

    resource = ""

    def __init__(self, seed: int, rows: int, shares: dict[str, float], path: Path) -> None:
        self.seed = seed
        self.rng = random.Random(f"{seed}:{self.resource}")
        self.kinds = FLAWS[self.resource]
        self.declared = RESOURCES[self.resource]
        #: Whether a record may leave its id out (then its natural key identifies it).
        self.id_optional = not self.declared.field("id").required
        self.index = flaw_index(self.resource)
        self.plan = make_plan(rows, self.resource, shares, self.rng)
        self.path = path
        self.id_salt = salt(seed, self.resource)
        self.key_salt = salt(seed, self.resource + ":key")
        # Which kinds a duplicate may copy, and which a reuse of a rejected key may.
        self.key_twin = bytes(int(k.accepted and k.own_key) for k in self.kinds)
        self.id_twin = bytes(int(k.accepted and k.own_id) for k in self.kinds)
        self.rejected_key = bytes(int(k.stage is Stage.FIELD and k.own_key) for k in self.kinds)
        self.last_key_twin: int | None = None
        self.last_id_twin: int | None = None
        self.free_rejected_keys: list[int] = []

    def id_of(self, i: int) -> str:
        return uuid_text(mix128(i, self.id_salt))

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
