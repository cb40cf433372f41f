import json
import sqlite3
from collections import Counter

import pytest

from fastdistill_assets.datasets import demo, wikisql
from fastdistill_assets.datasets.sqlite_schema import table_names
from fastdistill_assets_tests.wikisql_fixture import (
    GOOD,
    OFFICIAL_TABLE,
    TABLE,
    write_official_wikisql,
    write_wikisql,
)


@pytest.mark.parametrize("sketch, expected", [
    ({"sel": 0, "agg": 0, "conds": []}, "SELECT col0 FROM table_1_100_1"),
    ({"sel": 2, "agg": 1, "conds": [[1, 0, "Porto"]]}, "SELECT MAX(col2) FROM table_1_100_1 WHERE col1 = 'Porto'"),
    ({"sel": 2, "agg": 2, "conds": [[2, 1, "5"]]}, "SELECT MIN(col2) FROM table_1_100_1 WHERE col2 > 5"),
    ({"sel": 0, "agg": 3, "conds": [[2, 2, 7.5]]}, "SELECT COUNT(col0) FROM table_1_100_1 WHERE col2 < 7.5"),
    ({"sel": 2, "agg": 4, "conds": [[0, 0, "O'Neil"], [1, 0, "Lyon"]]},
     "SELECT SUM(col2) FROM table_1_100_1 WHERE col0 = 'O''Neil' AND col1 = 'Lyon'"),
    ({"sel": 2, "agg": 5, "conds": []}, "SELECT AVG(col2) FROM table_1_100_1"),
])
def test_sketch_to_sql(sketch, expected):
    assert wikisql.wikisql_to_sql("1-100-1", sketch, TABLE["types"]) == expected


@pytest.mark.parametrize("col, value, lower, where", [
    (1, "Porto", True, "col1 = 'porto'"),
    (1, "Porto", False, "col1 = 'Porto'"),
    (1, "São Paulo", True, "col1 = 'são paulo'"),
    (0, "ÑÚÑEZ Zoë", True, "col0 = 'ñúñez zoë'"),
    (1, 1998.0, True, "col1 = '1998'"),      # a number on a text column reads as the DB's text holds it
    (1, 1998, False, "col1 = '1998'"),
    (1, 4.5, False, "col1 = '4.5'"),
    (2, 4.5, True, "col2 = 4.5"),            # real columns keep comparing as numbers
    (2, 1998.0, True, "col2 = 1998"),
    (2, "1,234", True, "col2 = 1234"),
    (2, "NaN", False, "col2 = 'NaN'"),       # not a finite number: compared as text
])
def test_condition_literals(col, value, lower, where):
    sketch = {"sel": 0, "agg": 0, "conds": [[col, 0, value]]}
    assert wikisql.wikisql_to_sql("1-100-1", sketch, TABLE["types"], lower).endswith(f"WHERE {where}")


@pytest.mark.parametrize("sketch, reason", [
    ({"sel": 9, "agg": 0, "conds": []}, "bad_column_index"),
    ({"sel": 0, "agg": 7, "conds": []}, "bad_aggregate"),
    ({"sel": 0, "agg": 0, "conds": [[1, 3, "x"]]}, "bad_operator"),
    ({"sel": 0, "agg": 0, "conds": [[1, 0]]}, "bad_condition"),
])
def test_sketch_to_sql_rejects_bad_sketches(sketch, reason):
    with pytest.raises(ValueError, match=reason):
        wikisql.wikisql_to_sql("1-100-1", sketch, TABLE["types"])


def test_wikisql_loader_good_row_executes(tmp_path):
    folder = write_wikisql(tmp_path, "train", [GOOD])
    [row] = wikisql.load_split(folder, "train")
    assert row["reject_reason"] is None
    assert row["gold_sql"] == "SELECT col2 FROM table_1_100_1 WHERE col0 = 'Ana Silva'"
    assert "col2 REAL -- Goals" in row["schema"] and "col0 TEXT, -- Player" in row["schema"]
    with sqlite3.connect(row["db_path"]) as db:
        assert db.execute(row["gold_sql"]).fetchall() == [(12.0,)]
    assert row["gold_empty"] is False
    assert row["sample_rows"].startswith('[["Ana Silva", "Porto", 12.0], ')  # the DB's REAL, not the file's 12


