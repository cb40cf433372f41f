"""Output cleaning: code fences, leading prose, trailing semicolons and whitespace."""

from __future__ import annotations

import re
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[ \t]*\n?(.*?)(?:```|$)", re.DOTALL)
_SQL_START = re.compile(r"\b(SELECT|WITH|INSERT|UPDATE|DELETE|DROP|CREATE|ALTER|ATTACH|DETACH|PRAGMA|REPLACE|"
                        r"VACUUM|EXPLAIN|BEGIN|COPY|INSTALL|LOAD)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Cleaned:
    sql: str
    actions: tuple[str, ...]


def clean_sql(raw: str | None) -> Cleaned:
    """Extract the SQL from a model reply; ``actions`` lists what was removed.

    Statements are never dropped here (a ``DROP TABLE`` stays, for the rules to reject).
    """
    if raw is None:
        return Cleaned("", ("no_output",))
    text, actions = raw, []
    fence = _FENCE.search(text)
    if fence:
        text = fence.group(2)
        actions.append("code_fence")
    start = _SQL_START.search(text)
    if start and text[: start.start()].strip():
        text = text[start.start():]
        actions.append("leading_prose")
    stripped = text.strip()
    while stripped.endswith(";"):
        stripped = stripped[:-1].rstrip()
        if "trailing_semicolon" not in actions:
            actions.append("trailing_semicolon")
    if stripped != text and not actions[-1:] == ["trailing_semicolon"]:
        actions.append("whitespace")
    return Cleaned(stripped, tuple(actions))
