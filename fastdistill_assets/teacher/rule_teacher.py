"""A deterministic schema-linking baseline for single-table questions.

It reads the prompt the way a model would (schema with header comments, a few sample rows,
the question), then chooses the SELECT column, the aggregate and the WHERE conditions with
keyword rules and header matching. It is a baseline and makes real mistakes (ambiguous
headers, values containing ' and ', unusual phrasing), which the quality gates must catch.
Like chat models, it sometimes wraps its SQL in code fences or adds a line of prose. Its mistakes
are systematic; the random ones of a real teacher come from an error profile (``teacher.errors``).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from fastdistill_assets.core.prompt_format import parse_user_prompt
from fastdistill_assets.core.schema_text import (
    COND_START,
    FILLER,
    SchemaColumn,
    parse_schema,
)
from fastdistill_assets.core.sqlsketch import literal, select_sql

AGG_KEYWORDS: list[tuple[str, re.Pattern[str]]] = [
    ("COUNT", re.compile(r"\b(how many|number of|count)\b")),
    ("AVG", re.compile(r"\b(average|mean)\b")),
    ("SUM", re.compile(r"\b(total|sum of)\b")),
    ("MAX", re.compile(r"\b(highest|maximum|largest|most|max)\b")),
    ("MIN", re.compile(r"\b(lowest|minimum|smallest|least|fewest|min)\b")),
]
OP_KEYWORDS: list[tuple[str, re.Pattern[str]]] = [
    (">", re.compile(r"\b(greater than|more than|above|over|larger than|higher than)\b")),
    ("<", re.compile(r"\b(less than|under|below|smaller than|fewer than|lower than)\b")),
]
def _find_column(text: str, columns: list[SchemaColumn]) -> tuple[SchemaColumn, int, int] | None:
    """The column whose phrase occurs in text (longest phrase first); returns (column, start, end)."""
    best = None
    for col in sorted(columns, key=lambda c: -len(c.phrase)):
        m = re.search(rf"\b{re.escape(col.phrase)}\b", text)
        if m and (best is None or len(col.phrase) > len(best[0].phrase)):
            best = (col, m.start(), m.end())
    return best


def _literal(raw: str, col: SchemaColumn) -> exp.Expr:
    value = raw.strip().strip("?.!\"'").strip()
    if col.kind == "real":
        try:
            number = float(value.replace(",", ""))
            return literal(int(number) if number.is_integer() else number, numeric=True)
        except ValueError:
            pass
    return literal(value, numeric=False)


def _condition(piece: str, original: str, columns: list[SchemaColumn]) -> tuple[str, str, exp.Expr] | None:
    found = _find_column(piece, columns)
    if found is None:
        return None
    col, _, end = found
    rest_lower, rest = piece[end:].strip(), original[end:].strip()
    op = "="
    for symbol, pattern in OP_KEYWORDS:
        m = pattern.match(rest_lower)
        if m:
            op, rest_lower, rest = symbol, rest_lower[m.end():].strip(), rest[m.end():].strip()
            break
    while (m := FILLER.match(rest_lower)) and rest[:1].islower():
        rest_lower, rest = rest_lower[m.end():], rest[m.end():]
    if not rest.strip("?.! "):
        return None
    return col.name, op, _literal(rest, col)


_ASKED = re.compile(r"\b(?:the|which|what|many|of all|every|all)\s+((?:(?!when|where|with|for|has|have|is|are)[a-z]+\s?){1,2})")
_AGG_WORDS = {"highest", "maximum", "largest", "most", "lowest", "minimum", "smallest", "least", "total", "sum",
              "average", "mean", "number", "max", "min"}


def _guess_column(head: str, columns: list[SchemaColumn]) -> str:
    """No header matched: like an LLM, name the column after the asked-for noun (it may not exist)."""
    for match in _ASKED.finditer(head):
        words = [w for w in match.group(1).split() if w not in _AGG_WORDS and w not in {"entries", "values"}]
        if words:
            return "_".join(words)
    return columns[0].name


Condition = tuple[str, str, exp.Expr]   # (column name, operator, literal)


@dataclass(frozen=True)
class Prediction:
    """The baseline's reading of a question: table, columns, SELECT column, aggregate, conditions."""

    table: str
    columns: tuple[SchemaColumn, ...]
    column: str
    agg: str
    conditions: tuple[Condition, ...]

    def sql(self) -> str:
        return select_sql(self.table, self.column, self.agg, self.conditions)


