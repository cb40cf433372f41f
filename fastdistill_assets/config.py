"""Typed run configuration: load from YAML, freeze per run_id, hash.

A run's configuration (dataset, teacher, decode profile, recipe, training, and the quality
gates) is frozen into ``<artifacts>/<run_id>/run_config.json`` when the run is created.
Every asset reads the frozen copy, so a run is replayable. The gate config is hashed on its
own: if ``configs/quality_gates.yaml`` changes after a run was created, materializing that
run is refused (a changed gate needs a new run_id).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from fastdistill_assets.hashing import sha256_json, stable_json

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WithholdGold(_Strict):
    """Withhold the gold of a share of a labeled dataset's questions from the pipeline.

    Those questions take the gold-free path; their gold is kept aside (``withheld_gold_sql``)
    only so that the gold-free gates can be measured against it. The demo uses it for its
    unlabeled slice; the choice is a stable hash of each question's source_id.
    """

    share: float = Field(default=0.0, ge=0.0, le=1.0)
    splits: list[str] = Field(default_factory=lambda: ["train"])


class DatasetConfig(_Strict):
    kind: Literal["demo", "wikisql", "spider", "questions"] = "demo"
    path: str | None = None             # wikisql/spider: a folder; questions: a .jsonl, .csv or .parquet file
    databases: str | None = None        # questions: folder holding <db_id>.sqlite/.db/.duckdb files
    splits: list[str] = Field(default_factory=lambda: ["train", "dev", "test"])
    input_fields: list[str] = Field(default_factory=lambda: ["question", "db_id", "evidence"])
    limit_per_split: int | None = None
    lower_values: bool = False
    sample_rows: int = Field(default=3, ge=0)            # rows per table shown to the teacher
    sample_rows_total: int = Field(default=30, ge=0)     # questions kind: rows over all tables, at most
    withhold_gold: WithholdGold = Field(default_factory=WithholdGold)


class TeacherConfig(_Strict):
    provider: str = "embedded"
    model: str | None = None
    splits: list[str] = Field(default_factory=lambda: ["train"])


class DecodeProfile(_Strict):
    name: str = "greedy"
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    num_generations: int = 1

    def key(self) -> str:
        """The decode_profile string used by the data contract and the response cache."""
        return stable_json(self.model_dump())


class RecipeConfig(_Strict):
    rationale: bool = False
    multi_decode_select: bool = False
    preference_pairs: bool = False


class TrainingConfig(_Strict):
    trainer: Literal["sketch", "hf-sft"] = "sketch"
    epochs: int = 30
    learning_rate: float = 0.5          # sketch (Adagrad)
    seed: int = 0
    model_path: str | None = None       # hf-sft: local Hugging Face folder or .gguf file
    max_steps: int | None = None        # hf-sft: stop after this many optimizer steps
    batch_size: int = 4
    lora_r: int = 8
    lora_learning_rate: float = 2e-4    # hf-sft (AdamW on the LoRA adapters)
    max_length: int = 384


class RunConfig(_Strict):
    task_id: str = "text2sql"
    dataset: DatasetConfig = Field(default_factory=DatasetConfig)
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    decode: DecodeProfile = Field(default_factory=DecodeProfile)
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    eval_split: str = "test"
    parent_run_id: str | None = None


class RuleGates(_Strict):
    min_length: int = 10
    max_length: int = 2000
    banned_tokens: list[str] = Field(default_factory=list)
    single_statement: bool = True
    require_select: bool = True


class ExecutionGates(_Strict):
    timeout_ms: int = 2000
    max_rows: int = 10000
    # A query that returns no rows: reject it, keep it (the path's gate decides as for any
    # result), or let the LLM judge decide (kept only with a judge score >= judge.min_score).
    empty_result: Literal["reject", "keep", "judge"] = "keep"


class ConsistencyGates(_Strict):
    """Self-consistency, the semantic gate for samples without gold.

    Among a sample's candidates that executed, the largest group with the same result is the
    majority and its share is the sample's ``agreement``. Candidates outside it are rejected;
    so is every candidate of a sample with fewer than ``min_executed`` executed candidates, a
    tie for the largest group, or an agreement below ``min_agreement``.
    """

    min_agreement: float = Field(default=0.6, ge=0.0, le=1.0)
    min_executed: int = Field(default=2, ge=1)


class GoldGates(_Strict):
    semantics: Literal["bag", "set"] = "bag"
    float_tolerance: float = 1e-6


class JudgeGates(_Strict):
    enabled: bool = False
    provider: str | None = None
    model: str | None = None
    concurrency: int = 4
    min_score: float = Field(default=0.75, ge=0.0, le=1.0)   # needed by empty results when execution.empty_result is judge


class SelectGates(_Strict):
    require_gold_match: bool = True
    min_judge_score: float = 0.0


class CheckThreshold(_Strict):
    metric: str
    op: Literal[">=", "<="]
    value: float
    blocking: bool = True


class BaselineConfig(_Strict):
    kind: Literal["ungated", "run", "fixed"] = "ungated"
    run_id: str | None = None
    value: float | None = None


class EvalGates(_Strict):
    baseline: BaselineConfig = Field(default_factory=BaselineConfig)
    require_beats_baseline: bool = True
    # online_win_rate must be >= this: "teacher_lower_bound" (Wilson lower bound of parity with
    # the teacher), "previous_lower_bound" (the baseline run's win-rate lower bound) or a number.
    online_win_rate_threshold: Literal["teacher_lower_bound", "previous_lower_bound"] | float = "teacher_lower_bound"
    blocking: bool = True


class GatesConfig(_Strict):
    rules: RuleGates = Field(default_factory=RuleGates)
    execution: ExecutionGates = Field(default_factory=ExecutionGates)
    gold: GoldGates = Field(default_factory=GoldGates)
    consistency: ConsistencyGates = Field(default_factory=ConsistencyGates)
    judge: JudgeGates = Field(default_factory=JudgeGates)
    select: SelectGates = Field(default_factory=SelectGates)
    checks: dict[str, CheckThreshold] = Field(default_factory=dict)
    eval: EvalGates = Field(default_factory=EvalGates)

    @model_validator(mode="after")
    def _empty_result_judge_needs_judge(self) -> GatesConfig:
        if self.execution.empty_result == "judge" and not self.judge.enabled:
            raise ValueError("execution.empty_result: judge needs judge.enabled: true")
        return self


class FrozenRun(_Strict):
    """A run's configuration as frozen at creation."""

    run_id: str
    created_at: str
    config: RunConfig
    gates: GatesConfig
    config_hash: str
    gates_hash: str


