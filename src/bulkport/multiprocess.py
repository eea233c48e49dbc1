"""Where the metrics of several processes meet: ``PROMETHEUS_MULTIPROC_DIR``.

``bulkport serve`` runs the API in one process and its workers in others; the
counters a worker bumps must appear on the server's ``/metrics``. prometheus-client
does this with one memory-mapped file per process in a shared directory, chosen
by the ``PROMETHEUS_MULTIPROC_DIR`` environment variable. The variable must be set
before ``prometheus_client`` is first imported (it picks its storage at import),
so this module imports nothing of it: ``serve`` and ``worker`` call
:func:`prepare` first thing, and the worker processes inherit the variable.

Without the variable (tests that build the app in-process, library use) every
metric lives in the process's own registry and ``/metrics`` shows that.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

log = logging.getLogger(__name__)

ENV = "PROMETHEUS_MULTIPROC_DIR"
#: Directory under DATA_DIR used when ``PROMETHEUS_MULTIPROC_DIR`` is not set, by command.
DIR_NAMES = {"serve": "metrics", "worker": "metrics-worker"}


def prepare(data_dir: Path, command: str = "serve") -> Path | None:
    """Point ``PROMETHEUS_MULTIPROC_DIR`` at an emptied directory; return it.

    Called once when ``serve``/``worker`` start. Files left by an earlier run are
    removed (their counters belonged to processes that are gone; keeping them
    would make counters jump). Only ``*.db`` files are removed, so a directory an
    operator chose is never wiped of anything else. ``serve`` and ``worker`` use
    different directories, so both can run on one data directory.
    """
    if "prometheus_client" in sys.modules and ENV not in os.environ:
        log.warning("prometheus_client was imported before the metrics directory was set; "
                    "worker metrics will not reach /metrics")
        return None
    path = Path(os.environ.get(ENV) or data_dir / DIR_NAMES.get(command, command))
    path.mkdir(parents=True, exist_ok=True)
    for stale in path.glob("*.db"):
        stale.unlink(missing_ok=True)
    os.environ[ENV] = str(path)
    return path


def enabled() -> bool:
    return bool(os.environ.get(ENV))
