"""Serve a trained student through the same OpenAI-compatible server as the embedded teacher."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import Field

from fastdistill_assets.config import settings
from fastdistill_assets.config.registry import RunRegistry
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets.teacher.cache import local_identity
from fastdistill_assets.teacher.gateway import LocalStudents
from fastdistill_assets.teacher.server import ChatServer, FaultConfig
from fastdistill_assets.training.students import Student, load_student

_CHUNK = 1 << 20


def student_reply(student: Student) -> Callable[[list[dict[str, Any]], dict[str, Any] | None], str]:
    """The chat function a server calls: the student answers the request's prompt."""
    def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> str:
        return student.answer(messages)
    return reply


def student_folder(registry: RunRegistry, run_id: str) -> Path:
    """The model folder of the student trained in ``run_id``.

    Raises:
        FileNotFoundError: the run has no materialized student_model.
    """
    registry.load(run_id)
    return Path(ArtifactStore(registry.artifacts_dir).read(run_id, "student_model").files["model"])


def weights_sha256(folder: Path) -> str:
    """sha256 over a model folder's files in sorted relative-path order, each as its relative path
    and its bytes (both length-prefixed); a single file is hashed as its name and bytes."""
    files = [folder] if folder.is_file() else [p for p in folder.rglob("*") if p.is_file()]
    base = folder.parent if folder.is_file() else folder
    digest = hashlib.sha256()
    for path in sorted(files, key=lambda p: p.relative_to(base).as_posix()):
        name = path.relative_to(base).as_posix().encode()
        digest.update(len(name).to_bytes(8, "big") + name + path.stat().st_size.to_bytes(8, "big"))
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


def student_identity(folder: Path) -> str:
    """The response cache's identity of a student: ``local:student:<weights sha256>``, so a retrained
    student is never answered from an older student's cache."""
    return local_identity("student", weights_sha256(folder))


def folder_server(folder: Path, run_id: str, faults: FaultConfig | None = None, host: str = "127.0.0.1",
                  port: int = 0) -> ChatServer:
    """A server for the student saved in ``folder`` (its model name is ``student-<run_id>``)."""
    return ChatServer(student_reply(load_student(folder)), f"student-{run_id}", faults, host=host, port=port)


def student_server(registry: RunRegistry, run_id: str, faults: FaultConfig | None = None,
                   host: str = "127.0.0.1", port: int = 0) -> ChatServer:
    """A server for the student of ``run_id`` (its model name is ``student-<run_id>``).

    Raises:
        FileNotFoundError: the run has no materialized student_model.
    """
    return folder_server(student_folder(registry, run_id), run_id, faults, host, port)


class StudentServers(LocalStudents):
    """The gateway's ``students``: serves the student a run trained, found through the run registry."""

    artifacts_dir: str = Field(default_factory=lambda: str(settings.artifacts_dir()))
    configs_dir: str = Field(default_factory=lambda: str(settings.configs_dir()))

    def start(self, run_id: str) -> tuple[ChatServer, str]:
        """Raises:
            FileNotFoundError: the run has no materialized student_model.
            RunConfigError: no such run."""
        folder = student_folder(RunRegistry(Path(self.artifacts_dir), Path(self.configs_dir)), run_id)
        return folder_server(folder, run_id), student_identity(folder)
