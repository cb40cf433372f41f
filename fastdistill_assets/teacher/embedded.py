"""The embedded model behind the offline server: the SQL baseline, or the judge for judge prompts.

With an error profile (``teacher.error_profile``) the SQL answers get its random mistakes
(``teacher.errors``); the judge always answers with the clean baseline's own reading.
"""

from __future__ import annotations

from typing import Any

from fastdistill_assets.config import TeacherErrorProfile
from fastdistill_assets.gates import judge
from fastdistill_assets.teacher import errors


def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None,
          profile: TeacherErrorProfile | None = None) -> str:
    if judge.is_judge_prompt(messages):
        return judge.embedded_judge_reply(messages)
    return errors.reply(messages, params, profile)
