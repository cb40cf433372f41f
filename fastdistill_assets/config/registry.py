"""Frozen runs: a run's configuration frozen into ``<artifacts>/<run_id>/run_config.json`` when
the run is created, hashed, and refused when its gates changed since (a changed gate needs a new
run_id)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from pathlib import Path

from fastdistill_assets.config.loading import (
    load_gates,
    load_run_config,
    validated,
)
from fastdistill_assets.config.models import (
    FrozenRun,
    GatesConfig,
    RunConfig,
    TeacherConfig,
)
from fastdistill_assets.core.hashing import sha256_json

RUN_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")

def validate_run_id(run_id: str) -> str:
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(
            f"invalid run_id {run_id!r}: use letters, digits, '_', '.', '-' (max 100 chars), "
            "starting with a letter or digit"
        )
    return run_id


def config_hash(config: RunConfig) -> str:
    """What a run's stages depend on in its config: all of it but ``teacher.budget_usd``, which bounds
    how many answers are bought, not what any of them is (the teacher stage depends on it itself)."""
    return sha256_json(config.model_dump(exclude={"teacher": {"budget_usd"}}))


def freeze(run_id: str, config: RunConfig, gates: GatesConfig) -> FrozenRun:
    return FrozenRun(
        run_id=validate_run_id(run_id),
        created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        config=config,
        gates=gates,
        config_hash=config_hash(config),
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

    def create(self, run_id: str, config_path: Path | None = None, parent_run_id: str | None = None,
               overlay: Path | None = None) -> FrozenRun:
        """Freeze the given run config and the current gates for a new run_id.

        Raises:
            RunConfigError: the run_id already exists.
            ConfigError: a config file or environment variable is wrong.
        """
        return self.save(self.prepare(run_id, config_path, parent_run_id, overlay=overlay))

    def prepare(self, run_id: str, config_path: Path | None = None, parent_run_id: str | None = None,
                environ: dict[str, str] | None = None, overlay: Path | None = None) -> FrozenRun:
        """The frozen run a :meth:`create` would write, without writing it (to check it first).
        ``environ`` (default: this process's) supplies the settings of :data:`ENV_SETTINGS`;
        ``overlay``: a YAML file whose settings go over the run config's (the demo's).

        Raises:
            RunConfigError: the run_id already exists.
            ConfigError: a config file or environment variable is wrong.
        """
        if self.exists(run_id):
            raise RunConfigError(f"run_id {run_id!r} already exists; choose a new name")
        config = load_run_config(config_path or self.configs_dir / "run_config.yaml",
                                 dict(os.environ) if environ is None else environ, overlay)
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

    def set_budget(self, run_id: str, budget_usd: float | None) -> FrozenRun:
        """Change a run's ``teacher.budget_usd`` (the one setting that may change after freezing: it
        bounds how many answers are bought, not what they are). Materializing again asks only for
        what the old budget left unasked.

        Raises:
            RunConfigError: no such run.
            ConfigError: a budget that is not a positive number.
        """
        frozen = self.load(run_id)
        teacher = validated(TeacherConfig, {**frozen.config.teacher.model_dump(), "budget_usd": budget_usd},
                            "teacher.budget_usd")
        return self.save(frozen.model_copy(update={"config": frozen.config.model_copy(update={"teacher": teacher})}))

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

    def save_new(self, frozen: FrozenRun) -> bool:
        """Write a prepared run's frozen config unless one exists already (another step of the
        same run may freeze it at the same moment); True when this call wrote it."""
        target = self.path(frozen.run_id)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(frozen.model_dump(), indent=2, sort_keys=True))
        try:
            os.link(tmp, target)  # fails if the target exists: exactly one writer wins
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink(missing_ok=True)

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
