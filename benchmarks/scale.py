"""Scale: N questions raw → distilled through ``fastdistill materialize``, with 1, 2 and 4 shards.

Generates (once, cached under ``--data-dir``) a WikiSQL-format ``train`` split of about N
questions with the demo generator (20 questions per table, 12 domains), sets up a scratch
project (copied configs, its own instance and artifacts) whose run config reads it
(dataset kind wikisql, splits [train], limit_per_split N, teacher.splits [train]), and for
each shard count creates a fresh run and runs
``fastdistill materialize RUN --select raw,canonical,teacher_candidates,filtered,distilled``
in a subprocess, sampling the memory of its whole process tree every 0.2 s: the sum over the
subprocess and all its descendants of RSS (a page shared by forked workers counted in each: an
upper bound) and of PSS (shared pages split among their processes), from /proc/<pid>/smaps_rollup;
``--max-rss-gib`` judges the RSS. Afterwards it prints, per stage, the rows, the
step's wall time (from Dagster's step stats: loading inputs, the body and writing the output),
rows/s, and the body's own ``timing_wall_s``, all read from the scratch instance; then the
total wall time, the peak RSS and PSS and the teacher path that ran.

With 1 shard the run is the documented ``fastdistill materialize`` (every step in one process);
with K > 1 shards it is ``dagster asset materialize`` (the multiprocess executor: a process per
step, so the K shard steps of teacher_candidates and filtered run side by side), with the
scratch instance's ``teacher`` pool limit set to K. ``--in-process-teacher`` (the default for
``--million``) has the embedded teacher answer in the step's process instead of behind its local
HTTP server (``in_process: true`` in provider_gateway.yaml), which is what a million requests
on 2 cores allow; the output says which path ran.

The response cache is per project: with one project (the default) the first shard count's
run asks the teacher and later ones are served from the cache. ``--cold`` gives each shard
count its own project, so every run asks the teacher.

    .venv/bin/python benchmarks/scale.py [--n 200000 | --million] [--shards 1,2,4] [--generations 1]
        [--chunk-rows 10000] [--cold] [--max-rss-gib 1] [--data-dir /tmp/fastdistill_scale] [--in-process-teacher]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
STAGES = ["raw", "canonical", "teacher_candidates", "filtered", "distilled"]
QUESTIONS_PER_TABLE, DOMAINS, SEED = 20, 12, 7
GIB = 1024 ** 3


def dataset(data_dir: Path, n: int) -> tuple[Path, str]:
    """The cached generated split folder for about ``n`` questions, and how it was obtained."""
    from fastdistill_assets.datasets.demo import write_split

    tables = math.ceil(n / (DOMAINS * QUESTIONS_PER_TABLE))
    folder = data_dir / f"wikisql-{tables}x{QUESTIONS_PER_TABLE}-seed{SEED}"
    if (folder / "DONE").exists():
        return folder, "cached"
    data_dir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=".gen-", dir=data_dir))
    write_split(tmp, "train", tables, QUESTIONS_PER_TABLE, SEED)
    (tmp / "DONE").write_text(f"{tables * DOMAINS * QUESTIONS_PER_TABLE} questions\n")
    try:
        tmp.rename(folder)
    except OSError:  # generated concurrently: keep the first
        shutil.rmtree(tmp, ignore_errors=True)
    return folder, f"generated in {time.perf_counter() - started:.1f} s"


def tree_memory(root: int) -> tuple[int, int]:
    """Bytes of (RSS, PSS) summed over ``root`` and all its descendants (from /proc). RSS counts
    a page shared by several processes (forked workers) in each; PSS splits it among them."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    rss = pss = 0
    stack = [root]
    while stack:
        pid = stack.pop()
        stack.extend(children.get(pid, []))
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in rollup.splitlines():
            if line.startswith(("Rss:", "Pss:")):
                value = int(line.split()[1]) * 1024
                rss, pss = (rss + value, pss) if line.startswith("Rss:") else (rss, pss + value)
    return rss, pss


