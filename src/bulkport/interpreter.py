"""Interpreter settings of bulkport's long-running processes: the GIL switch
interval and the cyclic garbage collector.

``serve`` (each of its API processes) and the worker processes call these once
they have built what lives as long as the process; an app or a worker built
in-process (tests, library use) leaves the interpreter as it is.
"""

from __future__ import annotations

import gc
import sys

#: GIL switch interval of the server and worker processes (seconds; Python's default
#: is 0.005). A thread whose database round trip has returned waits at most this long
#: for one that computes: an import's loading thread for its parse thread, a split
#: export's readers for each other and the event loop (bench/README.md).
GIL_SWITCH_SECONDS = 0.001
#: Young-generation threshold of the cyclic garbage collector in worker processes
#: (net container allocations between collections; Python's default is 700). Above
#: what a batch being read while another loads holds (a few containers per record),
#: so the batch's records are freed by reference counting before a collection walks them.
GC_YOUNG_THRESHOLD = 50_000


def set_switch_interval() -> None:
    sys.setswitchinterval(GIL_SWITCH_SECONDS)


def freeze_startup_objects() -> None:
    """Keep what a process has built so far out of the garbage collector's sight.

    The modules, the app, its routes and models (in a worker process: the modules and
    settings) live as long as the process; a full collection walked them all
    (~80,000 objects, ~45 ms on a busy 2-core machine in the API), a pause every
    request in flight waited through (bench/README.md, "Status reads"). Collected
    first, so that no garbage of the start-up is kept for good.
    """
    gc.collect()
    gc.freeze()


def tune_gc() -> None:
    """Set the cyclic garbage collector of a worker process for batch work.

    An import's batch is tens of thousands of containers (records, their value lists)
    that live until the batch commits and are then freed by reference counting; they
    form no cycles. With the default threshold the collector ran ~50 times per batch
    and walked them over and over, up to a third of the parse thread's CPU, more
    with flawed files (bench/README.md, "Flawed imports: where the time went").
    Cycles are still collected, once per GC_YOUNG_THRESHOLD allocations, which
    bounds the garbage a cycle-heavy job can leave waiting. The start-up's objects
    are frozen first (:func:`freeze_startup_objects`).
    """
    freeze_startup_objects()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(GC_YOUNG_THRESHOLD, older, oldest)
