"""Preflight: what a run needs, checked before anything runs.

Said by ``fastdistill run new`` and at the start of the first materialization of a partition
made in the UI. The dataset resolves and its first rows load; every split named exists; the
eval split is among them and has gold; the teacher (and judge) provider is known, its settings
validate and its key is set; the judge's provider can judge. The first problem ends it as one
:class:`ConfigError` line; what is allowed but probably unintended comes back as notes.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from pathlib import Path

import polars as pl

from fastdistill_assets.config.loading import ConfigError
from fastdistill_assets.config.models import FrozenRun, RunConfig, gold_free_notes
from fastdistill_assets.datasets import questions
from fastdistill_assets.datasets.databases import write_privileges_note
from fastdistill_assets.datasets.demo import SPLITS as DEMO_SPLITS
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.gates.judge import CANNOT_JUDGE, judge_endpoint
from fastdistill_assets.sqlsafe.postgres import with_password_env
from fastdistill_assets.teacher.gateway import API_KEY_ENV, ProviderGateway

FIRST_ROWS = 20   # questions per split loaded to prove the dataset works


def preflight(frozen: FrozenRun, configs_dir: Path, data_dir: Path, environ: dict[str, str]) -> list[str]:
    """Check a prepared run; returns notes.

    Raises:
        ConfigError: the first problem found, in one line naming the file, key or variable.
    """
    config = frozen.config
    check_splits(config)
    check_dataset(frozen, data_dir)
    gateway = ProviderGateway(config_path=str(configs_dir / "provider_gateway.yaml"),
                              api_key=environ.get(API_KEY_ENV) or None)
    gateway.check(config.teacher.provider, config.teacher.endpoint_overrides())
    if config.teacher.budget_usd is not None and None in gateway.prices(config.teacher.provider)[:2]:
        raise ConfigError(f"teacher.budget_usd needs prices: provider {config.teacher.provider!r} has no "
                          "price_in_per_mtok / price_out_per_mtok in provider_gateway.yaml")
    if frozen.gates.judge.enabled:
        judge = judge_endpoint(frozen.gates.judge, config.teacher)
        gateway.check(judge.provider, judge.overrides)
    if config.teacher.escalate is not None:
        escalate = config.teacher.escalate
        if escalate.provider in CANNOT_JUDGE:  # a student is no stronger teacher than the one it learned from
            raise ConfigError(f"teacher.escalate.provider {escalate.provider!r} cannot be an "
                              "escalation teacher: name a stronger teacher's provider")
        try:
            gateway.check(escalate.provider, escalate.endpoint_overrides())
        except ConfigError as err:  # the same check as the teacher's: say which key it is about
            raise ConfigError(f"teacher.escalate.provider: {err}") from None
    notes = gold_free_notes(config, frozen.gates)
    if config.dataset.kind == "questions" and config.dataset.db_url is not None:
        url = with_password_env(config.dataset.db_url, config.dataset.password_env)
        notes += [note for note in [write_privileges_note(url, frozen.gates.execution)] if note]
    return notes


def check_splits(config: RunConfig) -> None:
    """The eval split is one of the dataset's splits (or null: no evaluation)."""
    dataset = config.dataset
    if config.eval_split is not None and config.eval_split not in dataset.splits:
        raise ConfigError(f"eval_split {config.eval_split!r} is not among dataset.splits {dataset.splits}: "
                          "name one of them, or eval_split: null to distill without evaluating")
    withheld = dataset.withhold_gold.splits if dataset.withhold_gold.share > 0 else []
    for key, splits in (("teacher.splits", config.teacher.splits), ("dataset.withhold_gold.splits", withheld)):
        if unknown := [s for s in splits if s not in dataset.splits]:
            raise ConfigError(f"{key} names {unknown[0]!r}, which is not among dataset.splits {dataset.splits}")
    if dataset.kind == "demo" and (unknown := [s for s in dataset.splits if s not in DEMO_SPLITS]):
        raise ConfigError(f"dataset.splits: the demo dataset has no split {unknown[0]!r} "
                          f"(it has {', '.join(DEMO_SPLITS)})")
    if config.eval_split in dataset.withhold_gold.splits and dataset.withhold_gold.share >= 1.0:
        raise ConfigError(no_eval_gold(config.eval_split))


def no_eval_gold(split: str) -> str:
    return (f"eval split {split!r} has no questions with gold SQL: evaluation needs gold; label some, "
            "or set eval_split: null to distill without evaluating")


def check_dataset(frozen: FrozenRun, data_dir: Path) -> None:
    """The dataset resolves, each split has questions, the first of each load, and the eval split has gold."""
    config = frozen.config
    dataset = config.dataset
    if dataset.kind == "demo":
        return  # generated in code: nothing a user can get wrong beyond the split names
    counts = _questions_counts(config) if dataset.kind == "questions" else None
    try:
        sample = load_dataset(dataset.model_copy(update={"limit_per_split": FIRST_ROWS}), data_dir,
                              frozen.gates.execution).frame
    except (OSError, ValueError, sqlite3.Error) as err:
        raise ConfigError(f"dataset: {err}" if dataset.path is None or str(dataset.path) in str(err)
                          else f"dataset {dataset.path}: {err}") from None
    for split in dataset.splits:
        rows = sample.filter(pl.col("split") == split)
        if rows.height == 0:
            raise ConfigError(f"dataset.splits names {split!r} but {dataset.path} has no questions in it")
        good = rows.filter(pl.col("reject_reason").is_null())
        if good.height == 0:
            reasons = Counter(rows["reject_reason"].to_list()).most_common()
            example = rows["reject_detail"].drop_nulls().head(1).to_list()
            raise ConfigError(
                f"dataset: none of the first {rows.height} questions of split {split!r} can be used "
                f"({', '.join(f'{r}: {n}' for r, n in reasons)})" + (f"; e.g. {example[0]}" if example else ""))
    if config.eval_split is not None and counts is not None and counts[config.eval_split] == 0:
        raise ConfigError(no_eval_gold(config.eval_split))  # the benchmark formats have gold on every question


def _questions_counts(config: RunConfig) -> Counter[str]:
    """Questions with gold per split of a questions file (every split that has rows is a key).

    Raises:
        ConfigError: the file is missing, unreadable or has no rows.
    """
    try:
        counts = questions.gold_counts(config.dataset)
    except (OSError, ValueError) as err:
        raise ConfigError(f"dataset.path: {err}") from None
    if not counts:
        raise ConfigError(f"dataset has 0 usable questions: {config.dataset.path} has no rows")
    return counts
