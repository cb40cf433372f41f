"""Teacher throughput: N requests at concurrency C against the local server with latency L.

Prints the achieved time against the limit N*L/C (target: limit/achieved >= 0.85 for
N=10,000, L=200 ms, C=64), the warm (cached) re-run time and its calls (target: <= 5 % of
cold, zero calls), and peak memory of this (client) process. The server runs in its own
process (`fastdistill serve`), as a real provider would.

    .venv/bin/python benchmarks/teacher_throughput.py [--n 10000] [--latency-ms 200] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fastdistill_assets.core.prompt_format import build_messages, prompt_hash
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import (
    EndpointSettings,
    GenerationRequest,
    Generator,
)

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 TEXT, -- Club\n  col2 REAL -- Goals\n)"


def requests(n: int) -> list[GenerationRequest]:
    out = []
    for i in range(n):
        messages = build_messages(f"What is the goals when player is Player {i}?", SCHEMA, [["Ana", "Porto", 3]])
        out.append(GenerationRequest(str(i), messages, prompt_hash(messages)))
    return out


def start_server(latency_ms: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "fastdistill_assets.cli", "serve", "--port", "0",
                             "--latency-ms", str(latency_ms)], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    return proc, line.strip().rsplit(" ", 1)[-1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args()
    proc, base_url = start_server(args.latency_ms)
    try:
        reqs = requests(args.n)
        settings = EndpointSettings(base_url=base_url, model="bench", concurrency=args.concurrency, timeout_s=30)
        with tempfile.TemporaryDirectory() as tmp:
            cache = ResponseCache(Path(tmp) / "cache.sqlite")
            cold_gen = Generator(settings, cache, "bench")
            t0 = time.perf_counter()
            cold = cold_gen.run(reqs)
            cold_s = time.perf_counter() - t0
            warm_gen = Generator(settings, cache, "bench")
            t0 = time.perf_counter()
            warm = warm_gen.run(reqs)
            warm_s = time.perf_counter() - t0
    finally:
        proc.terminate()
        proc.wait()
    limit_s = args.n * args.latency_ms / 1000 / args.concurrency
    errors = sum(r.error is not None for r in cold)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"requests                 {args.n} at concurrency {args.concurrency}, latency {args.latency_ms:.0f} ms")
    print(f"limit N*L/C              {limit_s:.2f} s")
    print(f"cold                     {cold_s:.2f} s  ({args.n / cold_s:.0f} req/s, {cold_gen.calls} calls, {errors} errors)")
    print(f"efficiency limit/cold    {limit_s / cold_s:.3f}  (target >= 0.85)")
    print(f"warm (cached) re-run     {warm_s:.3f} s  = {100 * warm_s / cold_s:.2f} % of cold, {warm_gen.calls} calls, "
          f"{sum(r.cache_hit for r in warm)} cache hits  (target <= 5 %, 0 calls)")
    print(f"peak memory (client)     {peak_mib:.0f} MiB")


if __name__ == "__main__":
    main()