def gold_free_notes(config: RunConfig, gates: GatesConfig) -> list[str]:
    """One-line warnings when a run that can have samples without gold is set up so that
    self-consistency cannot work (said by ``fastdistill run new``)."""
    dataset, decode = config.dataset, config.decode
    if dataset.kind != "questions" and dataset.withhold_gold.share <= 0:
        return []  # every sample has gold
    notes = []
    if decode.num_generations < gates.consistency.min_executed:
        notes.append(f"decode.num_generations {decode.num_generations} < consistency.min_executed "
                     f"{gates.consistency.min_executed}: every sample without gold will be rejected "
                     "(too_few_executed); sample several answers, e.g. num_generations: 5, temperature: 0.4")
    elif decode.temperature == 0:
        notes.append("decode.temperature 0 with several generations: a deterministic teacher gives the same "
                     "answer each time, so agreement says nothing; use a temperature > 0")
    return notes


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or non-mapping file is a clear error."""
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a YAML mapping, got {type(data).__name__}")
    return data


def load_run_config(path: Path) -> RunConfig:
    return RunConfig.model_validate(read_yaml(path))


def load_gates(path: Path) -> GatesConfig:
    return GatesConfig.model_validate(read_yaml(path))


RUN_ENV_OVERRIDES = {
    "FASTDISTILL_PROVIDER": ("teacher", "provider", str),
    "FASTDISTILL_MODEL": ("teacher", "model", str),
    "FASTDISTILL_TEMPERATURE": ("decode", "temperature", float),
    "FASTDISTILL_MAX_TOKENS": ("decode", "max_tokens", int),
}


def apply_env_overrides(config: RunConfig, environ: dict[str, str]) -> RunConfig:
    """Apply FASTDISTILL_PROVIDER / _MODEL / _TEMPERATURE / _MAX_TOKENS when a run is frozen.

    They are applied at creation, never later, so the frozen config records what was used.
    """
    updates: dict[str, dict[str, Any]] = {}
    for env, (section, key, cast) in RUN_ENV_OVERRIDES.items():
        if environ.get(env):
            updates.setdefault(section, {})[key] = cast(environ[env])
    for section, values in updates.items():
        config = config.model_copy(update={section: getattr(config, section).model_copy(update=values)})
    return RunConfig.model_validate(config.model_dump())


def validate_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(
            f"invalid run_id {run_id!r}: use letters, digits, '_', '.', '-' (max 100 chars), "
            "starting with a letter or digit"
        )
    return run_id


def freeze(run_id: str, config: RunConfig, gates: GatesConfig) -> FrozenRun:
    return FrozenRun(
        run_id=validate_run_id(run_id),
        created_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        config=config,
        gates=gates,
        config_hash=sha256_json(config.model_dump()),
        gates_hash=sha256_json(gates.model_dump()),
    )


class RunConfigError(RuntimeError):
    """A run cannot be materialized with its frozen configuration."""


class RunRegistry:
    """Frozen run configurations under ``<artifacts>/<run_id>/run_config.json``."""

    FILE = "run_config.json"

    def __init__(self, artifacts_dir: Path, configs_dir: Path) -> None:
        self.artifacts_dir = artifacts_dir
        self.configs_dir = configs_dir

    def path(self, run_id: str) -> Path:
        return self.artifacts_dir / validate_run_id(run_id) / self.FILE

    def exists(self, run_id: str) -> bool:
        return self.path(run_id).exists()

    def current_gates(self) -> GatesConfig:
        return load_gates(self.configs_dir / "quality_gates.yaml")

    def create(self, run_id: str, config_path: Path | None = None, parent_run_id: str | None = None) -> FrozenRun:
        """Freeze the given run config and the current gates for a new run_id.

        Raises:
            RunConfigError: the run_id already exists.
        """
        return self.save(self.prepare(run_id, config_path, parent_run_id))

    def prepare(self, run_id: str, config_path: Path | None = None, parent_run_id: str | None = None) -> FrozenRun:
        """The frozen run a :meth:`create` would write, without writing it (to check it first).

        Raises:
            RunConfigError: the run_id already exists.
        """
        if self.exists(run_id):
            raise RunConfigError(f"run_id {run_id!r} already exists; choose a new name")
        config = apply_env_overrides(load_run_config(config_path or self.configs_dir / "run_config.yaml"),
                                     dict(os.environ))
        if parent_run_id:  # born-again: the parent run's student is this run's teacher
            config = config.model_copy(update={"teacher": config.teacher.model_copy(
                update={"provider": "student", "model": parent_run_id})})
        if config.teacher.provider == "student":
            if not config.teacher.model:
                raise RunConfigError("teacher.provider 'student' needs teacher.model = the parent run_id")
            self.load(config.teacher.model)
            config = config.model_copy(update={"parent_run_id": config.teacher.model})
        return freeze(run_id, config, self.current_gates())

    def save(self, frozen: FrozenRun) -> FrozenRun:
        """Write a prepared run's frozen config atomically."""
        target = self.path(frozen.run_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(frozen.model_dump(), indent=2, sort_keys=True))
        tmp.replace(target)
        return frozen

    def load(self, run_id: str) -> FrozenRun:
        """Load a run's frozen config.

        Raises:
            RunConfigError: the run was never created with ``fastdistill run new``.
        """
        path = self.path(run_id)
        if not path.exists():
            raise RunConfigError(
                f"run_id {run_id!r} has no frozen config at {path}; "
                f"create it with `fastdistill run new {run_id}`"
            )
        return FrozenRun.model_validate_json(path.read_text())

    def load_or_freeze(self, run_id: str) -> tuple[FrozenRun, bool]:
        """Load the frozen config, freezing the current configs for a partition added in the UI."""
        if self.exists(run_id):
            return self.load(run_id), False
        try:
            return self.create(run_id), True
        except RunConfigError:  # created concurrently by another step
            return self.load(run_id), False

    def list(self) -> list[FrozenRun]:
        if not self.artifacts_dir.exists():
            return []
        return [
            FrozenRun.model_validate_json(p.read_text())
            for p in sorted(self.artifacts_dir.glob(f"*/{self.FILE}"))
        ]

    def assert_gates_unchanged(self, frozen: FrozenRun) -> None:
        """Refuse to go on if configs/quality_gates.yaml changed since the run was frozen."""
        current = sha256_json(self.current_gates().model_dump())
        if current != frozen.gates_hash:
            raise RunConfigError(
                f"the gate config changed since run {frozen.run_id!r} was created "
                f"(frozen gates_hash {frozen.gates_hash[:12]}, now {current[:12]}). A changed gate "
                "needs a new run: `fastdistill run new NEW_RUN_ID`."
            )
