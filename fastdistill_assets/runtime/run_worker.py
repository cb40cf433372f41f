"""Is a Dagster run's worker process still alive? And a step that outlives it stops.

A run's *worker* is the process that executes it: the ``dagster asset materialize`` process, or
the ``dagster api execute_run`` process a run launcher started. Its pid is on the run's
``RUN_START`` event. With the multiprocess executor every step runs in a child process; when
the worker is killed (SIGKILL, OOM), those children would go on calling the teacher and then
write their asset. :func:`stop_step_with_run_worker` makes a step process exit as soon as its
worker is gone; run monitoring (:mod:`fastdistill_assets.runtime.launcher`) marks the run failed.

Liveness is judged by pid, so only on the run worker's own host. A step that is the run worker,
or a process below it (the multiprocess executor's step processes), tags the run with its host
(``fastdistill/worker_host``); only checks on that host judge the run. A step whose run worker is
not among its ancestors (a Celery worker's, a step on another machine) starts no watcher and tags
nothing: Dagster's run monitoring, through the launcher of that platform (k8s, ECS, Docker),
ends such a run. With a SQLite instance every run lives on this host, tagged or not.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import dagster as dg

HOST_TAG = "fastdistill/worker_host"
POLL_S = 1.0
# A process that started this long after the worker's RUN_START is a recycled pid. Generous, so
# that a wall clock stepped forward (NTP, a VM resync) never makes a live worker look dead.
CLOCK_SLACK_S = 120.0
_watched: set[str] = set()  # Dagster runs this process already watches the worker of


@dataclass(frozen=True)
class RunWorker:
    pid: int
    started_at: float  # the RUN_START event's timestamp


def run_worker(instance: dg.DagsterInstance, dagster_run_id: str) -> RunWorker | None:
    """The process that started ``dagster_run_id`` (None before the run has started)."""
    records = instance.get_records_for_run(dagster_run_id, of_type=dg.DagsterEventType.RUN_START, limit=1).records
    if not records or records[0].event_log_entry.dagster_event is None:
        return None
    entry = records[0].event_log_entry
    pid = entry.dagster_event.pid
    return RunWorker(pid=pid, started_at=entry.timestamp) if pid else None


def process_alive(pid: int, started_before: float | None = None) -> bool:
    """Whether ``pid`` runs here and is not a zombie; with ``started_before`` (a Unix time), also
    that the process is older than that (so a recycled pid does not count as the same process)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: alive, and not ours to judge further
    stat = _proc_stat(pid)
    if stat is None:  # no /proc (not Linux): the signal test is all there is
        return True
    state, _, start_ticks = stat
    if state in ("Z", "X"):
        return False
    if started_before is not None:
        started = _boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")
        return started <= started_before + CLOCK_SLACK_S
    return True


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, parent pid, start time in clock ticks) from ``/proc/<pid>/stat``; None without it."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
    return fields[0], int(fields[1]), int(fields[19])


def ancestors(pid: int) -> list[int]:
    """The parent of ``pid``, its parent, and so on up to pid 1 (as far as ``/proc`` tells)."""
    chain: list[int] = []
    while pid > 1 and (stat := _proc_stat(pid)) is not None:
        pid = stat[1]
        chain.append(pid)
    return chain


def _boot_time() -> float:
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("btime "):
            return float(line.split()[1])
    return 0.0


def this_host() -> str:
    """This machine (or container), as a run's host tag: its name and its kernel's boot id."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = "?"
    return f"{os.uname().nodename}/{boot}"


def instance_postgres_url(instance: dg.DagsterInstance) -> str | None:
    """The database of a Dagster instance that keeps its runs in PostgreSQL (``dagster-postgres``):
    runs may then live on several hosts, and the run writer lock lives there. None otherwise."""
    return getattr(instance.run_storage, "postgres_url", None)


def judged_here(instance: dg.DagsterInstance, run: dg.DagsterRun) -> bool:
    """Whether a pid check on this host can tell if ``run``'s worker is alive: the run is tagged
    with this host, or the instance (SQLite) only ever has runs of this host."""
    host = run.tags.get(HOST_TAG)
    return host == this_host() if host is not None else instance_postgres_url(instance) is None


def worker_alive(worker: RunWorker) -> bool:
    return process_alive(worker.pid, started_before=worker.started_at)


def stop_step_with_run_worker(instance: dg.DagsterInstance, dagster_run_id: str,
                              log: dg.DagsterLogManager | None = None) -> bool:
    """In a step process below the run worker (multiprocess executor), start a watcher that ends
    this process within ``POLL_S`` once the run worker is gone, before it can make more teacher
    calls or write its asset. Answers already received are in the response cache, so a re-run
    resumes from them. The run worker itself, or a process below it, tags the run with this host
    (see :func:`judged_here`). Returns whether a watcher was started."""
    if dagster_run_id in _watched:
        return False
    worker = run_worker(instance, dagster_run_id)
    if worker is None:
        return False
    _watched.add(dagster_run_id)
    if not (worker.pid in (os.getpid(), *ancestors(os.getpid())) and worker_alive(worker)):
        if log is not None:
            log.debug(f"run worker {worker.pid} is not an ancestor of step process {os.getpid()} (another host, "
                      "or a distributed executor's worker): Dagster's run monitoring ends this run if it dies")
        return False
    run = instance.get_run_by_id(dagster_run_id)
    if run is not None and run.tags.get(HOST_TAG) != this_host():
        instance.add_run_tags(dagster_run_id, {HOST_TAG: this_host()})
    if worker.pid == os.getpid():
        return False

    def watch() -> None:
        while worker_alive(worker):
            time.sleep(POLL_S)
        sys.stderr.write(f"fastdistill: run worker (pid {worker.pid}) of Dagster run {dagster_run_id} is gone; "
                         f"stopping step process {os.getpid()}\n")
        sys.stderr.flush()
        os._exit(70)

    threading.Thread(target=watch, name="fastdistill-run-worker-watch", daemon=True).start()
    if log is not None:
        log.debug(f"step process {os.getpid()} stops if run worker {worker.pid} dies")
    return True
