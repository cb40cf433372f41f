"""The teacher's progress while it asks: one line at least every ``every_s`` seconds, whether or
not an answer came back meanwhile (a hung teacher is seen hanging), and one at the end.

The line, in the Dagster run log (and drawn as a bar by ``fastdistill materialize`` on a
terminal): ``teacher: 1,234/5,000 answers (24.7%), 12.3 answers/s, 5 errors, ETA 5m06s``.
``done`` counts answers finished by earlier attempts of the step too; the rate and the ETA
count only this attempt's.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from types import TracebackType

PREFIX = "teacher: "
LINE = re.compile(r"^teacher: (?P<done>[\d,]+)/(?P<total>[\d,]+) answers")  # what a reader of the log parses
EVERY_S = 10.0


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class TeacherProgress:
    """Answers done of ``total`` (``done`` of them before this attempt), logged through ``log``.

    Feed it with :meth:`chunk_started` / :meth:`call_progress` (the generator's progress
    callback) / :meth:`chunk_finished`; use it as a context manager to run the ticker thread.
    """

    def __init__(self, total: int, done: int, log: Callable[[str], None], every_s: float = EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.total, self.log, self.every_s, self.clock = total, log, every_s, clock
        self._lock = threading.Lock()
        self._resumed = self._before_chunk = self._done = done
        self._errors = self._errors_before_chunk = 0
        self._started = clock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None

    def chunk_started(self) -> None:
        with self._lock:
            self._before_chunk, self._errors_before_chunk = self._done, self._errors

    def call_progress(self, done: int, total: int, elapsed_s: float, errors: int = 0) -> None:
        """The generator's progress within the chunk's call: ``done`` of its ``total`` answers."""
        with self._lock:
            self._done = self._before_chunk + done
            self._errors = self._errors_before_chunk + errors

    def chunk_finished(self, answers: int, errors: int) -> None:
        """A chunk's answers are written: its exact figures replace what the calls reported."""
        with self._lock:
            self._done = self._before_chunk + answers
            self._errors = self._errors_before_chunk + errors

    def line(self) -> str:
        with self._lock:
            done, errors = self._done, self._errors
        elapsed = max(self.clock() - self._started, 1e-9)
        rate = (done - self._resumed) / elapsed
        share = f" ({100 * done / self.total:.1f}%)" if self.total else ""
        left = self.total - done
        eta = "done" if left <= 0 else _duration(left / rate) if rate > 0 else "unknown (no answer yet)"
        return (f"{PREFIX}{done:,}/{self.total:,} answers{share}, {rate:.1f} answers/s, {errors:,} errors, "
                f"ETA {eta}")

    def _tick(self) -> None:
        while not self._stop.wait(self.every_s):
            self.log(self.line())

    def __enter__(self) -> TeacherProgress:
        self.log(self.line())
        self._ticker = threading.Thread(target=self._tick, name="teacher-progress", daemon=True)
        self._ticker.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self.log(self.line())
