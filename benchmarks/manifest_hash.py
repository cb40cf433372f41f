"""Manifest throughput: rows/s of build_manifest (content_hash included) on a teacher_candidates-like frame.

Builds the manifest of a synthetic frame (64-hex ids, texts of 64-200 characters with quotes
and newlines, ints, floats with nulls, a bool, a mostly-null error column) once whole, once in
chunks fed to one ManifestBuilder, and once as two shards whose builders are merged; asserts the
three manifests are equal and prints rows/s for each (target: >= 300,000 rows/s).

    .venv/bin/python benchmarks/manifest_hash.py [--rows 1000000] [--chunk 100000]
"""

from __future__ import annotations

import argparse
import random
import string
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import polars as pl

from fastdistill_assets.store.manifest import ManifestBuilder, build_manifest


def candidates_frame(rows: int, seed: int = 0) -> pl.DataFrame:
    """A frame shaped like teacher_candidates (11 columns)."""
    rng, gen = random.Random(seed), np.random.default_rng(seed)
    alphabet = string.ascii_letters + string.digits + ' ,.()"\'\n=*'
    texts = pl.Series([''.join(rng.choices(alphabet, k=rng.randint(64, 200))) for _ in range(4096)])
    index = pl.Series(np.arange(rows, dtype=np.int64))
    cost = gen.random(rows)
    return pl.DataFrame({
        "candidate_id": [f"{i:064x}" for i in gen.integers(0, 2**62, rows)],
        "sample_id": [f"{i:064x}" for i in gen.integers(0, 2**62, rows)],
        "generation_index": (index % 4).cast(pl.Int32),
        "raw_output": texts.gather(gen.integers(0, len(texts), rows)),
        "provider": pl.Series(["openai", "vllm"]).gather(index % 2),
        "prompt_tokens": gen.integers(50, 4000, rows),
        "latency_ms": gen.random(rows) * 3000,
        "cost_usd": pl.Series(cost).set(pl.Series(cost < 0.2), None),
        "cache_hit": gen.random(rows) < 0.5,
        "error": pl.Series([None, "timeout"]).gather((index % 10 == 0).cast(pl.Int64)),
        "attempts": (index % 3 + 1).cast(pl.Int32),
    })


def timed(build: Callable[[], dict[str, Any]]) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    manifest = build()
    return manifest, time.perf_counter() - started


def chunked(frame: pl.DataFrame, chunk: int) -> dict[str, Any]:
    builder = ManifestBuilder()
    for piece in frame.iter_slices(chunk):
        builder.update(piece)
    return builder.finish()


def sharded(frame: pl.DataFrame, chunk: int) -> dict[str, Any]:
    """Two shards (alternate chunks, the second in reverse order), merged."""
    shards = [ManifestBuilder(), ManifestBuilder()]
    pieces = list(frame.iter_slices(chunk))
    for piece in pieces[0::2]:
        shards[0].update(piece)
    for piece in reversed(pieces[1::2]):
        shards[1].update(piece)
    shards[0].merge(shards[1])
    return shards[0].finish()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk", type=int, default=100_000)
    args = parser.parse_args()
    frame = candidates_frame(args.rows)
    print(f"{frame.height:,} rows x {frame.width} columns, {frame.estimated_size('mb'):.0f} MB")
    whole, whole_s = timed(lambda: build_manifest(frame))
    parts, parts_s = timed(lambda: chunked(frame, args.chunk))
    shards, shards_s = timed(lambda: sharded(frame, args.chunk))
    assert parts == whole, (parts, whole)
    assert shards == whole, (shards, whole)
    print(f"whole frame:                {frame.height / whole_s:>12,.0f} rows/s ({whole_s:.2f} s)")
    print(f"chunks of {args.chunk:,}:{'':<{16 - len(f'{args.chunk:,}')}} {frame.height / parts_s:>12,.0f} rows/s "
          f"({parts_s:.2f} s)")
    print(f"2 shards, merged:           {frame.height / shards_s:>12,.0f} rows/s ({shards_s:.2f} s)")
    print(f"content_hash {whole['content_hash']} (equal in all three)")


if __name__ == "__main__":
    main()
