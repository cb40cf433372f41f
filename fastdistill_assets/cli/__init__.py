"""The fastdistill command: create and list runs, materialize a run, serve models, run the demo."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fastdistill_assets.config import settings
from fastdistill_assets.config.loading import ConfigError
from fastdistill_assets.config.registry import RunConfigError, RunRegistry
from fastdistill_assets.defs.partitions import RUN_ID
from fastdistill_assets.runtime.instance import open_instance
from fastdistill_assets.store.layout import datasets_dir

if TYPE_CHECKING:  # dagster is imported only by the commands that need it (a fast --help)
    import dagster as dg


def _registry() -> RunRegistry:
    return RunRegistry(settings.artifacts_dir(), settings.configs_dir())


DEMO_OVERLAY = "demo.yaml"   # in the configs folder: what `fastdistill demo` sets over the run config


def create_run(run_id: str, config_path: Path | None = None, parent_run_id: str | None = None,
               overlay: Path | None = None) -> None:
    """Check, freeze and register a run: nothing is written unless the preflight passes.
    ``overlay``: settings over the run config's (the demo's ``configs/demo.yaml``).

    Raises:
        ConfigError: a config file, environment variable or the dataset is wrong (one line).
        RunConfigError: the run_id exists already.
    """
    import os

    from fastdistill_assets.runtime.preflight import preflight

    registry = _registry()
    frozen = registry.prepare(run_id, config_path, parent_run_id, overlay=overlay)
    notes = preflight(frozen, registry.configs_dir, datasets_dir(settings.artifacts_dir()), dict(os.environ))
    with open_instance() as instance:   # reached first: a run is saved only once it can be registered
        registry.save(frozen)
        instance.add_dynamic_partitions(RUN_ID, [run_id])
    print(f"created run {run_id} (config {frozen.config_hash[:12]}, gates {frozen.gates_hash[:12]})")
    for note in notes:
        print(f"note: {note}")


def _cmd_run_new(args: argparse.Namespace) -> int:
    create_run(args.name, Path(args.config) if args.config else None, args.parent)
    return 0


def _cmd_run_budget(args: argparse.Namespace) -> int:
    if args.usd.lower() == "none":
        budget = None
    else:
        try:
            budget = float(args.usd)
        except ValueError:
            raise ConfigError(f"teacher.budget_usd: {args.usd!r} is not a number of dollars (or none)") from None
    frozen = _registry().set_budget(args.run_id, budget)
    spent = "no limit" if budget is None else f"${budget:g}"
    print(f"run {frozen.run_id}: teacher budget {spent}; `fastdistill materialize {frozen.run_id}` asks for what "
          "is missing")
    return 0


def _cmd_run_list(_: argparse.Namespace) -> int:
    with open_instance() as instance:
        registered = set(instance.get_dynamic_partitions(RUN_ID))
        for frozen in _registry().list():
            mark = "" if frozen.run_id in registered else "  (not registered in the Dagster instance)"
            print(f"{frozen.run_id}\t{frozen.created_at}\tdataset={frozen.config.dataset.kind}\t"
                  f"teacher={frozen.config.teacher.provider}\t{run_status(instance, frozen.run_id)}{mark}")
    return 0


def run_status(instance: dg.DagsterInstance, run_id: str) -> str:
    """The latest Dagster run of ``run_id`` (status, when) and its eval figures, as one field."""
    import dagster as dg

    runs = instance.get_run_records(dg.RunsFilter(tags={"dagster/partition": run_id}), limit=1)
    if not runs:
        return "status=never materialized"
    record = runs[0]
    when = dt.datetime.fromtimestamp(record.create_timestamp.timestamp()).strftime("%Y-%m-%d %H:%M")
    text = f"status={record.dagster_run.status.value.lower()} ({when})"
    evals = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("eval_report"), asset_partitions=[run_id]), limit=1).records
    if evals and evals[0].asset_materialization:
        meta = {k: getattr(v, "value", v) for k, v in evals[0].asset_materialization.metadata.items()}
        figures = [f"{name}={meta[key]:.3f}" for name, key in (("accuracy", "test_exec_accuracy"),
                                                                ("baseline", "baseline_accuracy"))
                   if isinstance(meta.get(key), float)]
        if isinstance(meta.get("mcnemar_p"), float):
            figures.append(f"mcnemar_p={meta['mcnemar_p']:.3g}")
        if "accepted" in meta:
            figures.append(f"accepted={meta['accepted']}")
        if isinstance(meta.get("cost_per_kept_sample_usd"), float):
            figures.append(f"cost_per_kept_sample=${meta['cost_per_kept_sample_usd']:.6f}")
        text += " " + " ".join(figures)
    return text


def _cmd_materialize(args: argparse.Namespace) -> int:
    from fastdistill_assets.cli.materialize import materialize_run

    return materialize_run(args.run_id, args.select, args.verbose)


def _cmd_demo(args: argparse.Namespace) -> int:
    from fastdistill_assets.cli.materialize import materialize_run

    run_id = args.run_id or "demo-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    overlay = settings.configs_dir() / DEMO_OVERLAY   # a configs folder without one: the run config alone
    create_run(run_id, Path(args.config) if args.config else None, overlay=overlay if overlay.is_file() else None)
    return materialize_run(run_id, verbose=args.verbose)


def _cmd_serve(args: argparse.Namespace) -> int:
    from fastdistill_assets.teacher.server import FaultConfig, embedded_teacher

    faults = FaultConfig(latency_ms=args.latency_ms, latency_jitter_ms=args.jitter_ms, rate_limit=args.rate_limit,
                         server_error=args.server_error, timeout=args.timeout, truncated=args.truncated,
                         non_json=args.non_json, seed=args.seed,
                         **({} if args.batch_delay_s is None else {"batch_delay_s": args.batch_delay_s}))
    if args.student:
        from fastdistill_assets.training.serving import student_server

        server = student_server(_registry(), args.student, faults, host=args.host, port=args.port)
    else:
        server = embedded_teacher(faults, host=args.host, port=args.port)
    print(f"serving {server.model_name} on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="fastdistill", description=__doc__, formatter_class=formatter)
    parser.add_argument("--debug", action="store_true", help="show the Python traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(parent: argparse._SubParsersAction, name: str, text: str) -> argparse.ArgumentParser:
        return parent.add_parser(name, help=text, description=text, formatter_class=formatter)

    run = command(sub, "run", "create or list runs (run_id partitions)")
    run_sub = run.add_subparsers(dest="run_command", required=True)
    new = command(run_sub, "new", "check and freeze the configs for a new run and register its run_id partition")
    new.add_argument("name", help="the new run_id (letters, digits, '.', '_', '-')")
    new.add_argument("--config", help="run config YAML (default: configs/run_config.yaml)")
    new.add_argument("--parent", help="parent run_id whose student becomes this run's teacher (born-again chain)")
    new.set_defaults(func=_cmd_run_new)
    command(run_sub, "list", "list runs with their latest Dagster status and eval figures").set_defaults(
        func=_cmd_run_list)
    budget = command(run_sub, "budget", "set a run's teacher budget (teacher.budget_usd); materializing again "
                     "asks only for what the old budget left unasked")
    budget.add_argument("run_id", metavar="RUN", help="a run_id made with `fastdistill run new`")
    budget.add_argument("usd", metavar="USD", help="dollars at the provider's prices, or none for no limit")
    budget.set_defaults(func=_cmd_run_budget)
    mat = command(sub, "materialize", "run the distill job (every asset and check) for a run, in-process")
    mat.add_argument("run_id", metavar="RUN", help="a run_id made with `fastdistill run new`")
    mat.add_argument("--select", metavar="KEYS", help="comma-separated asset keys, e.g. raw,canonical "
                     "(with their checks; default: every asset)")
    mat.add_argument("--verbose", action="store_true", help="print Dagster's event log (DEBUG) too")
    mat.set_defaults(func=_cmd_materialize)
    serve = command(sub, "serve", "serve the embedded teacher (or a run's student) as an OpenAI-compatible API")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--student", metavar="RUN_ID", help="serve the student trained in this run")
    serve.add_argument("--latency-ms", type=float, default=0.0, help="added latency per request")
    serve.add_argument("--jitter-ms", type=float, default=0.0, help="random extra latency, up to this much")
    for fault in ("rate-limit", "server-error", "timeout", "truncated", "non-json"):
        serve.add_argument(f"--{fault}", type=float, default=0.0, help=f"share of requests answered with {fault}")
    serve.add_argument("--seed", type=int, default=0, help="seed of the injected faults and jitter")
    serve.add_argument("--batch-delay-s", type=float, default=None,
                       help="the Batch API (/v1/files, /v1/batches): seconds until a batch completes "
                            "(default: FaultConfig's)")
    serve.set_defaults(func=_cmd_serve)
    demo = command(sub, "demo", "create a run and materialize the whole pipeline offline (no API key)")
    demo.add_argument("--run-id", help="run_id to create (default: demo-<UTC time>)")
    demo.add_argument("--config", help="run config YAML (default: configs/run_config.yaml)")
    demo.add_argument("--verbose", action="store_true", help="print Dagster's event log (DEBUG) too")
    demo.set_defaults(func=_cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, RunConfigError, ValueError, OSError) as err:
        if args.debug:
            raise
        print(f"fastdistill: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
