"""Expected counts: what one generated file will produce on import."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from bulkport.gen.flaws import Flaw


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
