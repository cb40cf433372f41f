"""The data contract: canonical_input, schema_hash and sample_id.

``sample_id = sha256(task_id, schema_hash, canonical_input, decode_profile)``: the four parts
are joined with an ASCII unit separator (0x1F) so that no two different tuples can produce
the same concatenation. Same input, same id, in every run and every process.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from typing import Any

from fastdistill_assets.core.hashing import sha256_text, stable_json

_SEPARATOR = "\x1f"
_WHITESPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFC-normalize and collapse runs of whitespace to one space, trimmed."""
    return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).strip()


def _normalize_value(value: Any) -> Any:
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, Mapping):
        return {str(k): _normalize_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalize_value(v) for v in value]
    return value


def canonical_input(record: Mapping[str, Any], fields: Sequence[str]) -> str:
    """Stable JSON of the chosen input fields (sorted keys, normalized whitespace).

    A chosen field whose value is null (e.g. no ``evidence``) is left out, so adding an
    optional field to ``input_fields`` keeps the ids of rows that do not have it.

    Raises:
        KeyError: a chosen field is missing from the record.
    """
    missing = [f for f in fields if f not in record]
    if missing:
        raise KeyError(f"canonical_input: record lacks field(s) {missing}")
    return stable_json({f: _normalize_value(record[f]) for f in fields if record[f] is not None})


def schema_hash(schema: str) -> str:
    """sha256 of the schema text exactly as given to the teacher."""
    return sha256_text(schema)


def sample_id(task_id: str, schema_hash_: str, canonical_input_: str, decode_profile: str) -> str:
    """sha256 over the four contract parts, separated so that boundaries cannot shift."""
    return sha256_text(_SEPARATOR.join((task_id, schema_hash_, canonical_input_, decode_profile)))
