"""Random teacher mistakes: the embedded teacher's error profile (``teacher.error_profile``).

The clean baseline's mistakes are systematic (the same question is always read the same way).
A real teacher also makes random ones; here each answer draws, independently per kind with the
profile's probabilities, which mistakes it makes:

* ``wrong_column``: another existing column is selected;
* ``wrong_aggregate``: the aggregate is added, changed or dropped;
* ``drop_condition``: one WHERE condition is left out;
* ``extra_condition``: a condition on a value from the prompt's sample rows is added;
* ``perturbed_value``: a condition's literal is changed (a number moved, a string misspelt);
* ``hallucinated_column``: the SELECT column is named after its header, a column that does not
  exist (an execution error);
* ``prose_wrap``: the SQL comes in a code fence between lines of prose (cleaning recovers it).

The draw is seeded by the profile's seed, the user prompt and, above temperature 0, the request's
sampling seed: a run replays exactly and the response cache stays valid (the gateway names the
profile in the cache's endpoint identity). Every perturbation is a pure function of a
:class:`~fastdistill_assets.teacher.rule_teacher.Prediction`, the sample rows and a ``random.Random``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlglot import exp

from fastdistill_assets.config.models import TeacherErrorProfile
from fastdistill_assets.core.schema_text import SchemaColumn
from fastdistill_assets.core.sqlsketch import literal
from fastdistill_assets.teacher import rule_teacher
from fastdistill_assets.teacher.rule_teacher import Prediction

AGGREGATES = ("COUNT", "MAX", "MIN", "SUM", "AVG")
HALLUCINATED_SUFFIXES = ("name", "id", "value", "total")
Rows = Sequence[Sequence[Any]]
Perturbation = Callable[[Prediction, Rows, random.Random], Prediction]
WRAPS = (
    "Sure! Here is the SQL query:\n\n```sql\n{sql};\n```\n\nIt returns the value the question asks for.",
    "To answer this, I select the matching rows of the table.\n```sql\n{sql}\n```\nLet me know if you need more.",
    "```sqlite\n{sql}\n```\nThis query filters the table by the question's conditions.",
    "Here's how to get it:\n```\n{sql};\n```",
)


def draw_key(prompt: str, temperature: float, seed: int | None) -> str:
    """What an answer's draw depends on besides the profile: the prompt and, above temperature 0,
    the sampling seed (greedy answers are the same for every seed)."""
    sampling = f"seed={seed}" if temperature > 0 else "greedy"
    return hashlib.sha256(f"{sampling}\n{prompt}".encode()).hexdigest()


def draw_rng(profile: TeacherErrorProfile, key: str) -> random.Random:
    """The random stream of one answer under a profile."""
    return random.Random(f"{profile.seed}:{key}")


def draw_kinds(profile: TeacherErrorProfile, rng: random.Random) -> tuple[str, ...]:
    """The kinds drawn for one answer, each independently with its probability. One uniform is
    taken per kind whatever the rates, so raising one rate never changes another kind's draw."""
    return tuple(kind for kind, rate in profile.rates().items() if rng.random() < rate)


def _other_columns(prediction: Prediction, exclude: set[str]) -> list[SchemaColumn]:
    return [c for c in prediction.columns if c.name not in exclude]


