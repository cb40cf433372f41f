"""Why a teacher stage stops asking: each is one line for the step's failure, the alert and the CLI."""

from __future__ import annotations


class TeacherStopped(RuntimeError):
    """The teacher can no longer be asked; what it answered is cached, so materializing again resumes."""


class TeacherUnreachable(TeacherStopped):
    """The circuit breaker tripped: requests keep failing to connect or time out."""
