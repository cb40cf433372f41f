"""Prompt building and reply parsing: pure per-row functions."""

from __future__ import annotations

import json
import re
from typing import Any

from fastdistill_assets.core.hashing import sha256_json

DIALECT_NAMES = {"sqlite": "SQLite", "duckdb": "DuckDB", "postgres": "PostgreSQL"}
SYSTEM = ("You are an expert SQL writer. Answer the question with one {dialect} query over the given "
          "schema. Reply with the SQL only.")
SYSTEM_RATIONALE = ("You are an expert SQL writer. Think step by step about which columns, aggregate "
                    "and conditions the question needs, then answer with one {dialect} query. Reply in two "
                    "sections: '### RATIONALE' with your reasoning and '### ANSWER' with the SQL only.")
SCHEMA_HEADER, ROWS_HEADER, EVIDENCE_HEADER, QUESTION_HEADER = (
    "### Schema", "### Sample rows", "### Evidence", "### Question")
TABLE_MARK = "-- table "


def _rows_text(sample_rows: str | list[list[Any]] | dict[str, list[list[Any]]]) -> str:
    """One JSON row per line; rows of several tables each under a ``-- table NAME`` line."""
    rows = json.loads(sample_rows) if isinstance(sample_rows, str) else sample_rows
    groups = rows.items() if isinstance(rows, dict) else [(None, rows)]
    lines = []
    for table, table_rows in groups:
        if table is not None:
            lines.append(f"{TABLE_MARK}{table}")
        lines += [json.dumps(r, ensure_ascii=False, default=str) for r in table_rows]
    return "\n".join(lines) or "(none)"


def build_messages(question: str, schema: str, sample_rows: str | list[list[Any]] | dict[str, list[list[Any]]],
                   rationale: bool = False, evidence: str | None = None,
                   dialect: str = "sqlite") -> list[dict[str, str]]:
    """Chat messages for one canonical row: schema, a few sample rows, evidence (if any), question."""
    sections = [f"{SCHEMA_HEADER}\n{schema}", f"{ROWS_HEADER}\n{_rows_text(sample_rows)}"]
    if evidence:
        sections.append(f"{EVIDENCE_HEADER}\n{evidence}")
    sections.append(f"{QUESTION_HEADER}\n{question}")
    system = (SYSTEM_RATIONALE if rationale else SYSTEM).format(dialect=DIALECT_NAMES.get(dialect, dialect))
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(sections)}]


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


_HEADERS = re.compile(rf"^({SCHEMA_HEADER}|{ROWS_HEADER}|{EVIDENCE_HEADER}|{QUESTION_HEADER})$", re.MULTILINE)


def parse_user_prompt(content: str) -> dict[str, Any]:
    """Recover schema, sample rows, evidence and question from a prompt built by :func:`build_messages`.

    ``rows`` is a list of rows for a single table, or rows by table name.
    """
    parts = _HEADERS.split(content)
    sections = {parts[i]: parts[i + 1].strip() for i in range(1, len(parts) - 1, 2)}
    rows_text = sections.get(ROWS_HEADER, "(none)")
    by_table: dict[str, list[Any]] = {}
    rows: list[Any] = []
    for line in rows_text.splitlines():
        if line.startswith(TABLE_MARK):
            rows = by_table.setdefault(line[len(TABLE_MARK):], [])
        elif line.strip() and line != "(none)":
            rows.append(json.loads(line))
    return {"schema": sections.get(SCHEMA_HEADER, ""), "rows": by_table or rows,
            "evidence": sections.get(EVIDENCE_HEADER), "question": sections.get(QUESTION_HEADER, "")}


def assistant_target(sql: str, rationale: str | None) -> str:
    """What the student learns to say: the SQL, after its rationale in the step-by-step recipe."""
    return f"### RATIONALE\n{rationale}\n### ANSWER\n{sql}" if rationale else sql
