"""The ``sketch`` trainer: a learned single-table Text-to-SQL model (WikiSQL sketch style).

Four small linear models over question-schema features, trained on distilled SQL parsed into
sketches: the aggregate (classifier), the SELECT column (ranker over columns), the column of
each WHERE phrase (ranker) and its operator (classifier). Values are read from the question
text. Samples whose SQL does not fit the sketch are counted by reason, not hidden.
"""

from __future__ import annotations

import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fastdistill_assets.core.schema_text import (
    COND_START,
    FILLER,
    SchemaColumn,
    parse_schema,
)
from fastdistill_assets.core.sqlsketch import (
    AGGS,
    OPS,
    Cond,
    Sketch,
    SketchError,
    sketch_to_sql,
    sql_to_sketch,
)
from fastdistill_assets.training.linear import (
    DIM,
    Ranker,
    classifier_candidates,
    hash_features,
)

_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")
_OP_WORDS = re.compile(r"^(greater than|more than|above|over|larger than|higher than|less than|under|below|"
                       r"smaller than|fewer than|lower than)\s+")
_SPLIT = re.compile(r"(,\s*| and )")


@dataclass(frozen=True)
class Example:
    question: str
    schema: str
    sql: str


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _ngrams(words: list[str], prefix: str) -> list[str]:
    return [f"{prefix}u:{w}" for w in words] + [f"{prefix}b:{a}_{b}" for a, b in zip(words, words[1:], strict=False)]


def _split_question(question: str) -> tuple[str, str, list[tuple[str, str]]]:
    """(head, conds text, pieces as (lower, original)) using the question's condition keyword."""
    lower = question.lower()
    start = COND_START.search(lower)
    head = lower[: start.start()] if start else lower
    conds_lower, conds_orig = (lower[start.end():], question[start.end():]) if start else ("", "")
    pieces, offset = [], 0
    for part in _SPLIT.split(conds_lower):
        original = conds_orig[offset: offset + len(part)]
        offset += len(part)
        if part.strip(" ,") and part != " and ":
            pieces.append((part, original))
    return head, conds_lower, pieces


def _phrase_in(text: str, column: SchemaColumn) -> bool:
    return re.search(rf"\b{re.escape(column.phrase)}\b", text) is not None


def _column_features(text_words: list[str], text: str, column: SchemaColumn, index: int, tag: str) -> list[str]:
    tokens = column.phrase.split()
    feats = [f"{tag}phrase={_phrase_in(text, column)}", f"{tag}kind={column.kind}", f"{tag}first={index == 0}",
             f"{tag}overlap={min(3, len(set(tokens) & set(text_words)))}"]
    feats += [f"{tag}x:{w}|{t}" for w in text_words for t in tokens]
    return feats


def _value(piece_lower: str, piece_orig: str, column: SchemaColumn) -> str:
    match = re.search(rf"\b{re.escape(column.phrase)}\b", piece_lower)
    low, orig = (piece_lower[match.end():], piece_orig[match.end():]) if match else (piece_lower, piece_orig)
    low, orig = low.lstrip(), orig[len(orig) - len(orig.lstrip()):]
    if (m := _OP_WORDS.match(low)):
        low, orig = low[m.end():], orig[m.end():]
    while (m := FILLER.match(low)) and orig[:1].islower():
        low, orig = low[m.end():], orig[m.end():]
    return orig.strip().strip("?.!\"'").strip()


