import sqlite3
from collections import Counter

import pytest

from fastdistill_assets.datasets import wikisql
from fastdistill_assets.teacher.baseline import parse_schema
from fastdistill_assets.training.sketch import Example, SketchModel, train_sketch
from fastdistill_assets.sqlsketch import Cond, Sketch, SketchError, sketch_to_sql, sql_to_sketch

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
