"""Parquet IO manager and artifact store: atomic, versioned stages with a manifest.

Layout of one stage (``run_id`` is the partition key)::

    <artifacts>/<run_id>/<stage>/
        CURRENT                     the current version's name (one line)
        .lock                       flock held briefly to start or publish a version and to clean up
        versions/<version>/         one immutable folder per write: data.parquet, manifest.json,
                                    side files; ``.superseded`` (its mtime is when) once replaced
        versions/.tmp-<version>/    a write in progress; its writer holds a flock on .writer.lock
        versions/.trash-<name>/     a folder being deleted

Version names (``<time_ns>-<pid>-<random>``) sort by creation time and are unique across processes.

Guarantees:

- A write builds its version under a temporary name, fsyncs it, and publishes it under the
  stage lock: rename to the version name, replace CURRENT (write, fsync, ``os.replace``), mark
  every other version superseded. The last write to publish wins; concurrent writers never fail
  each other.
- A reader takes no lock: it resolves CURRENT once and reads that complete version. It never
  sees a half-written or half-deleted stage. Should that version be deleted while it is read
  (only possible past the grace period), the reader resolves CURRENT again (a bounded number
  of times).
- A superseded version is deleted only once the grace period (default one hour) has passed, so
  a reader that resolved it, or holds the path of one of its side files (a model folder), keeps
  working that long. The current version is never deleted. Deleting renames the folder to a
  trash name first, then removes it.
- A write that dies, even by SIGKILL, leaves only a temporary folder that readers never look
  at; the next write (or :meth:`ArtifactStore.cleanup`) removes it once the kernel has released
  the dead writer's flock, and leaves the temporary folders of live writers alone.
- Stages written by the previous layout (data.parquet and manifest.json directly in the stage
  folder) are still read until a version is published.

Assets return a polars frame (or a :class:`StageOutput` when they also produce side files such
as a report or a model) and never build paths; downstream assets receive exactly the type that
was returned. A stage too large for memory is returned as a ``chunks.ChunkedFrame`` (parquet
parts, streamed into ``data.parquet`` one row group per part, with the manifest built chunk by
chunk), and a downstream input annotated :class:`StageScan` gets the stage without loading it
(row groups, a lazy frame or chosen columns). Frames are written in row groups of
``ROW_GROUP_ROWS`` rows, the unit a scan streams.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import polars as pl
import pyarrow.parquet as pq

from fastdistill_assets.core.diskspace import DiskFull, named_if_full
from fastdistill_assets.store.chunks import ChunkedFrame, iter_row_groups
from fastdistill_assets.store.manifest import ManifestBuilder

DATA_FILE = "data.parquet"
MANIFEST_FILE = "manifest.json"
CURRENT_FILE = "CURRENT"
STAGE_LOCK_FILE = ".lock"
VERSIONS_DIR = "versions"
TMP_PREFIX = ".tmp-"
TRASH_PREFIX = ".trash-"
WRITER_LOCK_FILE = ".writer.lock"
SUPERSEDED_MARKER = ".superseded"
DEFAULT_GRACE_S = 3600.0
READ_ATTEMPTS = 5
ROW_GROUP_ROWS = 10_000  # rows per parquet row group of a frame written whole


@dataclass
class StageOutput:
    """A stage's frame plus side files (``name -> bytes | str | Path``) written beside it.

    A ``Path`` (file or folder) is moved into the version folder. On load, ``files`` maps each
    name to the stored file's path.
    """

    frame: pl.DataFrame
    files: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class StageScan:
    """A stored stage, not loaded: what an input annotated ``StageScan`` receives.

    ``folder`` is the version that was current when the step started; it stays readable for
    the store's grace period even if a newer version is published meanwhile.
    """

    folder: Path
    manifest: dict[str, Any]

    @property
    def data(self) -> Path:
        return self.folder / DATA_FILE

    @property
    def count(self) -> int:
        return int(self.manifest["count"])

    @property
    def files(self) -> dict[str, Path]:
        return {name: self.folder / name for name in self.manifest.get("files", [])}

    def lazy(self) -> pl.LazyFrame:
        return pl.scan_parquet(self.data)

    def collect(self, columns: list[str] | None = None) -> pl.DataFrame:
        """The whole stage, or only ``columns`` of it."""
        return pl.read_parquet(self.data, columns=columns)

    def row_groups(self, columns: list[str] | None = None,
                   wanted: Callable[[int], bool] | None = None) -> Iterator[pl.DataFrame | None]:
        """The stage's row groups in order, one frame each; with ``wanted``, a row group it
        refuses is not read (None in its place)."""
        return iter_row_groups(self.data, columns, wanted)


def manifest_metadata(manifest: dict[str, Any], frame: pl.DataFrame | pl.Schema, location: Path) -> dict[str, Any]:
    """The manifest as Dagster metadata values (row count and column schema for the UI)."""
    schema = frame.schema if isinstance(frame, pl.DataFrame) else frame
    return {
        "dagster/row_count": dg.MetadataValue.int(manifest["count"]),
        "dagster/column_schema": dg.TableSchema(
            columns=[dg.TableColumn(name=n, type=str(t)) for n, t in schema.items()]
        ),
        "count": dg.MetadataValue.int(manifest["count"]),
        "field_hash": dg.MetadataValue.text(manifest["field_hash"]),
        "content_hash": dg.MetadataValue.text(manifest.get("content_hash") or ""),  # absent in old manifests
        "min_sample_id": dg.MetadataValue.text(manifest["min_sample_id"] or ""),
        "max_sample_id": dg.MetadataValue.text(manifest["max_sample_id"] or ""),
        "columns": dg.MetadataValue.json(manifest["columns"]),
        "version": dg.MetadataValue.text(manifest["version"]),
        "path": dg.MetadataValue.path(str(location)),
    }


def new_version_name() -> str:
    """A version name that sorts by creation time and is unique across processes."""
    return f"{time.time_ns():020d}-{os.getpid()}-{secrets.token_hex(4)}"


class ArtifactStore:
    """The one place that knows the artifacts layout (see the module docstring)."""

    def __init__(self, root: Path, grace_s: float = DEFAULT_GRACE_S) -> None:
        self.root = root
        self.grace_s = grace_s

    def stage_dir(self, run_id: str, stage: str) -> Path:
        """The stage's root folder (CURRENT, versions/)."""
        return self.root / run_id / stage

    def current_dir(self, run_id: str, stage: str) -> Path:
        """The folder of the stage's current version (or of a stage in the previous layout).

        Raises:
            FileNotFoundError: the stage has not been materialized.
        """
        root = self.stage_dir(run_id, stage)
        version = _read_current(root)
        if version:
            return root / VERSIONS_DIR / version
        if (root / MANIFEST_FILE).exists():
            return root
        raise FileNotFoundError(
            f"stage {stage!r} of run {run_id!r} has not been materialized (no {root / CURRENT_FILE})"
        )

    def write(self, run_id: str, stage: str,
              obj: pl.DataFrame | StageOutput | ChunkedFrame) -> tuple[Path, dict[str, Any]]:
        """Write a new version and publish it, then clean up. Returns (version folder, manifest)."""
        output = obj if isinstance(obj, (StageOutput, ChunkedFrame)) else StageOutput(frame=obj)
        root = self.stage_dir(run_id, stage)
        with named_if_full(root, _output_bytes(output)):
            return self._write(root, output, bundle=isinstance(obj, StageOutput) or bool(output.files))

    def _write(self, root: Path, output: StageOutput | ChunkedFrame, bundle: bool) -> tuple[Path, dict[str, Any]]:
        (root / VERSIONS_DIR).mkdir(parents=True, exist_ok=True)
        version = new_version_name()
        with _temp_version(root, version) as tmp:
            manifest = _fill_version(tmp, output, version, bundle)
            _fsync_tree(tmp)
            with _locked(root / STAGE_LOCK_FILE):
                folder = _publish(root, tmp, version)
                with suppress(OSError):  # published: a failed clean-up is retried by the next write
                    _sweep(root, self.grace_s)
        with suppress(OSError):
            _empty_trash(root)
        return folder, manifest

    def read(self, run_id: str, stage: str) -> pl.DataFrame | StageOutput:
        """The current version; resolved again if it is deleted while being read (bounded).

        Raises:
            FileNotFoundError: the stage has not been materialized.
        """
        for _ in range(READ_ATTEMPTS):
            folder = self.current_dir(run_id, stage)
            try:
                return _read_folder(folder)
            except FileNotFoundError:
                if folder.exists():
                    raise
        raise FileNotFoundError(
            f"stage {stage!r} of run {run_id!r} was replaced and deleted during each of {READ_ATTEMPTS} reads"
        )

    def scan(self, run_id: str, stage: str) -> StageScan:
        """The current version, not loaded.

        Raises:
            FileNotFoundError: the stage has not been materialized.
        """
        folder = self.current_dir(run_id, stage)
        return StageScan(folder, json.loads((folder / MANIFEST_FILE).read_text()))

    def cleanup(self, run_id: str, stage: str) -> None:
        """Delete versions superseded longer than the grace period and dead writers' temp folders."""
        root = self.stage_dir(run_id, stage)
        if not (root / VERSIONS_DIR).is_dir():
            return
        with _locked(root / STAGE_LOCK_FILE):
            _sweep(root, self.grace_s)
        _empty_trash(root)


