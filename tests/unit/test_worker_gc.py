"""The worker processes' garbage-collector settings (bulkport/interpreter.py, ``tune_gc``).

Run in a fresh interpreter each, so that the test process keeps its own settings.
"""

from __future__ import annotations

import json
import subprocess
import sys

from bulkport.interpreter import GC_YOUNG_THRESHOLD

#: Prepares one default-size batch of plain users, counting the collections it triggers.
PREPARE_BATCH = """
import gc, json, sys
from bulkport.interpreter import tune_gc
from bulkport.pipeline.stage import Stager, prepare
from bulkport.pipeline.types import Mode, RawRecord
from bulkport.pipeline.validate import RecordValidator
from bulkport.resources import RESOURCES

users = RESOURCES["users"]
validator = RecordValidator(users, ["id", "email", "name", "role"])
stager = Stager(users, Mode.INSERT)
records = [RawRecord(i, f"u{i},u{i}@x.co,N,reader", None) for i in range(1, 10_001)]
if sys.argv[1] == "tuned":
    tune_gc()
runs = []
gc.callbacks.append(lambda phase, info: runs.append(info["generation"])
                    if phase == "start" else None)
batch = prepare(validator, stager, records)
assert len(batch.staged.records) == 10_000
print(json.dumps({"collections": len(runs), "threshold": gc.get_threshold()[0],
                  "frozen": gc.get_freeze_count()}))
"""

#: Makes cyclic garbage only the collector can free, and counts what it freed.
CYCLES = """
import gc, json
from bulkport.interpreter import tune_gc

tune_gc()
freed = []
gc.callbacks.append(lambda phase, info: freed.append(info["collected"])
                    if phase == "stop" else None)
for _ in range(200_000):
    a: list[object] = []
    a.append(a)
print(json.dumps({"collections": len(freed), "freed": sum(freed)}))
"""


def _run(code: str, *args: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                         check=True, timeout=120)
    result: dict[str, int] = json.loads(out.stdout)
    return result


def test_a_batch_is_freed_before_the_collector_walks_it() -> None:
    default = _run(PREPARE_BATCH, "default")
    tuned = _run(PREPARE_BATCH, "tuned")
    assert default["collections"] > 10  # Python's default: dozens per batch
    assert tuned["collections"] <= 1
    assert tuned["threshold"] == GC_YOUNG_THRESHOLD
    assert tuned["frozen"] > default["frozen"] == 0  # the start-up's objects are frozen


def test_cyclic_garbage_is_still_collected() -> None:
    result = _run(CYCLES)
    # One collection per GC_YOUNG_THRESHOLD allocations (4 here), each freeing what
    # accumulated: the garbage waiting at any time stays bounded.
    assert result["collections"] >= 2
    assert result["freed"] >= 100_000
