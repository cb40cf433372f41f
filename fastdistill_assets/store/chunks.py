"""Chunked stages: a stage too large for memory is produced chunk by chunk into a spool.

A :class:`ChunkSpool` is a work folder (``artifacts/<run_id>/_work/<stage>/``) of parquet
parts, one per input chunk, each written to a temporary name, fsynced and renamed, so a part
either exists whole or not at all. Parts live under a fingerprint of what produced them (the
run's frozen config and the input stage's manifest): a step that is killed and re-run keeps
the parts it finished and produces only the rest, and a re-run with other inputs starts over.
Each part carries a small JSON summary (counts the stage reports as metadata).

The stage's asset returns a :class:`ChunkedFrame` naming the parts in order; the IO manager
streams them into the stage's ``data.parquet`` (one row group per part) with an incremental
manifest, publishes the version, and then clears the spool.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow.parquet as pq

from fastdistill_assets.core.diskspace import named_if_full
from fastdistill_assets.core.hashing import sha256_json

PART_SUFFIX = ".parquet"
SUMMARY_SUFFIX = ".json"


def _fsync_write(path: Path, write: Any) -> None:
    """Write ``path`` under a temporary name, then rename it into place; a failed write (a full
    disk) leaves nothing behind."""
    tmp = path.with_name(f".tmp-{os.getpid()}-{secrets.token_hex(4)}-{path.name}")
    try:
        write(tmp)
        with tmp.open("rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@dataclass
class ChunkedFrame:
    """A stage's rows as parquet parts in order (every part has the same schema), plus side
    files as in ``StageOutput.files``. ``schema``: the stage's columns when there is no part.
    ``spool``: cleared once the stage is published."""

    parts: list[Path]
    schema: dict[str, pl.DataType] = field(default_factory=dict)  # of the stage when there is no part
    files: dict[str, Any] = field(default_factory=dict)
    spool: ChunkSpool | None = None


class ChunkSpool:
    """Resumable parts of one stage under ``folder/<fingerprint>/``."""

    def __init__(self, folder: Path, fingerprint: str, prune: bool = False) -> None:
        """``prune``: delete the parts of other fingerprints (they can never be reused); only a
        step holding the run's writer lock may, as another run's shards may be writing them."""
        self.root = folder
        self.folder = folder / fingerprint
        if prune and folder.is_dir():
            for other in folder.iterdir():
                if other.name != fingerprint:
                    shutil.rmtree(other, ignore_errors=True) if other.is_dir() else other.unlink(missing_ok=True)
        self.folder.mkdir(parents=True, exist_ok=True)
        # A killed writer's unfinished ``.tmp-*`` part is never read; it goes with clear(). (Other
        # shards of the stage may be writing theirs into this folder right now.)

    def part(self, index: int) -> Path:
        return self.folder / f"part-{index:06d}{PART_SUFFIX}"

    def done(self, index: int) -> bool:
        """Whether part ``index`` was finished (by this attempt or one that was killed)."""
        return self.part(index).exists() and self.part(index).with_suffix(SUMMARY_SUFFIX).exists()

    def write(self, index: int, frame: pl.DataFrame, summary: dict[str, Any] | None = None) -> Path:
        """Write part ``index`` atomically: the parquet first, then its summary, which marks it done.

        The folder may vanish meanwhile: another materialization of the run_id that published
        the stage clears its spool (its merge holds the run's lock, not this shard's). The part
        is then written into the folder made anew, and the parts lost with the old one are made
        again by this run's merge."""
        path = self.part(index)

        def write_both() -> None:
            _fsync_write(path, lambda tmp: frame.write_parquet(tmp, row_group_size=max(frame.height, 1)))
            _fsync_write(path.with_suffix(SUMMARY_SUFFIX),
                         lambda tmp: tmp.write_text(json.dumps(summary or {}, sort_keys=True)))
        with named_if_full(self.folder, int(frame.estimated_size())):
            try:
                write_both()
            except FileNotFoundError:  # the folder was cleared meanwhile
                self.folder.mkdir(parents=True, exist_ok=True)
                write_both()
        return path

    def summary(self, index: int) -> dict[str, Any]:
        summary: dict[str, Any] = json.loads(self.part(index).with_suffix(SUMMARY_SUFFIX).read_text())
        return summary

    def done_summaries(self) -> list[dict[str, Any]]:
        """The summaries of every part finished so far (by any attempt or shard)."""
        return [json.loads(path.read_text()) for path in sorted(self.folder.glob(f"part-*{SUMMARY_SUFFIX}"))]

    def parts(self, count: int) -> list[Path]:
        """The parts 0..count-1, all of which must be done."""
        missing = [i for i in range(count) if not self.done(i)]
        if missing:
            raise RuntimeError(f"chunk spool {self.folder} lacks parts {missing[:5]}")
        return [self.part(i) for i in range(count)]

    def clear(self) -> None:
        """Delete this fingerprint's parts (and the stage's work folder once it is empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        with contextlib.suppress(OSError):
            self.root.rmdir()


def row_group_count(path: Path) -> int:
    return int(pq.ParquetFile(path).metadata.num_row_groups)


def iter_row_groups(path: Path, columns: list[str] | None = None,
                    wanted: Callable[[int], bool] | None = None) -> Iterator[pl.DataFrame | None]:
    """The row groups of a parquet file, one frame each (the unit chunked stages work in); a
    file without rows gives one empty frame with its schema. A row group ``wanted`` refuses is
    not read: None in its place."""
    handle = pq.ParquetFile(path)
    if handle.metadata.num_row_groups == 0:
        yield pl.read_parquet(path, columns=columns)
    for index in range(handle.metadata.num_row_groups):
        if wanted is not None and not wanted(index):
            yield None
            continue
        yield pl.from_arrow(handle.read_row_group(index, columns=columns))  # type: ignore[misc]  # a Table gives a DataFrame


def rechunk(frames: Iterable[pl.DataFrame], rows: int, key: str | None = None) -> Iterator[pl.DataFrame]:
    """The rows of ``frames``, in order, as chunks of ``rows`` rows (the last may be smaller).

    With ``key``, a chunk grows past ``rows`` to keep all rows of its last key value together
    (those rows must be contiguous, as the candidates of one sample are), so a chunk always holds
    whole samples. Memory: one chunk plus one input frame.
    """
    pending: pl.DataFrame | None = None
    yielded = False
    for frame in frames:
        pending = frame if pending is None else pl.concat([pending, frame], how="vertical")
        while pending.height > rows or (key is None and pending.height == rows):
            cut = rows
            if key is not None:
                values = pending.get_column(key)
                while cut < pending.height and values[cut] == values[cut - 1]:
                    cut += 1
                if cut == pending.height:  # the last key may continue in the next frame
                    break
            yield pending.slice(0, cut)
            yielded = True
            pending = pending.slice(cut)
    if pending is not None and (pending.height or not yielded):
        yield pending  # the rest; or, for input without rows, one empty chunk that carries the schema


def spool_fingerprint(**inputs: Any) -> str:
    """What a stage's parts depend on (the frozen config's hash, the input stage's content hash,
    the chunk size), as one name: parts made from other inputs are never reused."""
    return sha256_json(inputs)[:24]


ChunkWork = Callable[[int, Any], tuple[pl.DataFrame, dict[str, Any]]]  # (index, chunk) -> (part, summary)


def run_chunks(spool: ChunkSpool, chunks: Iterable[Any], work: ChunkWork,
               mine: Callable[[int], bool] = lambda index: True) -> int:
    """Produce every part of ``chunks`` this step owns (``mine``) that is not done yet:
    ``work(index, chunk)`` gives the part's frame and summary. Returns the number of chunks."""
    count = 0
    try:
        for index, chunk in enumerate(chunks):
            count += 1
            if mine(index) and not spool.done(index):
                frame, summary = work(index, chunk)
                spool.write(index, frame, summary)
    finally:
        if hasattr(chunks, "close"):  # a generator holding files, connections or a worker pool
            chunks.close()
    return count


def add_summaries(summaries: Iterable[dict[str, Any]], counts: tuple[str, ...],
                  tallies: tuple[str, ...] = ()) -> dict[str, Any]:
    """Parts' summaries added up: ``counts`` are numbers, ``tallies`` are {key: number} (in
    first-seen key order)."""
    total: dict[str, Any] = {name: 0 for name in counts} | {name: Counter() for name in tallies}
    for summary in summaries:
        for name in counts:
            total[name] += summary[name]
        for name in tallies:
            total[name].update(summary[name])
    return total | {name: dict(total[name]) for name in tallies}
