"""Cheap rule filter, run first: empty, encoding, length, banned tokens, format."""

from __future__ import annotations

import re

from fastdistill_assets.config.models import RuleGates

_STRING_LITERAL = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"")
_READ_START = re.compile(r"^\s*\(?\s*(SELECT|WITH)\b", re.IGNORECASE)


def _banned(sql_upper_padded: str, token: str) -> bool:
    token = token.upper()
    if token.strip() != token:  # "DROP " means the word DROP followed by anything
        return re.search(rf"\b{re.escape(token.strip())}\b", sql_upper_padded) is not None
    return token in sql_upper_padded


def check_rules(sql: str, rules: RuleGates) -> str | None:
    """The first rule the cleaned SQL breaks, or None. Literals are ignored for token rules."""
    if not sql.strip():
        return "empty_output"
    if "\ufffd" in sql or any(0xD800 <= ord(ch) <= 0xDFFF for ch in sql):
        return "non_utf8"
    if len(sql) < rules.min_length:
        return "too_short"
    if len(sql) > rules.max_length:
        return "too_long"
    code = _STRING_LITERAL.sub("''", sql)
    if rules.single_statement and ";" in code:
        return "multiple_statements"
    upper = f" {code.upper()} "
    if any(_banned(upper, token) for token in rules.banned_tokens):
        return "banned_token"
    if rules.require_select and not _READ_START.match(code):
        return "not_select"
    return None
