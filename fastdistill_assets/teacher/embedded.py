"""The embedded model behind the offline server: the SQL baseline, or the judge for judge prompts.

With an error profile (``teacher.error_profile``) the SQL answers get its random mistakes
(``teacher.errors``); the judge always answers with the clean baseline's own reading.
"""

from __future__ import annotations

import re
from typing import Any

from fastdistill_assets.config.models import TeacherErrorProfile
from fastdistill_assets.core.judge_format import is_judge_prompt
from fastdistill_assets.teacher import errors, rule_teacher


def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None,
          profile: TeacherErrorProfile | None = None) -> str:
    if is_judge_prompt(messages):
        return embedded_judge_reply(messages)
    return errors.reply(messages, params, profile)


def embedded_judge_reply(messages: list[dict[str, Any]]) -> str:
    """The offline judge: agrees when the candidate matches the baseline's own reading."""
    user = next(m["content"] for m in messages if m.get("role") == "user")
    sections = dict(re.findall(r"### ([A-Za-z ]+)\n(.*?)(?=\n\n### |\Z)", user, re.DOTALL))
    try:
        own = rule_teacher.predict_sql(sections["Question"].strip(), sections["Schema"].strip())
    except (KeyError, ValueError):
        return "Score: 3"
    empty = sections.get("Result rows", "[]").strip() == "[]"
    if own.lower() == sections.get("Candidate SQL", "").strip().lower():
        return "Score: 4" if empty else "Score: 5"
    return "Score: 2"
