"""DuckDB queries in an engine process of their own, whose memory is capped.

DuckDB computes 2,048 rows at a time, and values built inside a query (a string aggregate repeated
on every row, a window ``list``) are held outside its ``memory_limit``: one candidate can take
gigabytes before its first row can be counted. So each DuckDB file is opened in a child process
(``python -m fastdistill_assets.sqlsafe.duck_process``) whose data segment is capped with
``RLIMIT_DATA``: past it DuckDB fails the query with an out-of-memory error and the process goes on.
The parent waits for a reply at most 1.5x the query's time limit (the child interrupts the query
at the limit) and past it stops the child, which starts again for the next query; a child that
dies is started again too.

A child that dies is out of memory when its peak (from ``wait4``) reached 90 % of its cap. A
process keeps the peak of the process it was started from across ``exec``, so the child reports
that inherited figure when it opens and only a peak above it counts as the child's own.

Requests and replies are pickled over the child's stdin and stdout: ``(sql, params, timeout_s,
max_rows, max_bytes)`` in, ``("rows", rows)``, ``("too_large", kind, detail)`` or ``("error",
duckdb exception class name, message)`` out. The child imports only the standard library, duckdb
and :mod:`~fastdistill_assets.sqlsafe.bounded`.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import select
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb

from fastdistill_assets.sqlsafe.bounded import ResultTooLarge, fetch_bounded

PROCESS_HEADROOM_MB = 256  # the engine process's own memory beyond DuckDB's memory_limit
STOP_AFTER = 1.5  # the parent stops a child that has not answered by this many times the time limit
OUT_OF_MEMORY_SHARE = 0.9  # a child that dies having used this share of its memory cap ran out of memory


def _duck_error(name: str, message: str) -> duckdb.Error:
    """The duckdb exception ``name`` (duckdb.Error where there is none of that name)."""
    cls = getattr(duckdb, name, None)
    return cls(message) if isinstance(cls, type) and issubclass(cls, duckdb.Error) else duckdb.Error(message)


def _answer(conn: duckdb.DuckDBPyConnection, request: tuple[str, list[Any], float, int, int]) -> tuple[Any, ...]:
    sql, params, timeout_s, max_rows, max_bytes = request
    timer = threading.Timer(timeout_s, conn.interrupt)
    timer.start()
    try:
        return ("rows", fetch_bounded(conn.execute(sql, params), max_rows, max_bytes))
    except ResultTooLarge as err:
        return ("too_large", err.kind, err.detail)
    except duckdb.Error as err:
        return ("error", type(err).__name__, str(err))
    except MemoryError:
        return ("error", "OutOfMemoryException", "Out of Memory Error: the engine process's memory cap")
    finally:
        timer.cancel()


def serve(path: str, memory_mb: int) -> None:
    """The child: cap the data segment, open ``path`` read-only, answer requests until stdin ends.
    The first reply says whether the file opened: ``("open", peak KiB inherited from the parent)``
    or an ``("error", ...)``."""
    inherited_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    cap = (memory_mb + PROCESS_HEADROOM_MB) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_DATA, (cap, cap))
    requests, replies = sys.stdin.buffer, sys.stdout.buffer
    try:
        conn = duckdb.connect(path, read_only=True, config={
            "enable_external_access": False, "threads": 1, "memory_limit": f"{memory_mb}MB"})
        conn.execute("SET lock_configuration = true")
        opened: tuple[Any, ...] = ("open", inherited_kib)
    except duckdb.Error as err:
        opened = ("error", type(err).__name__, str(err))
    pickle.dump(opened, replies)
    replies.flush()
    if opened[0] != "open":
        return
    while True:
        try:
            request = pickle.load(requests)
        except EOFError:
            break
        pickle.dump(_answer(conn, request), replies)
        replies.flush()
    conn.close()


class DuckProcess:
    """One DuckDB file, queried through its engine process (started on first use, again after
    one that died or was stopped)."""

    def __init__(self, path: Path, memory_mb: int) -> None:
        self.path, self.memory_mb = path, memory_mb
        self._child: subprocess.Popen[bytes] | None = None
        self._inherited_mb = 0.0  # the peak the running child inherited from this process at exec
        self._start()

    @property
    def pid(self) -> int | None:
        """The engine process's id; None while none runs."""
        return None if self._child is None else self._child.pid

    def _start(self) -> None:
        child = subprocess.Popen([sys.executable, "-m", "fastdistill_assets.sqlsafe.duck_process", str(self.path),
                                  str(self.memory_mb)], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._child = child
        opened = self._reply(None)
        if opened[0] != "open":
            self.close()
            raise _duck_error(opened[1], opened[2])
        self._inherited_mb = opened[1] / 1024

    def _reply(self, wait_s: float | None) -> tuple[Any, ...]:
        """The child's next reply; stops it past ``wait_s`` seconds and raises for one that died."""
        assert self._child is not None and self._child.stdout is not None
        ready, _, _ = select.select([self._child.stdout], [], [], wait_s)
        if not ready:
            self.close(at_once=True)
            raise duckdb.InterruptException(f"INTERRUPT Error: the query did not stop within {wait_s:.1f} s; "
                                            "its engine process was stopped")
        try:
            reply: tuple[Any, ...] = pickle.load(self._child.stdout)
            return reply
        except (EOFError, pickle.UnpicklingError) as err:
            code, peak_mb = self._reap()
            cap_mb = self.memory_mb + PROCESS_HEADROOM_MB
            if peak_mb > self._inherited_mb and peak_mb >= OUT_OF_MEMORY_SHARE * cap_mb:  # died at its own cap
                raise duckdb.OutOfMemoryException(
                    f"Out of Memory Error: the DuckDB engine process ended (exit code {code}) at {peak_mb:.0f} MiB "
                    f"of its {cap_mb} MiB cap") from None
            raise duckdb.Error(f"the DuckDB engine process ended (exit code {code}): {err or 'no reply'}") from None

    def _reap(self) -> tuple[int | None, float]:
        """End a child that stopped answering: (its exit code, its peak memory in MiB)."""
        child, self._child = self._child, None
        assert child is not None
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        deadline = time.monotonic() + 2
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG if time.monotonic() < deadline else 0)
            if pid:
                child.returncode = os.waitstatus_to_exitcode(status)
                return child.returncode, usage.ru_maxrss / 1024   # KiB on Linux
            if time.monotonic() >= deadline - 0.05:
                child.kill()
            time.sleep(0.02)

    def fetch(self, sql: str, timeout_s: float, max_rows: int, max_bytes: int,
              params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self._child is None:
            self._start()
        assert self._child is not None and self._child.stdin is not None
        try:
            pickle.dump((sql, list(params), timeout_s, max_rows, max_bytes), self._child.stdin)
            self._child.stdin.flush()
        except (BrokenPipeError, OSError):
            code = self.close()
            raise duckdb.Error(f"the DuckDB engine process ended (exit code {code})") from None
        reply = self._reply(timeout_s * STOP_AFTER)
        if reply[0] == "too_large":
            raise ResultTooLarge(reply[1], reply[2])
        if reply[0] == "error":
            raise _duck_error(reply[1], reply[2])
        return [tuple(row) for row in reply[1]]

    def close(self, at_once: bool = False) -> int | None:
        """End the engine process (killed ``at_once``, or when it does not end by itself within
        2 s); its exit code, None if none ran."""
        child, self._child = self._child, None
        if child is None:
            return None
        if at_once:
            child.kill()
        for stream in (child.stdin, child.stdout):
            if stream is not None:
                with contextlib.suppress(OSError):   # a dead child's pipe: the unsent request is dropped
                    stream.close()
        try:
            return child.wait(timeout=2)
        except subprocess.TimeoutExpired:
            child.kill()
            return child.wait()


if __name__ == "__main__":
    serve(sys.argv[1], int(sys.argv[2]))