def _read_current(root: Path) -> str | None:
    """The version CURRENT names, or None when there is none."""
    try:
        return (root / CURRENT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def _read_folder(folder: Path) -> pl.DataFrame | StageOutput:
    """The frame (or bundle) stored in one version folder."""
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    frame = pl.read_parquet(folder / DATA_FILE)
    if not manifest.get("bundle"):
        return frame
    return StageOutput(frame=frame, files={name: folder / name for name in manifest["files"]})


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created if missing) for the block."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


@contextmanager
def _temp_version(root: Path, version: str) -> Iterator[Path]:
    """A new temp version folder whose writer lock this process holds for the block.

    It is created under the stage lock, so a cleaner never sees it before it is locked. It is
    removed if the block fails (after a successful publish it no longer exists).
    """
    tmp = root / VERSIONS_DIR / f"{TMP_PREFIX}{version}"
    with _locked(root / STAGE_LOCK_FILE):
        tmp.mkdir()
        fd = os.open(tmp / WRITER_LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(fd)


def _write_parts(path: Path, output: ChunkedFrame, builder: ManifestBuilder) -> None:
    """Stream the parts into one parquet file, a row group per part, each cast to the first
    part's schema (a part whose column is all null has no type of its own)."""
    writer: pq.ParquetWriter | None = None
    try:
        for part in output.parts:
            table = pq.read_table(part)
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd")
            table = table.cast(writer.schema)
            builder.update(pl.from_arrow(table))  # type: ignore[arg-type]  # a Table gives a DataFrame, not a Series
            writer.write_table(table, row_group_size=max(table.num_rows, 1))
    finally:
        if writer is not None:
            writer.close()
    if writer is None:
        empty = pl.DataFrame(schema=output.schema)
        empty.write_parquet(path)
        builder.update(empty)


def _fill_version(folder: Path, output: StageOutput | ChunkedFrame, version: str, bundle: bool) -> dict[str, Any]:
    """Write data.parquet, the side files and manifest.json into ``folder``; returns the manifest."""
    builder = ManifestBuilder()
    if isinstance(output, ChunkedFrame):
        _write_parts(folder / DATA_FILE, output, builder)
    else:
        output.frame.write_parquet(folder / DATA_FILE, row_group_size=ROW_GROUP_ROWS)
        builder.update(output.frame)
    for name, content in output.files.items():
        _write_side_file(folder / name, content)
    manifest = builder.finish()
    manifest["files"] = sorted(output.files)
    manifest["bundle"] = bundle
    manifest["version"] = version
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return manifest


def _output_bytes(output: StageOutput | ChunkedFrame) -> int:
    """About the bytes a version of ``output`` takes (its rows in memory or its parts, its side files)."""
    rows = sum(p.stat().st_size for p in output.parts) if isinstance(output, ChunkedFrame) else \
        output.frame.estimated_size()
    return int(rows) + sum(_side_file_bytes(content) for content in output.files.values())


def _side_file_bytes(content: Any) -> int:
    if isinstance(content, Path):
        files = [content] if content.is_file() else [p for p in content.rglob("*") if p.is_file()]
        return sum(p.stat().st_size for p in files)
    return len(content) if isinstance(content, (bytes, str)) else 0   # text made as it is written: unknown


def _write_side_file(path: Path, content: Any) -> None:
    if isinstance(content, Path):  # a file or folder the asset made: moved in, not copied
        shutil.move(str(content), path)
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(str(content))


def _fsync(path: Path) -> None:
    """fsync one file or folder."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(folder: Path) -> None:
    """fsync every file and folder under ``folder`` (symlinks are left as they are)."""
    for dirpath, _, filenames in os.walk(folder):
        for name in filenames:
            path = Path(dirpath) / name
            if not path.is_symlink():
                _fsync(path)
        _fsync(Path(dirpath))


def _replace_text(path: Path, text: str) -> None:
    """Replace ``path``'s content atomically and durably (write a temp file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    _fsync(path.parent)


def _publish(root: Path, tmp: Path, version: str) -> Path:
    """Under the stage lock: give the temp folder its version name and point CURRENT at it."""
    folder = root / VERSIONS_DIR / version
    (tmp / WRITER_LOCK_FILE).unlink()
    tmp.rename(folder)
    _fsync(folder.parent)
    _replace_text(root / CURRENT_FILE, version)
    return folder


def _sweep(root: Path, grace_s: float) -> None:
    """Under the stage lock: mark replaced versions superseded; move to the trash the versions
    superseded for at least ``grace_s`` and the temp folders of dead writers."""
    current = _read_current(root)
    now = time.time()
    for entry in (root / VERSIONS_DIR).iterdir():
        name = entry.name
        if name == current or name.startswith(TRASH_PREFIX):
            continue
        if name.startswith(TMP_PREFIX):
            expired = not _writer_alive(entry)
        else:
            expired = _superseded_age(entry, now) >= grace_s
        if expired:
            entry.rename(entry.with_name(f"{TRASH_PREFIX}{name.lstrip('.')}"))


def _writer_alive(tmp: Path) -> bool:
    """Whether a process still holds the writer lock of a temp folder."""
    try:
        fd = os.open(tmp / WRITER_LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:  # its writer died before taking the lock
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def _superseded_age(version: Path, now: float) -> float:
    """Seconds since ``version`` was superseded; marks it superseded now if it is not yet."""
    marker = version / SUPERSEDED_MARKER
    try:
        return now - marker.stat().st_mtime
    except FileNotFoundError:
        marker.touch()
        return 0.0


def _empty_trash(root: Path) -> None:
    """Remove the trash folders (another cleaner may be removing the same ones)."""
    for entry in (root / VERSIONS_DIR).glob(f"{TRASH_PREFIX}*"):
        shutil.rmtree(entry, ignore_errors=True)


def _run_id(context: dg.OutputContext | dg.InputContext) -> str:
    return context.partition_key if context.has_partition_key else "_unpartitioned"


class ParquetIOManager(dg.ConfigurableIOManager):
    """Stores each asset partition as a version under ``<root>/<run_id>/<stage>/`` with a manifest.

    ``grace_s``: how long a replaced version stays readable before a later write deletes it.
    """

    root: str
    grace_s: float = DEFAULT_GRACE_S

    def _store(self) -> ArtifactStore:
        return ArtifactStore(Path(self.root), self.grace_s)

    def handle_output(self, context: dg.OutputContext, obj: pl.DataFrame | StageOutput | ChunkedFrame) -> None:
        stage = context.asset_key.path[-1]
        try:
            location, manifest = self._store().write(_run_id(context), stage, obj)
        except DiskFull as full:   # the step's one line, as inside a step
            raise dg.Failure(description=str(full), metadata=full.metadata()) from None
        if isinstance(obj, ChunkedFrame) and obj.spool is not None:
            obj.spool.clear()  # published: the parts are in data.parquet now
        schema = pl.read_parquet_schema(location / DATA_FILE)
        metadata = manifest_metadata(manifest, pl.Schema(schema), location)
        for name in manifest["files"]:
            metadata[f"file/{name}"] = dg.MetadataValue.path(str(location / name))
        context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> pl.DataFrame | StageOutput | StageScan:
        stage = context.upstream_output.asset_key.path[-1] if context.upstream_output else context.asset_key.path[-1]
        if context.dagster_type.typing_type is StageScan:
            return self._store().scan(_run_id(context), stage)
        return self._store().read(_run_id(context), stage)