def test_wikisql_loader_counts_bad_rows_without_crashing(tmp_path):
    other = {**TABLE, "id": "1-200-1"}
    broken = {**TABLE, "id": "1-300-1", "types": ["text"]}                   # header and types disagree
    questions = [
        GOOD,
        {**GOOD, "table_id": "1-300-1"},                                       # unknown table (a broken one)
        {"table_id": "1-100-1", "sql": GOOD["sql"]},                          # no question
        {**GOOD, "table_id": "9-999-9"},                                       # unknown table
        {**GOOD, "sql": {"sel": 0, "agg": 0, "conds": [[1, 3, "x"]]}},         # bad operator
        {**GOOD, "table_id": "1-200-1", "sql": {"sel": 2, "agg": 0, "conds": []}},  # col2 missing in DB
        '{"table_id": "1-100-1", "question": ',                               # malformed JSON
    ]
    folder = write_wikisql(tmp_path, "dev", questions, tables=[TABLE, other, broken],
                           db_columns={"1-200-1": 2, "1-300-1": 1})
    rows = wikisql.load_split(folder, "dev")
    assert len(rows) == len(questions)
    assert Counter(r["reject_reason"] for r in rows) == Counter({
        None: 1, "missing_field:question": 1, "unknown_table": 2, "bad_operator": 1, "gold_sql_failed": 1,
        "malformed_json": 1})
    failed = next(r for r in rows if r["reject_reason"] == "gold_sql_failed")
    assert "no such column" in failed["reject_detail"]
    assert all(r["raw_record"] for r in rows if r["reject_reason"])


def test_wikisql_loader_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        wikisql.load_split(write_wikisql(tmp_path, "train", [GOOD]), "test")


def _sketch(sel, agg, *conds):
    return {"phase": 1, "table_id": OFFICIAL_TABLE["id"], "question": "?", "sql": {"sel": sel, "agg": agg,
                                                                                   "conds": list(conds)}}


# (question, the gold query's rows on the official layout, has a string condition)
OFFICIAL_CASES = [
    (_sketch(0, 0, [1, 0, "São Paulo"]), [("ñúñez ortiz",)], True),
    (_sketch(1, 0, [0, 0, "Zoë Åberg"]), [("malmö",)], True),           # the question's case is not the table's
    (_sketch(3, 1, [1, 0, "Lyon"]), [(7.25,)], True),                   # MAX over no rows: only a NULL
    (_sketch(2, 0, [0, 0, "Ben O'Hara"], [3, 2, "10"]), [("2001",)], True),
    (_sketch(0, 0, [2, 0, 1998.0]), [("ñúñez ortiz",), ("zoë åberg",)], False),   # a number on a text column
    (_sketch(0, 0, [2, 0, 2003]), [("cai xu",)], False),
    (_sketch(0, 0, [3, 1, 4.5]), [("ben o'hara",), ("cai xu",)], False),           # a float on a real column
]


def test_official_layout_gold_queries_return_their_rows_without_a_setting(tmp_path):
    folder = write_official_wikisql(tmp_path, "dev", [q for q, _, _ in OFFICIAL_CASES])
    rows = wikisql.load_split(folder, "dev")
    assert [r["reject_reason"] for r in rows] == [None] * len(OFFICIAL_CASES)
    with sqlite3.connect(folder / "dev.db") as db:
        assert [sorted(db.execute(r["gold_sql"]).fetchall()) for r in rows] == [sorted(e) for _, e, _ in OFFICIAL_CASES]
    assert [r["gold_empty"] for r in rows] == [False] * len(OFFICIAL_CASES)


