"""Accuracy with confidence intervals, student-vs-teacher win rate, and paired student-vs-baseline tests."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from fastdistill_assets.config.models import GoldGates
from fastdistill_assets.core.prompt_format import build_messages
from fastdistill_assets.core.proportions import Z95, wilson_interval
from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.gates.gold import matches_gold
from fastdistill_assets.sqlsafe.execute import Executor


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


@dataclass(frozen=True)
class PairedComparison:
    """Two models scored on the same questions: the 2x2 table of per-question correctness.

    ``first_only`` (b) counts questions the first model got right and the second wrong,
    ``second_only`` (c) the reverse; ``both`` and ``neither`` are the concordant counts.
    """

    both: int
    first_only: int
    second_only: int
    neither: int

    @property
    def n(self) -> int:
        return self.both + self.first_only + self.second_only + self.neither

    @property
    def difference(self) -> float:
        """First accuracy minus second accuracy: (b - c) / n."""
        return (self.first_only - self.second_only) / self.n if self.n else 0.0

    @property
    def ci95(self) -> tuple[float, float]:
        return newcombe_paired_interval(self.both, self.first_only, self.second_only, self.neither)

    @property
    def mcnemar_p(self) -> float:
        return mcnemar_exact_p(self.first_only, self.second_only)

    def as_dict(self, first: str, second: str) -> dict[str, float | int | str]:
        """The table and the figures, the discordant counts named ``<first>_only`` (b) and ``<second>_only`` (c)."""
        low, high = self.ci95
        return {"both_correct": self.both, f"{first}_only": self.first_only, f"{second}_only": self.second_only,
                "neither_correct": self.neither, "n": self.n, "difference": round(self.difference, 6),
                "ci95_low": round(low, 6), "ci95_high": round(high, 6), "ci_method": PAIRED_CI_METHOD,
                "mcnemar_p": float(f"{self.mcnemar_p:.6g}"), "test": MCNEMAR_TEST}  # small p: significant digits


PAIRED_CI_METHOD = "Newcombe (1998) method 10: square-and-add of Wilson intervals, corrected for correlation"
MCNEMAR_TEST = "exact McNemar: two-sided binomial test of b of b + c discordant questions at 0.5"


def paired_comparison(first: Sequence[bool], second: Sequence[bool]) -> PairedComparison:
    """The 2x2 table of two models' correctness on the same questions, in the same order."""
    pairs = list(zip(first, second, strict=True))
    return PairedComparison(both=sum(f and s for f, s in pairs), first_only=sum(f and not s for f, s in pairs),
                            second_only=sum(s and not f for f, s in pairs),
                            neither=sum(not f and not s for f, s in pairs))


def mcnemar_exact_p(b: int, c: int) -> float:
    """Exact McNemar p-value: two-sided binomial test of ``b`` successes in ``b + c`` trials at 0.5.

    ``min(1, 2 * P(X <= min(b, c)))`` with X ~ Binomial(b + c, 1/2); 1.0 with no discordant pair.
    """
    m = b + c
    tail = sum(math.comb(m, k) for k in range(min(b, c) + 1)) / 2 ** m
    return min(1.0, 2 * tail)


def newcombe_paired_interval(a: int, b: int, c: int, d: int, z: float = Z95) -> tuple[float, float]:
    """Newcombe's (1998, method 10) interval for p1 - p2 from a paired table (p1 = (a+b)/n, p2 = (a+c)/n).

    Square-and-add of the two Wilson intervals, with the correlation estimate phi of the two
    proportions (the product-moment correlation of the table, its numerator ad - bc shrunk
    towards 0 by n/2 when positive, 0 when a margin is empty). Clipped to [-1, 1].
    """
    n = a + b + c + d
    if n == 0:
        return 0.0, 0.0
    p1, p2 = (a + b) / n, (a + c) / n
    (l1, u1), (l2, u2) = wilson_interval(a + b, n, z), wilson_interval(a + c, n, z)
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    cross = a * d - b * c
    shrunk = cross - n / 2 if cross > n / 2 else (0.0 if cross >= 0 else cross)
    phi = shrunk / math.sqrt(margins) if margins else 0.0
    diff = p1 - p2
    lower = diff - math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = diff + math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, lower), min(1.0, upper)


def parity_lower_bound(n: int) -> float:
    """The teacher's lower bound: a student no worse than the teacher has a win rate of at least this."""
    return wilson_interval(n / 2, n)[0]
