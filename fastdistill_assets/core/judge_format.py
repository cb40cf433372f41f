"""The LLM judge's prompt format: the result preview it sees, its messages and its score parsing (pure).

Shared by the judge gate (``gates.judge``), the evaluation's tie judge and the embedded teacher,
which answers judge prompts offline."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from typing import Any

JUDGE_SYSTEM = ("You are a strict SQL reviewer. Given a question, a schema, a candidate SQLite query and the "
                "first rows of its result, judge whether the query answers the question. Reply with "
                "'Score: N', N from 1 (wrong) to 5 (certainly correct).")
_SCORE = re.compile(r"score\s*[:=]?\s*([1-5])\b", re.IGNORECASE)
_BARE = re.compile(r"^\s*([1-5])\s*(?:/\s*5)?\s*$")


PREVIEW_ROWS = 5          # rows of a result kept in ``result_preview`` (what the judge sees)
PREVIEW_COLUMNS = 16      # columns kept per row; more become one "... N more columns" cell
PREVIEW_CELL_CHARS = 80   # longer text cells are cut, ending in "..."


def _preview_cell(value: Any, max_chars: int) -> Any:
    """A result cell as a JSON value: numbers and null as they are, a blob as its size, anything
    else as text cut to ``max_chars``."""
    if value is None or isinstance(value, (bool, int)) or (isinstance(value, float) and math.isfinite(value)):
        return value
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"<{len(value)} bytes>"
    text = str(value)
    return text if len(text) <= max_chars else text[:max_chars] + "..."


def result_preview(rows: Sequence[Sequence[Any]], max_rows: int = PREVIEW_ROWS,
                   max_columns: int = PREVIEW_COLUMNS, max_chars: int = PREVIEW_CELL_CHARS) -> str:
    """The first rows of a result as a JSON list of lists, bounded by rows, columns and cell length
    (never by cutting the JSON text); an empty result is ``[]``."""
    preview = []
    for row in rows[:max_rows]:
        cells = [_preview_cell(v, max_chars) for v in row[:max_columns]]
        if len(row) > max_columns:
            cells.append(f"... {len(row) - max_columns} more columns")
        preview.append(cells)
    return json.dumps(preview, ensure_ascii=False)


def preview_rows(preview: str | None) -> list[Any]:
    """The rows stored by :func:`result_preview` (none stored: no rows)."""
    return json.loads(preview) if preview else []


def judge_messages(question: str, schema: str, sql: str, preview: list[Any]) -> list[dict[str, str]]:
    rows = json.dumps(preview[:5], default=str, ensure_ascii=False)
    user = f"### Question\n{question}\n\n### Schema\n{schema}\n\n### Candidate SQL\n{sql}\n\n### Result rows\n{rows}"
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def is_judge_prompt(messages: list[dict[str, Any]]) -> bool:
    return any(m.get("role") == "system" and m.get("content") == JUDGE_SYSTEM for m in messages)


def parse_judge_score(text: str | None) -> tuple[float | None, str | None]:
    """Score in [0, 1] from a 'Score: N' reply, or (None, reason)."""
    if not text:
        return None, "judge_empty"
    match = _SCORE.search(text) or _BARE.match(text)
    if not match:
        return None, "judge_unparseable"
    return (int(match.group(1)) - 1) / 4, None
