"""Storage stress: writer processes and a reader process on one (run_id, stage) of the artifact store.

Each writer writes, as fast as it can, bundles whose every row carries its writer id and
sequence number (the row count and a side file follow from them too); the reader reads the
stage as fast as it can and checks each read is one whole write: the parquet decodes, the frame
is exactly the one that write made, and the manifest and side file match it. When the writers
have stopped, a cleanup at grace 0 must leave only the current version. Prints writes, reads,
failed writes, failed reads, corrupt reads and leftovers for two writers + one reader and for
one writer + one reader (target: all zero but writes and reads).

    .venv/bin/python benchmarks/storage_stress.py [--seconds 15] [--grace 1]
"""

from __future__ import annotations

import argparse
import itertools
import json
import multiprocessing as mp
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from fastdistill_assets.store.manifest import build_manifest
from fastdistill_assets.store.storage import (
    CURRENT_FILE,
    MANIFEST_FILE,
    STAGE_LOCK_FILE,
    VERSIONS_DIR,
    ArtifactStore,
    StageOutput,
)

RUN_ID, STAGE, TAG_FILE = "stress", "stage", "tag.txt"
STARTUP_TIMEOUT_S = 120.0
MAX_ERRORS = 5
Outcome = tuple[str, str] | None  # None, or (counter name, error message)


@dataclass
class StressResult:
    """What the writers and the reader saw, and what the stage holds after a grace-0 cleanup."""

    writes: int
    failed_writes: int
    reads: int
    failed_reads: int
    corrupt_reads: int
    leftovers: list[str]
    errors: list[str]


def stage_output(writer: int, seq: int) -> StageOutput:
    """The bundle write ``seq`` of ``writer`` makes: every row, the row count and the tag name it."""
    rows = 100 + (seq * 37 + writer * 11) % 400
    frame = pl.DataFrame({
        "sample_id": [f"{writer}-{seq}-{i:04d}" for i in range(rows)],
        "writer": [writer] * rows,
        "seq": [seq] * rows,
        "payload": [f"{writer}:{seq}:{i}:" * 8 for i in range(rows)],
    })
    return StageOutput(frame, {TAG_FILE: f"{writer}-{seq}"})


def inconsistency(out: pl.DataFrame | StageOutput) -> str | None:
    """Why a read is not exactly one write (frame, side file and manifest), or None."""
    if not isinstance(out, StageOutput):
        return f"read a {type(out).__name__}, not a bundle"
    frame = out.frame
    writes = frame.select("writer", "seq").unique()
    if writes.height != 1:
        return f"rows of {writes.height} writes"
    writer, seq = writes.row(0)
    expected = stage_output(writer, seq)
    if not frame.equals(expected.frame):
        return f"frame differs from write {writer}-{seq}"
    tag = out.files[TAG_FILE]
    if tag.read_text() != expected.files[TAG_FILE]:
        return f"side file {tag.read_text()!r} beside write {writer}-{seq}"
    manifest = json.loads((tag.parent / MANIFEST_FILE).read_text())
    if any(manifest.get(key) != value for key, value in build_manifest(frame).items()):
        return f"manifest does not match write {writer}-{seq}"
    return None


def read_once(store: ArtifactStore) -> Outcome:
    """Read the stage and check it."""
    try:
        problem = inconsistency(store.read(RUN_ID, STAGE))
    except OSError as err:
        return "failed_reads", f"{type(err).__name__}: {err}"
    except Exception as err:  # bytes that do not decode: a torn parquet or manifest
        return "corrupt_reads", f"{type(err).__name__}: {err}"
    return ("corrupt_reads", problem) if problem else None


def write_once(store: ArtifactStore, writer: int, seq: int) -> Outcome:
    """Write one bundle."""
    try:
        store.write(RUN_ID, STAGE, stage_output(writer, seq))
    except Exception as err:
        return "failed_writes", f"{type(err).__name__}: {err}"
    return None


def tally(counts: Counter[str], errors: list[str], attempts: str, outcome: Outcome) -> None:
    """Count one attempt and its failure, if any (keeping the first few messages)."""
    counts[attempts] += 1
    if outcome:
        counts[outcome[0]] += 1
        if len(errors) < MAX_ERRORS:
            errors.append(outcome[1])


