"""CLI overhead: wall time of one whole run (every asset and check of the demo) through
(a) ``fastdistill materialize RUN`` (the ``distill`` job in-process, our progress and summary),
(b) ``dagster job execute -m fastdistill_assets.definitions -j distill --tags '{"dagster/partition": RUN}'``
(the same job through the Dagster CLI: in-process by default),
(c) ``dagster asset materialize -m fastdistill_assets.definitions --select '*' --partition RUN`` (the
project's executor: in-process by default) and, with ``--multiprocess``,
(d) that command with ``execution: {config: {multiprocess: {}}}`` (a Python process per step, what
it ran before the project chose its executor). Each is a subprocess on a fresh run_id in a
scratch project (copied configs, its own instance and artifacts; the response cache is per
project: a first, uncounted ``fastdistill materialize`` run fills it, so every timed mode finds
the teacher's answers cached and the ratios measure the process and executor overhead).
Prints each wall time and its ratio to (a) (target for (b) and (c): <= 1.3).

    .venv/bin/python benchmarks/cli_overhead.py [--limit 20] [--multiprocess]
"""

from __future__ import annotations

import argparse
import json
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


def _timed(command: list[str], env: dict, log: Path) -> float:
    started = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(command, env=env, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {proc.returncode}; see {log}")
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="questions per split (default: the whole demo)")
    parser.add_argument("--multiprocess", action="store_true", help="also time the multiprocess executor")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="cli_overhead_"))
    shutil.copytree(REPO / "configs", root / "configs")
    if args.limit:
        path = root / "configs" / "run_config.yaml"
        config = yaml.safe_load(path.read_text())
        config["dataset"]["limit_per_split"] = args.limit
        path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(root / "artifacts"), "FASTDISTILL_CONFIGS": str(root / "configs"),
           "DAGSTER_HOME": str(root / "home")}
    job = [str(BIN / "dagster"), "job", "execute", "-m", "fastdistill_assets.definitions", "-j", "distill"]
    assets = [str(BIN / "dagster"), "asset", "materialize", "-m", "fastdistill_assets.definitions", "--select", "*"]
    modes = {"a: fastdistill materialize": lambda run: [str(BIN / "fastdistill"), "materialize", run],
             "b: dagster job execute -j distill": lambda run: [*job, "--tags", json.dumps({"dagster/partition": run})],
             "c: dagster asset materialize '*'": lambda run: [*assets, "--partition", run]}
    if args.multiprocess:
        config = json.dumps({"execution": {"config": {"multiprocess": {}}}})
        modes["d: dagster asset materialize, multiprocess"] = lambda run: [*assets, "--partition", run,
                                                                         "--config-json", config]
    walls = {}
    for i, (name, command) in enumerate([("warm-up (not counted)", modes["a: fastdistill materialize"]),
                                         *modes.items()]):
        run = f"bench-{i}"
        subprocess.run([str(BIN / "fastdistill"), "run", "new", run], env=env, cwd=REPO, check=True,
                       capture_output=True)
        walls[name] = _timed(command(run), env, root / f"{run}.log")
        print(f"{name:<40} {walls[name]:7.1f}s", flush=True)
    del walls["warm-up (not counted)"]
    base = walls["a: fastdistill materialize"]
    print(f"\ndataset: demo, limit_per_split={args.limit or 'all'}; scratch project {root}")
    for name, wall in walls.items():
        print(f"{name:<40} {wall / base:5.2f}x of (a)")


if __name__ == "__main__":
    main()