def wrong_column(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Select another existing column (unchanged when the table has only one)."""
    others = _other_columns(prediction, {prediction.column})
    return dataclasses.replace(prediction, column=rng.choice(others).name) if others else prediction


def wrong_aggregate(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Replace the aggregate with another one, or none (add one where there was none)."""
    choices = [a for a in (*AGGREGATES, "") if a != prediction.agg]
    return dataclasses.replace(prediction, agg=rng.choice(choices))


def drop_condition(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Leave out one WHERE condition (unchanged when there is none)."""
    if not prediction.conditions:
        return prediction
    drop = rng.randrange(len(prediction.conditions))
    return dataclasses.replace(prediction, conditions=tuple(
        c for i, c in enumerate(prediction.conditions) if i != drop))


def _number(value: exp.Expr) -> float | None:
    """The value of a numeric literal (``-3`` included); None for a string."""
    if isinstance(value, exp.Literal) and value.is_string:
        return None
    try:
        return float(value.sql())
    except ValueError:
        return None


def perturb_literal(value: exp.Expr, rng: random.Random) -> exp.Expr:
    """A different literal: a number moved by 1 to 50 percent (at least 1), a string with one
    character dropped or two swapped (a trailing word dropped when it has several)."""
    number = _number(value)
    if number is not None:
        step = max(1.0, abs(number) * rng.uniform(0.01, 0.5))
        moved = number + (step if rng.random() < 0.5 else -step)
        moved = round(moved) if number.is_integer() else round(moved, 2)
        return literal(int(moved) if float(moved).is_integer() else moved, numeric=True)
    text = str(value.this) if isinstance(value, exp.Literal) else value.sql()
    words = text.split()
    if len(words) > 1 and rng.random() < 0.5:
        return literal(" ".join(words[:-1]), numeric=False)
    if len(text) < 2:
        return literal(text + "s", numeric=False)
    i = rng.randrange(len(text) - 1)
    swapped = text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return literal(swapped if swapped != text else text[:i] + text[i + 1:], numeric=False)


def perturbed_value(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Change the literal of one condition (unchanged when there is none)."""
    if not prediction.conditions:
        return prediction
    i = rng.randrange(len(prediction.conditions))
    name, op, value = prediction.conditions[i]
    conditions = list(prediction.conditions)
    conditions[i] = (name, op, perturb_literal(value, rng))
    return dataclasses.replace(prediction, conditions=tuple(conditions))


def extra_condition(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Add a condition on a column not yet constrained, with a value of one sample row (``=``, or
    ``<`` / ``>`` for a number); unchanged when the prompt shows no row of this table."""
    usable = [r for r in rows if isinstance(r, (list, tuple)) and len(r) == len(prediction.columns)]
    taken = {name for name, _, _ in prediction.conditions}
    free = [(i, c) for i, c in enumerate(prediction.columns) if c.name not in taken]
    if not usable or not free:
        return prediction
    row = rng.choice(usable)
    index, column = rng.choice(free)
    value = row[index]
    if value is None:
        return prediction
    numeric = column.kind == "real" and isinstance(value, (int, float))
    op = rng.choice(("=", "<", ">")) if numeric else "="
    number = int(value) if numeric and float(value).is_integer() else value
    condition = (column.name, op, literal(number if numeric else str(value), numeric=numeric))
    return dataclasses.replace(prediction, conditions=(*prediction.conditions, condition))


def hallucinated_name(prediction: Prediction, rng: random.Random) -> str:
    """A plausible column name the table does not have: the selected column's header in
    snake_case (a suffix added while that is taken)."""
    header = next((c.phrase for c in prediction.columns if c.name == prediction.column), prediction.column)
    name = re.sub(r"\W+", "_", header).strip("_").lower() or "value"
    name = name if name[0].isalpha() else f"col_{name}"
    taken = {c.name.lower() for c in prediction.columns}
    while name in taken:
        name = f"{name}_{rng.choice(HALLUCINATED_SUFFIXES)}"
    return name


def hallucinated_column(prediction: Prediction, rows: Rows, rng: random.Random) -> Prediction:
    """Select a column that does not exist (see :func:`hallucinated_name`)."""
    return dataclasses.replace(prediction, column=hallucinated_name(prediction, rng))


def prose_wrap(sql: str, rng: random.Random) -> str:
    """The SQL in a code fence between lines of prose, as chat models often answer."""
    return rng.choice(WRAPS).format(sql=sql)


PERTURBATIONS: dict[str, Perturbation] = {   # applied in this order; prose_wrap formats the reply
    "drop_condition": drop_condition,
    "perturbed_value": perturbed_value,
    "extra_condition": extra_condition,
    "wrong_aggregate": wrong_aggregate,
    "wrong_column": wrong_column,
    "hallucinated_column": hallucinated_column,
}


@dataclass(frozen=True)
class NoisyReply:
    """A reply under an error profile: its text, the kinds drawn and those that changed the SQL."""

    text: str
    drawn: tuple[str, ...]
    applied: tuple[str, ...]


def perturb(prediction: Prediction, rows: Rows, kinds: Sequence[str],
            rng: random.Random) -> tuple[Prediction, tuple[str, ...]]:
    """Apply the drawn kinds in :data:`PERTURBATIONS` order; returns the prediction and the kinds
    that changed its SQL."""
    applied = []
    for kind, perturbation in PERTURBATIONS.items():
        if kind in kinds:
            changed = perturbation(prediction, rows, rng)
            if changed.sql() != prediction.sql():
                applied.append(kind)
            prediction = changed
    return prediction, tuple(applied)


def answer(messages: list[dict[str, Any]], params: dict[str, Any] | None,
           profile: TeacherErrorProfile) -> NoisyReply:
    """The baseline's reply to a chat request with the profile's random mistakes."""
    prompt = rule_teacher.read_prompt(messages)
    temperature, seed = rule_teacher.decode_params(params)
    rng = draw_rng(profile, draw_key(prompt.user, temperature, seed))
    drawn = draw_kinds(profile, rng)
    rows = prompt.sections["rows"] if isinstance(prompt.sections["rows"], list) else []
    prediction, applied = perturb(rule_teacher.predict(prompt.question, prompt.schema, temperature, seed),
                                  rows, drawn, rng)
    sql = prediction.sql()
    if "prose_wrap" in drawn:
        text = prose_wrap(sql, rng)
        text, applied = (rule_teacher.rationale_reply(text) if prompt.rationale else text), (*applied, "prose_wrap")
    else:
        text = rule_teacher.format_reply(sql, prompt.question, prompt.rationale)
    return NoisyReply(text, drawn, applied)


def reply(messages: list[dict[str, Any]], params: dict[str, Any] | None = None,
          profile: TeacherErrorProfile | None = None) -> str:
    """The embedded teacher's reply: the clean baseline's with no profile (or a clean one)."""
    if profile is None or profile.is_clean:
        return rule_teacher.reply(messages, params)
    return answer(messages, params, profile).text