def project(root: Path, folder: Path, args: argparse.Namespace, shards: int) -> dict[str, str]:
    """The scratch project's environment, its run config set for ``shards`` (frozen by ``run new``)."""
    if not (root / "configs").exists():
        shutil.copytree(REPO / "configs", root / "configs")
    path = root / "configs" / "run_config.yaml"
    config = yaml.safe_load(path.read_text())
    config["dataset"].update(kind="wikisql", path=str(folder), splits=["train"], limit_per_split=args.n)
    config["teacher"]["splits"] = ["train"]
    config["decode"]["num_generations"] = args.generations
    config["scale"].update(chunk_rows=args.chunk_rows, shards=shards)
    config["eval_split"] = None
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    gateway_path = root / "configs" / "provider_gateway.yaml"
    gateway = yaml.safe_load(gateway_path.read_text())
    gateway["providers"]["embedded"]["in_process"] = args.in_process_teacher
    gateway_path.write_text(yaml.safe_dump(gateway, sort_keys=False))
    return {**os.environ, "FASTDISTILL_ARTIFACTS": str(root / "artifacts"),
            "FASTDISTILL_CONFIGS": str(root / "configs"), "DAGSTER_HOME": str(root / "home")}


def run_tree(command: list[str], env: dict[str, str], log: Path) -> tuple[float, int, int, int]:
    """Run ``command``, sampling its process tree's memory every 0.2 s:
    (wall s, peak RSS bytes, peak PSS bytes, exit code)."""
    started, peak_rss, peak_pss = time.perf_counter(), 0, 0
    with log.open("w") as out:
        proc = subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            rss, pss = tree_memory(proc.pid)
            peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
            time.sleep(0.2)
    return time.perf_counter() - started, peak_rss, peak_pss, proc.returncode


