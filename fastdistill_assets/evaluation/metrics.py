"""Accuracy with confidence intervals, and student-vs-teacher win rate."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.sqlsafe.execute import Executor
from fastdistill_assets.config import GoldGates
from fastdistill_assets.gates.gold import matches_gold
from fastdistill_assets.teacher.prompts import build_messages

Z95 = 1.959963984540054


def wilson_interval(successes: float, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a proportion (0, 0 for n = 0)."""
    if n == 0:
        return 0.0, 0.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class EvalItem:
    question: str
    schema: str
    sample_rows: str
    db_path: str
    dialect: str
    gold_sql: str
    evidence: str | None = None

    def messages(self) -> list[dict[str, str]]:
        """The prompt the teacher and the student answer (the training format)."""
        return build_messages(self.question, self.schema, self.sample_rows, evidence=self.evidence,
                              dialect=self.dialect)


def exec_correct(outputs: Sequence[str | None], items: Sequence[EvalItem], executor: Executor,
                 gold_config: GoldGates | None = None) -> list[bool]:
    """Whether each (cleaned) output executes to the gold result."""
    correct = []
    for output, item in zip(outputs, items, strict=True):
        sql = clean_sql(output).sql
        if not sql:
            correct.append(False)
            continue
        result = executor.run(item.db_path, item.dialect, sql)
        gold = executor.gold(item.db_path, item.dialect, item.gold_sql)
        correct.append(bool(result.ok and gold.ok and matches_gold(
            result.rows, gold.rows, item.gold_sql, gold_config or GoldGates())))
    return correct


@dataclass(frozen=True)
class Accuracy:
    correct: int
    n: int

    @property
    def value(self) -> float:
        return self.correct / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return wilson_interval(self.correct, self.n)

    def as_dict(self) -> dict[str, float | int]:
        low, high = self.ci95
        return {"accuracy": round(self.value, 6), "correct": self.correct, "n": self.n,
                "ci95_low": round(low, 6), "ci95_high": round(high, 6)}


@dataclass(frozen=True)
class WinRate:
    wins: int
    losses: int
    ties: int

    @property
    def n(self) -> int:
        return self.wins + self.losses + self.ties

    @property
    def rate(self) -> float:
        """(wins + ties / 2) / n: 0.5 means the student is as good as the teacher."""
        return (self.wins + self.ties / 2) / self.n if self.n else 0.0

    @property
    def lower_bound(self) -> float:
        return wilson_interval(self.wins + self.ties / 2, self.n)[0]

    def as_dict(self) -> dict[str, float | int]:
        return {"wins": self.wins, "losses": self.losses, "ties": self.ties, "online_win_rate": round(self.rate, 6),
                "online_win_rate_lower_bound": round(self.lower_bound, 6)}


def win_rate(student: Sequence[bool], teacher: Sequence[bool],
             judge_prefers_student: Sequence[bool | None] | None = None) -> WinRate:
    """Execution-correct beats incorrect; where both or neither are correct the judge decides, if any."""
    wins = losses = ties = 0
    for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
        if s != t:
            wins, losses = (wins + 1, losses) if s else (wins, losses + 1)
            continue
        verdict = judge_prefers_student[i] if judge_prefers_student else None
        if verdict is None:
            ties += 1
        elif verdict:
            wins += 1
        else:
            losses += 1
    return WinRate(wins, losses, ties)


def parity_lower_bound(n: int) -> float:
    """The teacher's lower bound: a student no worse than the teacher has a win rate of at least this."""
    return wilson_interval(n / 2, n)[0]
