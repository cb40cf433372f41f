"""Prompt building and reply parsing: pure per-row functions."""

from __future__ import annotations

import json
import re
from typing import Any

from fastdistill_assets.hashing import sha256_json

SYSTEM = ("You are an expert SQL writer. Answer the question with one SQLite query over the given "
          "schema. Reply with the SQL only.")
SYSTEM_RATIONALE = ("You are an expert SQL writer. Think step by step about which columns, aggregate "
                    "and conditions the question needs, then answer with one SQLite query. Reply in two "
                    "sections: '### RATIONALE' with your reasoning and '### ANSWER' with the SQL only.")
SCHEMA_HEADER, ROWS_HEADER, QUESTION_HEADER = "### Schema", "### Sample rows", "### Question"


def build_messages(question: str, schema: str, sample_rows: str | list[list[Any]], rationale: bool = False) -> list[dict[str, str]]:
    """Chat messages for one canonical row: question, schema and a few sample rows."""
    rows = json.loads(sample_rows) if isinstance(sample_rows, str) else sample_rows
    rows_text = "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) or "(none)"
    user = f"{SCHEMA_HEADER}\n{schema}\n\n{ROWS_HEADER}\n{rows_text}\n\n{QUESTION_HEADER}\n{question}"
    return [{"role": "system", "content": SYSTEM_RATIONALE if rationale else SYSTEM},
            {"role": "user", "content": user}]


def prompt_hash(messages: list[dict[str, str]]) -> str:
    return sha256_json(messages)


_SECTION = re.compile(r"^###\s*(RATIONALE|ANSWER)\s*$", re.IGNORECASE | re.MULTILINE)


def split_rationale(output: str) -> tuple[str | None, str | None, str | None]:
    """Split a ``### RATIONALE`` / ``### ANSWER`` reply into (rationale, answer, error_reason)."""
    parts = _SECTION.split(output)
    sections = {parts[i].upper(): parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    if "ANSWER" not in sections or not sections["ANSWER"]:
        return sections.get("RATIONALE"), None, "missing_answer_section"
    return sections.get("RATIONALE"), sections["ANSWER"], None


def parse_user_prompt(content: str) -> dict[str, Any]:
    """Recover schema, sample rows and question from a prompt built by :func:`build_messages`."""
    def section(name: str, following: str | None) -> str:
        start = content.index(name) + len(name)
        end = content.index(following, start) if following else len(content)
        return content[start:end].strip()
    rows_text = section(ROWS_HEADER, QUESTION_HEADER)
    rows = [] if rows_text == "(none)" else [json.loads(line) for line in rows_text.splitlines() if line.strip()]
    return {"schema": section(SCHEMA_HEADER, ROWS_HEADER), "rows": rows, "question": section(QUESTION_HEADER, None)}
