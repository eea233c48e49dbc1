"""Worker processes: started by ``serve``/``worker``, restarted if one dies, stopped gently.

Workers run as threads of at most one process per CPU core: a process per
core gives every core its own interpreter (parsing is CPU-bound Python),
while more processes than cores would only add memory (each holds its own
copy of the interpreter and libraries).

A worker process is a fresh interpreter running ``python -m
bulkport.jobs.processes THREADS``, which imports the worker loop and the
pipelines and nothing of the API (no FastAPI, uvicorn, HTTP client). It is
started with :mod:`subprocess`, not :mod:`multiprocessing`: a spawned
``multiprocessing`` child also costs a resource-tracker process and the
unpickling machinery, ~18 MB for nothing, since the processes share no
Python objects (bench/README.md, "Process memory"). The database URL
travels in the child's environment, not on its command line, where every
user of the machine could read a password in it. So do the settings, as the
values the parent already validated (``config.HANDED_ENV``): the worker
process builds its :class:`~bulkport.config.Settings` from them without
loading pydantic (~10 MB a process).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

from bulkport import metrics
from bulkport.config import HANDED_ENV, Settings

log = logging.getLogger(__name__)

#: The module a worker process runs (``python -m``).
ENTRY = "bulkport.jobs.processes"
#: Environment variable that hands the database URL to a worker process.
URL_ENV = "BULKPORT_WORKER_DATABASE_URL"
#: How often the supervisor checks that every worker process is alive (seconds).
SUPERVISE_SECONDS = 1.0


class WorkerPool:
    """``count`` workers, restarted if a process dies; stopped with SIGTERM (graceful)."""

    def __init__(self, url: str, count: int, settings: Settings,
                 processes: int | None = None) -> None:
        self.url = url
        self.settings_json = settings.to_json()
        self.count = count
        nproc = max(1, min(count, processes or os.cpu_count() or 1)) if count else 0
        self.threads = [count // nproc + (1 if i < count % nproc else 0) for i in range(nproc)]
        self.procs: list[subprocess.Popen[bytes]] = []
        self._stop = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="pool", daemon=True)

    def start(self) -> None:
        self.procs = [self._spawn(n) for n in self.threads]
        self._supervisor.start()

    def _spawn(self, threads: int) -> subprocess.Popen[bytes]:
        # The environment is read now, so the child sees PROMETHEUS_MULTIPROC_DIR
        # (bulkport.multiprocess) and every BULKPORT_* setting of this process.
        env = {**os.environ, URL_ENV: self.url, HANDED_ENV: self.settings_json}
        return subprocess.Popen([sys.executable, "-m", ENTRY, str(threads)], env=env)

    def _supervise(self) -> None:
        while not self._stop.wait(SUPERVISE_SECONDS):
            for i, proc in enumerate(self.procs):
                if proc.poll() is not None and not self._stop.is_set():
                    log.warning("worker process %s exited (%s); restarting", proc.pid,
                                proc.returncode)
                    metrics.process_dead(proc.pid)
                    self.procs[i] = self._spawn(self.threads[i])

    def stop(self, timeout: float = 30.0) -> None:
        self._stop.set()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()  # SIGTERM: finish the batch in flight, hand the job back
        deadline = time.monotonic() + timeout
        for proc in self.procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            metrics.process_dead(proc.pid)


def main() -> None:
    """Entry point of a worker process: ``python -m bulkport.jobs.processes THREADS``."""
    from bulkport.jobs.worker import worker_process_main

    url = os.environ.pop(URL_ENV)
    worker_process_main(url, int(sys.argv[1]))


if __name__ == "__main__":
    main()
