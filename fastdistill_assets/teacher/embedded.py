"""The embedded model behind the offline server: the SQL baseline, or the judge for judge prompts."""

from __future__ import annotations

from typing import Any

from fastdistill_assets.gates import judge
from fastdistill_assets.teacher import baseline


def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> str:
    if judge.is_judge_prompt(messages):
        return judge.embedded_judge_reply(messages)
    return baseline.reply(messages, params)
