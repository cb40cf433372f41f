"""A full disk said in one line: which folder, what is free there and about what the write needs.

Writers wrap their writes in :func:`named_if_full` (the folder and the size of what they write);
the step's error boundary (``resources.step_errors``) and the IO manager turn :class:`DiskFull`
into the step's one-line ``dg.Failure``. Every write is to a temporary name first and published
by a rename, so a full disk leaves every published version readable and finished work in place:
once space is freed, materializing again resumes.
"""

from __future__ import annotations

import errno
import re
import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import polars as pl

FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
LOW_SPACE_BYTES = 2**20
# polars reports the OS error only in its message: "... (os error 28)"
_FULL_MESSAGE = re.compile(rf"\(os error (?:{'|'.join(str(n) for n in sorted(FULL_ERRNOS))})\)")


def is_full(err: BaseException) -> bool:
    """Whether ``err`` says the disk (or the user's quota) is full, whichever library raised it."""
    if isinstance(err, OSError) and err.errno in FULL_ERRNOS:
        return True
    if isinstance(err, sqlite3.OperationalError):
        return getattr(err, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL
    return isinstance(err, pl.exceptions.PolarsError) and bool(_FULL_MESSAGE.search(str(err)))


def size_text(n: int) -> str:
    """``n`` bytes for a reader: MiB from one MiB up, KiB below."""
    return f"{n / 2**20:,.1f} MiB" if n >= 2**20 else f"{n / 2**10:,.1f} KiB"


def free_bytes(folder: Path) -> int:
    """Free bytes on the file system of ``folder`` (or of its nearest existing parent)."""
    for candidate in (folder, *folder.parents):
        if candidate.exists():
            return shutil.disk_usage(candidate).free
    return 0


class DiskFull(Exception):
    """No space left under ``folder``; ``needed_bytes``: about what the failed write needed (None: unknown)."""

    def __init__(self, folder: Path, needed_bytes: int | None) -> None:
        self.folder, self.needed_bytes, self.free_bytes = folder, needed_bytes, free_bytes(folder)
        needs = f"about {size_text(needed_bytes)} is needed" if needed_bytes else "more is needed"
        super().__init__(f"disk full: cannot write under {folder} ({size_text(self.free_bytes)} free, {needs}); "
                         "free space and materialize again: published versions and finished parts are kept")

    def metadata(self) -> dict[str, Any]:
        return {"error": str(self), "folder": str(self.folder), "free_bytes": self.free_bytes,
                "needed_bytes": self.needed_bytes if self.needed_bytes is not None else -1}


def as_disk_full(err: BaseException, fallback: Path) -> DiskFull | None:
    """``err`` as a :class:`DiskFull` (a full disk met where no writer named its folder: the
    file the error names, else ``fallback``), or None when ``err`` is something else."""
    if isinstance(err, DiskFull):
        return err
    if not is_full(err):
        return None
    filename = getattr(err, "filename", None)
    return DiskFull(Path(filename).parent if filename else fallback, None)


@contextmanager
def named_if_full(folder: Path, needed_bytes: int | None = None) -> Iterator[None]:
    """Raise a full disk met in the block as :class:`DiskFull` naming ``folder`` and ``needed_bytes``."""
    try:
        yield
    except Exception as err:
        if isinstance(err, DiskFull) or not (is_full(err) or _io_error_when_full(err, folder)):
            raise
        raise DiskFull(folder, needed_bytes) from err


def _io_error_when_full(err: BaseException, folder: Path) -> bool:
    """SQLite says "disk I/O error" when a full disk stops it growing its WAL files: that, with
    less than LOW_SPACE_BYTES free where it writes, is a full disk too."""
    return (isinstance(err, sqlite3.OperationalError)
            and (getattr(err, "sqlite_errorcode", 0) or 0) & 0xFF == sqlite3.SQLITE_IOERR
            and free_bytes(folder) < LOW_SPACE_BYTES)