def stage_figures(home: Path, run_id: str) -> dict[str, dict]:
    """Per stage: rows, step wall (s), body wall (s), steps and the teacher's metadata, from the instance."""
    import dagster as dg

    figures: dict[str, dict] = {}
    with dg.DagsterInstance.from_config(str(home)) as instance:
        for stage in STAGES:
            records = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey(stage)),
                                                      limit=10_000).records
            latest: dict[str, tuple[str, dict]] = {}  # partition (one per shard) → (dagster run, metadata)
            for record in records:  # newest first
                mat = record.asset_materialization
                part = mat.partition or ""
                if (part == run_id or run_id in part.split("|")) and part not in latest:
                    latest[part] = (record.run_id, {k: v.value for k, v in mat.metadata.items()})
            metas = [meta for _, meta in latest.values()]
            spans = []  # a sharded stage's steps are `<stage>.<stage>_plan|_shard[shard_k]|_merge`
            for dagster_run in {run for run, _ in latest.values()}:
                spans += [(step.start_time, step.end_time) for step in instance.get_run_step_stats(dagster_run)
                          if step.step_key.split(".")[0].split("[")[0] == stage and step.start_time and step.end_time]
            step_wall = max(e for _, e in spans) - min(s for s, _ in spans) if spans else 0.0
            steps = len(spans)
            figures[stage] = {
                "parts": steps, "step_wall": step_wall,
                "rows": sum(int(m.get("count", m.get("dagster/row_count", 0)) or 0) for m in metas),
                "body_wall": sum(float(m.get("timing_wall_s", 0.0)) for m in metas),
                "meta": metas[0] if metas else {}}
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200_000, help="questions (default 200,000)")
    parser.add_argument("--million", action="store_true", help="1,000,000 questions")
    parser.add_argument("--shards", default="1,2,4", help="shard counts to run, comma-separated")
    parser.add_argument("--generations", type=int, default=1, help="decode.num_generations")
    parser.add_argument("--chunk-rows", type=int, default=10_000, help="scale.chunk_rows")
    parser.add_argument("--cold", action="store_true", help="a project (and response cache) per shard count")
    parser.add_argument("--max-rss-gib", type=float, default=None, help="exit 1 when a peak RSS exceeds this")
    parser.add_argument("--data-dir", type=Path, default=Path("/tmp/fastdistill_scale"))
    parser.add_argument("--in-process-teacher", action=argparse.BooleanOptionalAction, default=None,
                        help="the embedded teacher answers in the step's process, no HTTP (default: on for --million)")
    args = parser.parse_args()
    args.n = 1_000_000 if args.million else args.n
    if args.in_process_teacher is None:
        args.in_process_teacher = args.million
    folder, how = dataset(args.data_dir, args.n)
    print(f"dataset   {folder} (train split, {how}); limit_per_split {args.n:,}, "
          f"{args.generations} generation(s), chunk_rows {args.chunk_rows:,}")
    print("teacher   " + ("embedded, called in-process (no HTTP: `in_process: true`)" if args.in_process_teacher
                          else "embedded, behind its local HTTP server (the default path)"))
    print("cache     " + ("--cold: a project and response cache per shard count" if args.cold else
                          "one project: runs after the first are served from the response cache (--cold for cold runs)"))
    scratch = Path(tempfile.mkdtemp(prefix="scale_"))
    summaries, failed = [], False
    for i, shards in enumerate(int(s) for s in args.shards.split(",")):
        root = scratch / (f"s{shards}" if args.cold else "project")
        env = project(root, folder, args, shards)
        run_id = f"scale-{i}-s{shards}"
        subprocess.run([str(BIN / "fastdistill"), "run", "new", run_id], env=env, cwd=REPO, check=True,
                       capture_output=True)
        log = root / f"{run_id}.log"
        if shards == 1:  # the documented command: every step in one process
            command = [str(BIN / "fastdistill"), "materialize", run_id, "--select", ",".join(STAGES)]
        else:  # one process per step (multiprocess executor), the teacher pool opened to the shards
            subprocess.run([str(BIN / "dagster"), "instance", "concurrency", "set", "teacher", str(shards)], env=env,
                           cwd=REPO, check=True, capture_output=True)
            command = [str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions",
                       "--select", ",".join(STAGES), "--partition", run_id,
                       "--config-json", json.dumps({"execution": {"config": {"multiprocess": {}}}})]
        wall, peak, peak_pss, code = run_tree(command, env, log)
        print(f"\nshards={shards}  run {run_id}  log {log}")
        if code != 0:
            print(f"  {' '.join(command[:3])} exited {code}; see the log")
            failed = True
            continue
        figures = stage_figures(root / "home", run_id)
        print(f"  {'stage':<20}{'steps':>6}{'rows':>11}{'step wall':>11}{'rows/s':>10}{'body wall':>11}")
        for stage, f in figures.items():
            rate = f["rows"] / f["step_wall"] if f["step_wall"] else 0.0
            print(f"  {stage:<20}{f['parts']:>6}{f['rows']:>11,}{f['step_wall']:>10.1f}s{rate:>10,.0f}"
                  f"{f['body_wall']:>10.1f}s")
        teacher = figures["teacher_candidates"]["meta"]
        path = ("embedded teacher called in-process (no HTTP)" if args.in_process_teacher
                else "embedded teacher behind the local HTTP server")
        print(f"  teacher: {teacher.get('provider')} ({teacher.get('model')}), {path}; "
              f"{teacher.get('requests', '?')} requests, {teacher.get('cache_hits', '?')} cache hits")
        print(f"  total wall {wall:.1f} s, peak memory of the process tree: RSS {peak / 2**20:,.0f} MiB "
              f"(shared pages counted in each process), PSS {peak_pss / 2**20:,.0f} MiB (shared pages split)")
        summaries.append(f"shards={shards}: {figures['raw']['rows']:,} questions → {figures['distilled']['rows']:,} "
                         f"distilled in {wall:.1f} s, peak RSS {peak / 2**20:,.0f} MiB (PSS {peak_pss / 2**20:,.0f}), "
                         f"teacher {teacher.get('cache_hits', '?')}/{teacher.get('requests', '?')} from cache")
        if args.max_rss_gib is not None and peak > args.max_rss_gib * GIB:
            summaries[-1] += f"  EXCEEDS --max-rss-gib {args.max_rss_gib}"
            failed = True
    print(f"\nsummary (scratch {scratch})")
    print("\n".join(f"  {line}" for line in summaries))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