def repeat_for(seconds: float, attempts: str, step: Callable[[], Outcome]) -> tuple[Counter[str], list[str]]:
    """Run ``step`` until ``seconds`` have passed; returns the counts and the first errors."""
    counts: Counter[str] = Counter()
    errors: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        tally(counts, errors, attempts, step())
    return counts, errors


def worker(root: Path, writer: int | None, seconds: float, grace_s: float, barrier: Any, results: Any) -> None:
    """A writer process (``writer`` is its id) or the reader (None); puts (counts, errors) on ``results``."""
    store = ArtifactStore(root, grace_s)
    barrier.wait(timeout=STARTUP_TIMEOUT_S)
    if writer is None:
        results.put(repeat_for(seconds, "reads", lambda: read_once(store)))
    else:
        seqs = itertools.count(1)
        results.put(repeat_for(seconds, "writes", lambda: write_once(store, writer, next(seqs))))


def leftovers(store: ArtifactStore) -> list[str]:
    """Everything in the run folder but the stage's CURRENT, lock, versions/ and current version."""
    root = store.stage_dir(RUN_ID, STAGE)
    versions = root / VERSIONS_DIR
    expected = {root, root / CURRENT_FILE, root / STAGE_LOCK_FILE, versions, store.current_dir(RUN_ID, STAGE)}
    found = [*root.parent.iterdir(), *root.iterdir(), *versions.iterdir()]
    return sorted(str(path.relative_to(store.root)) for path in found if path not in expected)


def run_stress(root: Path, writers: int, seconds: float, grace_s: float) -> StressResult:
    """``writers`` writer processes and one reader process on one stage for ``seconds``.

    The stage is seeded first (writer 0) so every read has something to find. When the workers
    have stopped, a cleanup at grace 0 runs and the stage is read once more.
    """
    store = ArtifactStore(root, grace_s)
    store.write(RUN_ID, STAGE, stage_output(0, 0))
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(writers + 1), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(root, writer, seconds, grace_s, barrier, results))
             for writer in [*range(1, writers + 1), None]]
    for proc in procs:
        proc.start()
    try:
        outcomes = [results.get(timeout=seconds + STARTUP_TIMEOUT_S) for _ in procs]
    finally:
        for proc in procs:
            proc.join(timeout=STARTUP_TIMEOUT_S)
            if proc.is_alive():
                proc.kill()
    counts: Counter[str] = sum((c for c, _ in outcomes), Counter())
    errors = [e for _, errs in outcomes for e in errs]
    ArtifactStore(root, grace_s=0).cleanup(RUN_ID, STAGE)
    tally(counts, errors, "reads", read_once(store))
    return StressResult(writes=counts["writes"], failed_writes=counts["failed_writes"], reads=counts["reads"],
                        failed_reads=counts["failed_reads"], corrupt_reads=counts["corrupt_reads"],
                        leftovers=leftovers(store), errors=errors)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=15.0, help="length of each phase")
    parser.add_argument("--grace", type=float, default=1.0, help="grace period (s) of the writers' cleanup")
    args = parser.parse_args()
    print(f"{args.seconds:g} s per phase, grace {args.grace:g} s during the run, cleanup at grace 0 after it")
    print(f"{'phase':<22}{'writes':>8}{'reads':>8}{'failed writes':>15}{'failed reads':>14}"
          f"{'corrupt reads':>15}{'leftovers':>11}")
    for writers in (2, 1):
        with tempfile.TemporaryDirectory() as tmp:
            result = run_stress(Path(tmp), writers, args.seconds, args.grace)
        print(f"{f'{writers} writer(s) + reader':<22}{result.writes:>8,}{result.reads:>8,}{result.failed_writes:>15,}"
              f"{result.failed_reads:>14,}{result.corrupt_reads:>15,}{len(result.leftovers):>11,}")
        for line in result.errors + result.leftovers:
            print(f"    {line}")


if __name__ == "__main__":
    main()
