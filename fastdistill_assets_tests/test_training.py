import sqlite3
from collections import Counter

import numpy as np
import pytest

from fastdistill_assets.core.schema_text import parse_schema
from fastdistill_assets.core.sqlsketch import (
    Cond,
    Sketch,
    SketchError,
    sketch_to_sql,
    sql_to_sketch,
)
from fastdistill_assets.datasets import wikisql
from fastdistill_assets.training.linear import Ranker
from fastdistill_assets.training.sketch import Example, SketchModel, train_sketch

SCHEMA = "CREATE TABLE t (\n  col0 TEXT, -- Player\n  col1 TEXT, -- Club\n  col2 REAL -- Goals\n)"
COLUMNS = [c.name for c in parse_schema(SCHEMA)[1]]


@pytest.mark.parametrize("sql, sketch", [
    ("SELECT col0 FROM t", Sketch(0, "")),
    ("SELECT MAX(col2) FROM t WHERE col1 = 'Porto'", Sketch(2, "MAX", (Cond(1, "=", "Porto", False),))),
    ("SELECT COUNT(col0) FROM t WHERE (col2 > 3 AND col1 = 'A') AND col2 < 9",
     Sketch(0, "COUNT", (Cond(2, ">", "3", True), Cond(1, "=", "A", False), Cond(2, "<", "9", True)))),
])
def test_sql_to_sketch_round_trip(sql, sketch):
    assert sql_to_sketch(sql, COLUMNS) == sketch
    assert sql_to_sketch(sketch_to_sql(sketch, "t", COLUMNS), COLUMNS) == sketch


@pytest.mark.parametrize("sql, reason", [
    ("SELECT founding_year FROM t", "unknown_column"),
    ("SELECT col0, col1 FROM t", "not_single_select"),
    ("SELECT col0 FROM t ORDER BY col2", "unsupported_clause"),
    ("SELECT col0 FROM t WHERE col2 >= 3", "unsupported_where"),
    ("SELECT col0 FROM t WHERE col2 = 3 OR col2 = 4", "unsupported_where"),
    ("SELECT FROM WHERE", "parse_error"),
])
def test_sql_outside_the_sketch_is_a_counted_reason(sql, reason):
    with pytest.raises(SketchError) as err:
        sql_to_sketch(sql, COLUMNS)
    assert err.value.reason == reason


def _examples(folder, split):
    return [Example(r["question"], r["schema"], r["gold_sql"]) for r in wikisql.load_split(folder, split)]


def _accuracy(model, folder, split):
    rows = wikisql.load_split(folder, split)
    db = sqlite3.connect(rows[0]["db_path"])
    correct = 0
    for r in rows:
        try:
            got = Counter(db.execute(model.predict(r["question"], r["schema"])).fetchall())
        except sqlite3.Error:
            continue
        correct += got == Counter(db.execute(r["gold_sql"]).fetchall())
    return correct / len(rows)


def test_sketch_student_learns_from_gold_and_generalizes_to_unseen_tables(demo_dataset, tmp_path):
    train = _examples(demo_dataset, "train")[:800] + [Example("q?", SCHEMA, "SELECT nope FROM t")]
    model, report = train_sketch(train, epochs=8)
    assert report.used == 800 and report.skipped_by_reason == {"unknown_column": 1}
    assert report.train_tokens_per_sec > 0 and report.steps > 0
    untrained = _accuracy(SketchModel(), demo_dataset, "dev")
    trained = _accuracy(model, demo_dataset, "dev")
    assert trained > 0.75 and trained > untrained + 0.3
    model.save(tmp_path / "m")
    loaded = SketchModel.load(tmp_path / "m")
    questions = wikisql.load_split(demo_dataset, "dev")[:50]
    assert [loaded.predict(q["question"], q["schema"]) for q in questions] == \
        [model.predict(q["question"], q["schema"]) for q in questions]


def test_ranker_applies_a_repeated_slots_gradient_once_per_occurrence():
    ranker = Ranker(dim=8)
    ranker.fit([[np.array([3, 3, 5]), np.array([3])]], [0], epochs=1, lr=1.0, l2=0.0)
    # Scores 0 and 0, so probabilities 1/2 and 1/2. Candidate 0 (the target), gradient -1/2: slot 3
    # occurs twice, g = -1, G = 1, w3 = 0 + 1/1 = 1; slot 5, g = -1/2, G = 1/4, w5 = (1/2)/(1/2) = 1.
    # Candidate 1, gradient +1/2: slot 3, g = 1/2, G = 1 + 1/4, w3 = 1 - (1/2)/sqrt(5/4) = 1 - 1/sqrt(5).
    assert ranker._g2[3] == pytest.approx(1.25) and ranker._g2[5] == pytest.approx(0.25)
    assert ranker.w[3] == pytest.approx(1 - 1 / np.sqrt(5)) and ranker.w[5] == pytest.approx(1.0)
    assert ranker.scores([np.array([3, 3, 5])])[0] == pytest.approx(2 * ranker.w[3] + ranker.w[5])
