"""The ungated baseline's training set: what the student would learn without the quality gates."""

from __future__ import annotations

import polars as pl

# The baseline learns the teacher's cleaned answer, whatever the gates said of it.
UNGATED_SQL_COLUMN = "cleaned_sql"


def ungated_training_set(filtered: pl.DataFrame) -> pl.DataFrame:
    """The teacher's first answer to every question, right or wrong: the rows of ``filtered``
    without a teacher error, the lowest ``generation_index`` per ``sample_id`` (in that order).
    The first teacher's only: an escalated answer exists because the gates asked for it."""
    first_teacher = pl.col("label_source").fill_null("") != "escalated"
    return (filtered.filter(pl.col("error").is_null() & first_teacher).sort("generation_index", maintain_order=True)
            .unique("sample_id", keep="first", maintain_order=True))
