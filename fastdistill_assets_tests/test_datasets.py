import sqlite3
from collections import Counter

import pytest

from fastdistill_assets.datasets import spider, wikisql
from fastdistill_assets_tests.wikisql_fixture import TABLE, write_spider, write_wikisql

GOOD = {"phase": 1, "table_id": "1-100-1", "question": "How many goals did Ana Silva score?",
        "sql": {"sel": 2, "agg": 0, "conds": [[0, 0, "Ana Silva"]]}}


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
    assert wikisql.sketch_to_sql("1-100-1", sketch, TABLE["types"]) == expected


def test_sketch_to_sql_lower_values_for_official_release():
    sql = wikisql.sketch_to_sql("1-100-1", {"sel": 0, "agg": 0, "conds": [[1, 0, "Porto"]]}, TABLE["types"], True)
    assert sql.endswith("col1 = 'porto'")


@pytest.mark.parametrize("sketch, reason", [
    ({"sel": 9, "agg": 0, "conds": []}, "bad_column_index"),
    ({"sel": 0, "agg": 7, "conds": []}, "bad_aggregate"),
    ({"sel": 0, "agg": 0, "conds": [[1, 3, "x"]]}, "bad_operator"),
    ({"sel": 0, "agg": 0, "conds": [[1, 0]]}, "bad_condition"),
])
def test_sketch_to_sql_rejects_bad_sketches(sketch, reason):
    with pytest.raises(ValueError, match=reason):
        wikisql.sketch_to_sql("1-100-1", sketch, TABLE["types"])


def test_wikisql_loader_good_row_executes(tmp_path):
    folder = write_wikisql(tmp_path, "train", [GOOD])
    [row] = wikisql.load_split(folder, "train")
    assert row["reject_reason"] is None
    assert row["gold_sql"] == "SELECT col2 FROM table_1_100_1 WHERE col0 = 'Ana Silva'"
    assert "col2 REAL -- Goals" in row["schema"] and "col0 TEXT, -- Player" in row["schema"]
    with sqlite3.connect(row["db_path"]) as db:
        assert db.execute(row["gold_sql"]).fetchall() == [(12.0,)]


def test_wikisql_loader_counts_bad_rows_without_crashing(tmp_path):
    other = {**TABLE, "id": "1-200-1"}
    questions = [
        GOOD,
        {"table_id": "1-100-1", "sql": GOOD["sql"]},                          # no question
        {**GOOD, "table_id": "9-999-9"},                                       # unknown table
        {**GOOD, "sql": {"sel": 0, "agg": 0, "conds": [[1, 3, "x"]]}},         # bad operator
        {**GOOD, "table_id": "1-200-1", "sql": {"sel": 2, "agg": 0, "conds": []}},  # col2 missing in DB
        '{"table_id": "1-100-1", "question": ',                               # malformed JSON
    ]
    folder = write_wikisql(tmp_path, "dev", questions, tables=[TABLE, other], db_columns={"1-200-1": 2})
    rows = wikisql.load_split(folder, "dev")
    assert len(rows) == len(questions)
    assert Counter(r["reject_reason"] for r in rows) == Counter({
        None: 1, "missing_field:question": 1, "unknown_table": 1, "bad_operator": 1, "gold_sql_failed": 1,
        "malformed_json": 1})
    failed = next(r for r in rows if r["reject_reason"] == "gold_sql_failed")
    assert "no such column" in failed["reject_detail"]
    assert all(r["raw_record"] for r in rows if r["reject_reason"])


def test_wikisql_loader_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="test.jsonl"):
        wikisql.load_split(write_wikisql(tmp_path, "train", [GOOD]), "test")


def test_spider_loader(tmp_path):
    items = [
        {"db_id": "club", "question": "Who scored most?", "query": "SELECT name FROM player ORDER BY goals DESC LIMIT 1"},
        {"db_id": "club", "question": "Bad gold", "query": "SELECT nope FROM player"},
        {"db_id": "missing", "question": "Unknown db", "query": "SELECT 1"},
        {"db_id": "club", "query": "SELECT 1"},
        "not a record",
    ]
    rows = spider.load_split(write_spider(tmp_path, items), "train")
    assert [r["reject_reason"] for r in rows] == [
        None, "gold_sql_failed", "unknown_database", "missing_field:question", "malformed_record"]
    assert "CREATE TABLE player" in rows[0]["schema"]
    assert rows[0]["sample_rows"].startswith('[["Ana Silva"')
