"""Parquet IO manager: one folder per run_id and stage, with a manifest.

Layout: ``<artifacts>/<run_id>/<stage>/data.parquet`` plus ``manifest.json`` and any side
files an asset returns. Assets return a polars frame (or a :class:`StageOutput` when they
also produce side files such as a report or a model) and never build paths; downstream
assets receive exactly the type that was returned.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl

from fastdistill_assets.hashing import sha256_json, sha256_text

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"


@dataclass
class StageOutput:
    """A stage's frame plus side files (``name -> bytes | str | Path``) written beside it.

    A ``Path`` (file or folder) is moved into the stage folder. On load, ``files`` maps each
    name to the stored file's path.
    """

    frame: pl.DataFrame
    files: dict[str, Any] = field(default_factory=dict)


def build_manifest(frame: pl.DataFrame) -> dict[str, Any]:
    """count, field_hash (column names and types), content_hash, min/max sample_id, columns."""
    columns = [{"name": n, "dtype": str(t)} for n, t in frame.schema.items()]
    manifest: dict[str, Any] = {
        "count": frame.height,
        "columns": [c["name"] for c in columns],
        "field_hash": sha256_json(columns),
        "min_sample_id": None,
        "max_sample_id": None,
    }
    if "sample_id" in frame.columns and frame.height:
        ids = frame.get_column("sample_id").drop_nulls().sort()
        manifest["min_sample_id"] = ids.first()
        manifest["max_sample_id"] = ids.last()
        manifest["content_hash"] = sha256_text("\n".join(ids.to_list()))
    return manifest


def manifest_metadata(manifest: dict[str, Any], frame: pl.DataFrame, location: Path) -> dict[str, Any]:
    """The manifest as Dagster metadata values (row count and column schema for the UI)."""
    return {
        "dagster/row_count": dg.MetadataValue.int(manifest["count"]),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=str(t)) for n, t in frame.schema.items()]
        ),
        "count": dg.MetadataValue.int(manifest["count"]),
        "field_hash": dg.MetadataValue.text(manifest["field_hash"]),
        "min_sample_id": dg.MetadataValue.text(manifest["min_sample_id"] or ""),
        "max_sample_id": dg.MetadataValue.text(manifest["max_sample_id"] or ""),
        "columns": dg.MetadataValue.json(manifest["columns"]),
        "path": dg.MetadataValue.path(str(location)),
    }


class ArtifactStore:
    """The one place that knows the artifacts layout."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def stage_dir(self, run_id: str, stage: str) -> Path:
        return self.root / run_id / stage

    def write(self, run_id: str, stage: str, obj: pl.DataFrame | StageOutput) -> tuple[Path, dict[str, Any]]:
        """Write atomically: build in a temp folder, then swap it in. Returns (dir, manifest)."""
        output = obj if isinstance(obj, StageOutput) else StageOutput(frame=obj)
        target = self.stage_dir(run_id, stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{stage}-", dir=target.parent))
        output.frame.write_parquet(tmp / DATA_FILE)
        for name, content in output.files.items():
            _write_side_file(tmp / name, content)
        manifest = build_manifest(output.frame)
        manifest["files"] = sorted(output.files)
        manifest["bundle"] = isinstance(obj, StageOutput)
        (tmp / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        if target.exists():
            old = target.with_name(f".{stage}-old-{tmp.name}")
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(target)
        return target, manifest

    def read(self, run_id: str, stage: str) -> pl.DataFrame | StageOutput:
        folder = self.stage_dir(run_id, stage)
        manifest_path = folder / MANIFEST_FILE
        if not manifest_path.exists():
            raise FileNotFoundError(
                f"stage {stage!r} of run {run_id!r} has not been materialized (no {manifest_path})"
            )
        manifest = json.loads(manifest_path.read_text())
        frame = pl.read_parquet(folder / DATA_FILE)
        if not manifest.get("bundle"):
            return frame
        return StageOutput(frame=frame, files={name: folder / name for name in manifest["files"]})


def _write_side_file(path: Path, content: Any) -> None:
    if isinstance(content, Path):  # a file or folder the asset made: moved in, not copied
        shutil.move(str(content), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))


def _run_id(context: dg.OutputContext | dg.InputContext) -> str:
    return context.partition_key if context.has_partition_key else "_unpartitioned"


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition under ``<root>/<run_id>/<stage>/`` with a manifest."""

    root: str

    def _store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.root))

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | StageOutput) -> None:
        stage = context.asset_key.path[-1]
        location, manifest = self._store().write(_run_id(context), stage, obj)
        frame = obj.frame if isinstance(obj, StageOutput) else obj
        metadata = manifest_metadata(manifest, frame, location)
        for name in manifest["files"]:
            metadata[f"file/{name}"] = dg.MetadataValue.path(str(location / name))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | StageOutput:
        stage = context.upstream_output.asset_key.path[-1] if context.upstream_output else context.asset_key.path[-1]
        return self._store().read(_run_id(context), stage)
