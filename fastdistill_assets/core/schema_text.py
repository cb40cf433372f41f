"""Reading the text a prompt carries: the typed columns of its schema's CREATE TABLE, and the
words that start a condition in a question. Shared by the embedded teacher and the sketch student."""

from __future__ import annotations

import re
from dataclasses import dataclass

COND_START = re.compile(r"\b(when|where|with|for|has|have|whose)\b")
FILLER = re.compile(r"^(is|of|the|a|an|=|equal to|equals|as)\s+")
_COLUMN_DEF = re.compile(r"^([\"`\[]?[\w ]+?[\"`\]]?)(?:\s+(\w+).*)?$")
_NUMERIC = {"REAL", "INTEGER", "INT", "NUMERIC", "FLOAT", "DOUBLE", "DECIMAL", "BIGINT", "NUMBER"}


@dataclass(frozen=True)
class SchemaColumn:
    """A column of a prompt's schema: its SQL name, ``real`` or ``text``, and the phrase a question uses for it."""

    name: str
    kind: str
    phrase: str


def parse_schema(schema: str) -> tuple[str, list[SchemaColumn]]:
    """Table name and columns of the first CREATE TABLE (statements end with ``;``);
    ``-- comments`` name the column."""
    match = re.search(r"CREATE TABLE\s+(\"?[\w.]+\"?)\s*\((.*?)\)\s*(?:;|\Z)", schema, re.IGNORECASE | re.DOTALL)
    if not match:
        raise ValueError("no CREATE TABLE in schema")
    table, body = match.group(1).strip('"'), match.group(2)
    columns: list[SchemaColumn] = []
    for line in body.splitlines():
        code, _, comment = line.partition("--")
        defs = [d.strip() for d in re.split(r",(?![^()]*\))", code) if d.strip()]
        for i, definition in enumerate(defs):
            m = _COLUMN_DEF.match(definition)
            if not m or m.group(1).upper() in {"PRIMARY", "FOREIGN", "UNIQUE", "CONSTRAINT", "CHECK"}:
                continue
            name = m.group(1).strip('"`[]')
            header = comment.strip() if comment.strip() and i == len(defs) - 1 else name.replace("_", " ")
            kind = "real" if (m.group(2) or "").upper() in _NUMERIC else "text"
            columns.append(SchemaColumn(name, kind, re.sub(r"\s*\(.*?\)", "", header).lower().strip()))
    if not columns:
        raise ValueError("no columns in schema")
    return table, columns