def predict(question: str, schema: str, temperature: float = 0.0, seed: int | None = None) -> Prediction:
    """The baseline's reading of a question over a single-table schema (see :func:`predict_sql`)."""
    table, columns = parse_schema(schema)
    lower = question.lower()
    agg = next((name for name, pattern in AGG_KEYWORDS if pattern.search(lower)), None)
    start = COND_START.search(lower)
    head, conds_lower = (lower[: start.start()], lower[start.end():]) if start else (lower, "")
    conds_original = question[start.end():] if start else ""
    conditions = []
    offset = 0
    for piece in re.split(r"(,\s*| and )", conds_lower):
        original = conds_original[offset: offset + len(piece)]
        offset += len(piece)
        if piece.strip() in {"", ","} or piece == " and ":
            continue
        cond = _condition(piece, original, columns)
        if cond is not None:
            conditions.append(cond)
    found = _find_column(head, columns)
    column = found[0].name if found else _guess_column(head, columns)
    if temperature > 0:
        rng = random.Random(f"{question}:{seed}")
        if rng.random() < temperature / 2:
            choice = rng.randrange(3)
            if choice == 0 and conditions:
                conditions = conditions[:-1]
            elif choice == 1 and agg:
                agg = None
            else:
                column = rng.choice(columns).name
    return Prediction(table, tuple(columns), column, agg or "", tuple(conditions))


def predict_sql(question: str, schema: str, temperature: float = 0.0, seed: int | None = None) -> str:
    """The baseline's SQL for a question over a single-table schema.

    With ``temperature > 0`` it samples: with probability ``temperature / 2`` (seeded by the
    question and ``seed``) it drops a condition, drops the aggregate or picks another column.
    """
    return predict(question, schema, temperature, seed).sql()


def _style(question: str) -> int:
    return int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) % 20


def rationale_reply(answer: str) -> str:
    """A reply in the ``### RATIONALE`` / ``### ANSWER`` format the rationale recipe asks for."""
    return f"### RATIONALE\nMatch the question's words to the schema's headers and values.\n### ANSWER\n{answer}"


def format_reply(sql: str, question: str, rationale: bool = False) -> str:
    """Format the SQL as chat models do: mostly bare, sometimes fenced or with a line of prose."""
    if rationale:
        return rationale_reply(sql)
    style = _style(question)
    if style < 12:
        return sql
    if style < 17:
        return f"```sql\n{sql}\n```"
    if style < 19:
        return f"Here is the query:\n```sql\n{sql};\n```"
    return f"{sql};"


@dataclass(frozen=True)
class Prompt:
    """What the baseline reads from a chat request: the user prompt, its parsed sections
    (``prompt_format.parse_user_prompt``) and whether the rationale format is asked for."""

    user: str
    sections: dict[str, Any]
    rationale: bool

    @property
    def question(self) -> str:
        return self.sections["question"]

    @property
    def schema(self) -> str:
        return self.sections["schema"]


def read_prompt(messages: list[dict[str, Any]]) -> Prompt:
    """The prompt of a chat request built by ``prompt_format.build_messages``."""
    user = next(m["content"] for m in reversed(messages) if m.get("role") == "user")
    rationale = any("### RATIONALE" in str(m.get("content", "")) for m in messages if m.get("role") == "system")
    return Prompt(user, parse_user_prompt(user), rationale)


def decode_params(params: dict[str, Any] | None) -> tuple[float, int | None]:
    """(temperature, seed) of a request's decode parameters."""
    params = params or {}
    return float(params.get("temperature") or 0.0), params.get("seed")


def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None) -> str:
    """The baseline's chat reply to a prompt built by ``prompt_format.build_messages``.

    ``params`` are the request's decode parameters (temperature, seed).
    """
    prompt = read_prompt(messages)
    sql = predict_sql(prompt.question, prompt.schema, *decode_params(params))
    return format_reply(sql, prompt.question, prompt.rationale)
