"""Serve a trained student through the same OpenAI-compatible server as the embedded teacher."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastdistill_assets.config import RunRegistry
from fastdistill_assets.storage import ArtifactStore
from fastdistill_assets.teacher.server import ChatServer, FaultConfig
from fastdistill_assets.training.students import Student, load_student


def student_reply(student: Student) -> Callable[[list[dict[str, Any]], dict[str, Any] | None], str]:
    """The chat function a server calls: the student answers the request's prompt."""
    def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> str:
        return student.answer(messages)
    return reply


def student_server(registry: RunRegistry, run_id: str, faults: FaultConfig | None = None,
                   host: str = "127.0.0.1", port: int = 0) -> ChatServer:
    """A server for the student of ``run_id`` (its model name is ``student-<run_id>``).

    Raises:
        FileNotFoundError: the run has no materialized student_model.
    """
    registry.load(run_id)
    output = ArtifactStore(registry.artifacts_dir).read(run_id, "student_model")
    student = load_student(Path(output.files["model"]))
    return ChatServer(student_reply(student), f"student-{run_id}", faults, host=host, port=port)