@dataclass
class SketchModel:
    """The trained student. ``predict`` returns SQL for a question over a single-table schema."""

    agg: Ranker = field(default_factory=Ranker)
    sel: Ranker = field(default_factory=Ranker)
    cond_col: Ranker = field(default_factory=Ranker)
    op: Ranker = field(default_factory=Ranker)

    # features ---------------------------------------------------------------------------
    @staticmethod
    def agg_candidates(head: str, question: str) -> list[np.ndarray]:
        return classifier_candidates(_ngrams(_words(head), "h") + _ngrams(_words(question), "q"), len(AGGS))

    @staticmethod
    def sel_candidates(head: str, columns: list[SchemaColumn], agg: str) -> list[np.ndarray]:
        words = _words(head)
        return [hash_features(_column_features(words, head, c, i, "s") + [f"s:agg={agg}|kind={c.kind}"])
                for i, c in enumerate(columns)]

    @staticmethod
    def cond_candidates(piece: str, columns: list[SchemaColumn]) -> list[np.ndarray]:
        words = _words(piece)
        has_number = any(w[0].isdigit() for w in words)
        return [hash_features(_column_features(words, piece, c, i, "c") + [f"c:num={has_number}|kind={c.kind}"])
                for i, c in enumerate(columns)]

    @staticmethod
    def op_candidates(piece: str) -> list[np.ndarray]:
        return classifier_candidates(_ngrams(_words(piece)[:6], "o"), len(OPS))

    # inference --------------------------------------------------------------------------
    def predict_sketch(self, question: str, columns: list[SchemaColumn]) -> Sketch:
        head, _, pieces = _split_question(question)
        agg = AGGS[self.agg.predict(self.agg_candidates(head, question))]
        conds = []
        for lower, original in pieces:
            col = self.cond_col.predict(self.cond_candidates(lower, columns))
            op = OPS[self.op.predict(self.op_candidates(lower))]
            value = _value(lower, original, columns[col])
            if not value:
                continue
            numeric = columns[col].kind == "real" and re.fullmatch(r"-?\d+(\.\d+)?", value.replace(",", "")) is not None
            conds.append(Cond(col, op, value.replace(",", "") if numeric else value, numeric))
        sel = self.sel.predict(self.sel_candidates(head, columns, agg))
        return Sketch(sel, agg, tuple(conds))

    def predict(self, question: str, schema: str) -> str:
        table, columns = parse_schema(schema)
        return sketch_to_sql(self.predict_sketch(question, columns), table, [c.name for c in columns])

    # persistence ------------------------------------------------------------------------
    PARTS = ("agg", "sel", "cond_col", "op")

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / "weights.npz", **{p: getattr(self, p).w for p in self.PARTS})
        (folder / "model.json").write_text(json.dumps({"trainer": "sketch", "dim": DIM}))

    @classmethod
    def load(cls, folder: Path) -> SketchModel:
        weights = np.load(folder / "weights.npz")
        return cls(**{p: Ranker(weights=weights[p]) for p in cls.PARTS})


@dataclass
class TrainReport:
    """``wall_s``: the whole training call; ``train_s``: the fitting epochs only (parsing the SQL
    into sketches and extracting features excluded), the basis of ``train_tokens_per_sec``."""

    examples: int
    used: int
    skipped_by_reason: dict[str, int]
    epochs: int
    steps: int
    train_tokens: int
    wall_s: float
    train_s: float

    @property
    def train_tokens_per_sec(self) -> float:
        return round(self.train_tokens / self.train_s, 1) if self.train_s else 0.0


def _find_piece(pieces: list[tuple[str, str]], cond: Cond, columns: list[SchemaColumn]) -> int | None:
    value = cond.value.lower()
    for i, (lower, _) in enumerate(pieces):
        if value and value in lower and (_phrase_in(lower, columns[cond.column]) or len(pieces) == 1):
            return i
    for i, (lower, _) in enumerate(pieces):
        if value and value in lower:
            return i
    return None


def train_sketch(examples: list[Example], epochs: int = 30, learning_rate: float = 0.5,
                 seed: int = 0) -> tuple[SketchModel, TrainReport]:
    """Fit the four models on examples whose SQL fits the sketch."""
    started = time.perf_counter()
    skipped: Counter[str] = Counter()
    data: dict[str, tuple[list, list]] = {p: ([], []) for p in SketchModel.PARTS}
    used, tokens = 0, 0
    for ex in examples:
        try:
            _, columns = parse_schema(ex.schema)
            sketch = sql_to_sketch(ex.sql, [c.name for c in columns])
        except SketchError as err:
            skipped[err.reason] += 1
            continue
        except ValueError:
            skipped["bad_schema"] += 1
            continue
        used += 1
        tokens += len(ex.question.split()) + len(ex.sql.split())
        head, _, pieces = _split_question(ex.question)
        data["agg"][0].append(SketchModel.agg_candidates(head, ex.question))
        data["agg"][1].append(AGGS.index(sketch.agg))
        data["sel"][0].append(SketchModel.sel_candidates(head, columns, sketch.agg))
        data["sel"][1].append(sketch.sel)
        for cond in sketch.conds:
            piece = _find_piece(pieces, cond, columns)
            if piece is None:
                skipped["condition_value_not_in_question"] += 1
                continue
            data["cond_col"][0].append(SketchModel.cond_candidates(pieces[piece][0], columns))
            data["cond_col"][1].append(cond.column)
            data["op"][0].append(SketchModel.op_candidates(pieces[piece][0]))
            data["op"][1].append(OPS.index(cond.op))
    model = SketchModel()
    steps, fitting = 0, time.perf_counter()
    for part, (groups, targets) in data.items():
        getattr(model, part).fit(groups, targets, epochs=epochs, lr=learning_rate, seed=seed)
        steps += len(groups) * epochs
    ended = time.perf_counter()
    report = TrainReport(len(examples), used, dict(skipped), epochs, steps, tokens * epochs,
                         ended - started, ended - fitting)
    return model, report
