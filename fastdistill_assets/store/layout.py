"""Every folder under the artifacts root, named once.

    <artifacts>/
        <run_id>/<stage>/           a stage's versions (see :mod:`~fastdistill_assets.store.storage`)
        <run_id>/run_config.json    the run's frozen config (:class:`~fastdistill_assets.config.registry.RunRegistry`)
        <run_id>/_work/<name>/      work that outlives a step: chunk spools, training checkpoints
        _datasets/                  generated datasets (the demo), shared by all runs
        _locks/<run_id>.lock        the run writer locks (:mod:`~fastdistill_assets.runtime.locks`)
        _cache/responses.sqlite     the teacher's response cache, shared by all runs
        _alerts/alerts.jsonl        alerts written by the sensors
"""

from __future__ import annotations

from pathlib import Path

WORK = "_work"
DATASETS = "_datasets"
LOCKS = "_locks"
CACHE = "_cache"
ALERTS = "_alerts"


def work_dir(root: Path, run_id: str, name: str) -> Path:
    """A run's working folder ``name`` (not a stage artifact)."""
    return root / run_id / WORK / name


def datasets_dir(root: Path) -> Path:
    return root / DATASETS


def lock_file(root: Path, name: str) -> Path:
    return root / LOCKS / f"{name}.lock"


def response_cache(root: Path) -> Path:
    return root / CACHE / "responses.sqlite"


def alerts_file(root: Path) -> Path:
    return root / ALERTS / "alerts.jsonl"