@pytest.mark.parametrize("sample_rows", [3, 1])
def test_official_layout_sample_rows_come_from_the_database(tmp_path, sample_rows):
    folder = write_official_wikisql(tmp_path, "dev", [q for q, _, _ in OFFICIAL_CASES[:2]])
    db_rows = [["ñúñez ortiz", "são paulo", "1998", 4.5], ["ben o'hara", "lyon", "2001", 7.25],
               ["zoë åberg", "malmö", "1998", 3.0]][:sample_rows]
    for row in wikisql.load_split(folder, "dev", sample_rows=sample_rows):
        assert json.loads(row["sample_rows"]) == db_rows


def test_explicit_lower_values_false_leaves_string_conditions_empty_on_the_official_layout(tmp_path):
    folder = write_official_wikisql(tmp_path, "dev", [q for q, _, _ in OFFICIAL_CASES])
    rows = wikisql.load_split(folder, "dev", lower_values=False)
    assert [r["gold_empty"] for r in rows] == [has_string for _, _, has_string in OFFICIAL_CASES]
    assert sum(r["gold_empty"] for r in rows) == 4


def test_explicit_lower_values_true_overrides_detection_on_original_case_data(tmp_path):
    folder = write_wikisql(tmp_path, "train", [GOOD])
    [detected] = wikisql.load_split(folder, "train")
    [forced] = wikisql.load_split(folder, "train", lower_values=True)
    assert (detected["gold_empty"], forced["gold_empty"]) == (False, True)
    assert forced["gold_sql"].endswith("col0 = 'ana silva'")


LOWER_TABLE = {"id": "1-300-1", "header": ["Name", "Goals"], "types": ["text", "real"],
               "rows": [["ana", 1], ["ben", 2]]}


@pytest.mark.parametrize("write, max_tables, expected", [
    (write_official_wikisql, wikisql.DETECT_TABLES, True),
    (write_official_wikisql, 0, False),                                          # nothing compared
    (write_wikisql, wikisql.DETECT_TABLES, False),                               # DB in the original case
    (lambda f, s, q: write_wikisql(f, s, q, tables=[LOWER_TABLE], lower_db_text=True),
     wikisql.DETECT_TABLES, False),                                              # no mixed-case text to compare
])
def test_detect_lower_values(tmp_path, write, max_tables, expected):
    folder = write(tmp_path, "dev", [])
    with sqlite3.connect(folder / "dev.db") as db:
        assert wikisql.detect_lower_values(wikisql.load_tables(folder / "dev.tables.jsonl"), db,
                                           max_tables) is expected


@pytest.mark.parametrize("split", list(demo.SPLITS))
def test_demo_dataset_keeps_its_original_case(demo_dataset, split):
    with sqlite3.connect(demo_dataset / f"{split}.db") as db:
        assert wikisql.detect_lower_values(wikisql.load_tables(demo_dataset / f"{split}.tables.jsonl"), db) is False


@pytest.mark.parametrize("source", ["official", "original_case", "demo"])
def test_tables_keep_rows_only_for_the_lower_case_detection(tmp_path, demo_dataset, source):
    """Only the first `keep` tables present in the database keep their rows (the detection reads
    no others), and the detection decides as it does with every table's rows."""
    writers = {"official": write_official_wikisql, "original_case": write_wikisql}
    folder = demo_dataset if source == "demo" else writers[source](tmp_path, "dev", [])
    with sqlite3.connect(folder / "dev.db") as db:
        existing = set(table_names(db))
        whole = wikisql.load_tables(folder / "dev.tables.jsonl")
        present = [t for t in whole if wikisql.table_name(t) in existing]
        for keep in (0, 1, 3, wikisql.DETECT_TABLES):
            lean = wikisql.load_tables(folder / "dev.tables.jsonl", existing, keep)
            assert lean.keys() == whole.keys()
            assert [t for t in lean if "rows" in lean[t]] == present[:keep]
            assert all(lean[t]["header"] == whole[t]["header"] and lean[t]["types"] == whole[t]["types"] for t in lean)
            assert (wikisql.detect_lower_values(lean, db, keep or 1) is wikisql.detect_lower_values(whole, db, keep or 1)
                    or keep == 0)
    if source == "demo":
        assert len(present) > 3
