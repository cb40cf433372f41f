"""The generic `questions` dataset kind: JSONL / CSV / parquet over SQLite and DuckDB files."""

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest

from fastdistill_assets.config.models import DatasetConfig, ExecutionGates
from fastdistill_assets.datasets.databases import DatabaseCatalog, detect_dialect
from fastdistill_assets.datasets.load import is_withheld, load_dataset
from fastdistill_assets.datasets.questions import gold_counts
from fastdistill_assets_tests.conftest import write_questions
from fastdistill_assets_tests.db_fixtures import SALES, make_shop

TOTAL_NORTH = "SELECT SUM(amount) FROM sales WHERE region = 'North'"
ROWS = [
    {"question_id": "q-labeled", "question": "What is the total amount when region is North?", "db_id": "shop",
     "gold_sql": TOTAL_NORTH},
    {"question": "Which region has product of Cocoa?", "db_path": "dbs/shop.duckdb",
     "evidence": "Cocoa is sold in one region only."},
    {"question": "   ", "db_id": "shop"},
    {"question": "How many stores are there?", "db_id": "warehouse"},
    {"question": "What is the mean amount?", "db_id": "shop", "gold_sql": "SELECT AVG(amnt) FROM sales"},
    {"question": "Which city has store name of Harbor?"},
    {"question": "What is the highest amount?", "db_id": "shop", "split": "test", "gold_sql": "SELECT MAX(amount) FROM sales"},
    {"question": "What is the lowest amount?", "db_id": "shop", "split": "dev"},
]


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    (tmp_path / "databases").mkdir()
    (tmp_path / "questions" / "dbs").mkdir(parents=True)
    make_shop(tmp_path / "databases" / "shop.sqlite")
    make_shop(tmp_path / "questions" / "dbs" / "shop.duckdb")
    return tmp_path


def _config(layout: Path, path: Path, **kwargs) -> DatasetConfig:
    return DatasetConfig(kind="questions", path=str(path), databases=str(layout / "databases"),
                         splits=["train", "test"], **kwargs)


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".parquet"])
def test_loads_every_format_with_and_without_gold_and_counts_bad_rows(layout, suffix):
    path = write_questions(layout / "questions" / f"q{suffix}", ROWS,
                           malformed_line='{"question": "broken' if suffix == ".jsonl" else None)
    raw = load_dataset(_config(layout, path), layout / "data").frame

    good = raw.filter(pl.col("reject_reason").is_null())
    assert good["question"].to_list() == [ROWS[0]["question"], ROWS[1]["question"], ROWS[6]["question"]]
    labeled, gold_free, test = good.rows(named=True)
    assert (labeled["source_id"], labeled["gold_sql"], labeled["dialect"], labeled["split"]) == \
        ("q-labeled", TOTAL_NORTH, "sqlite", "train")
    assert gold_free["gold_sql"] is None and gold_free["dialect"] == "duckdb" and gold_free["db_id"] == "dbs/shop.duckdb"
    assert gold_free["evidence"] == "Cocoa is sold in one region only."
    assert gold_free["db_path"] == str((layout / "questions" / "dbs" / "shop.duckdb").resolve())
    assert test["split"] == "test"
    assert "CREATE TABLE sales" in labeled["schema"] and "CREATE TABLE stores" in labeled["schema"]
    assert set(json.loads(labeled["sample_rows"])) == {"sales", "stores"}

    reasons = dict(raw.filter(pl.col("reject_reason").is_not_null()).group_by("reject_reason").len().iter_rows())
    expected = {"missing_field:question": 1, "unknown_database": 1, "gold_sql_failed": 1,
                "missing_field:db_path_or_db_id": 1}
    if suffix == ".jsonl":
        expected["malformed_json"] = 1
    assert reasons == expected
    # the dev row is outside the configured splits: not loaded, not a reject
    assert raw.height == 3 + sum(expected.values())
    failed = raw.filter(pl.col("reject_reason") == "gold_sql_failed").row(0, named=True)
    assert "amnt" in failed["reject_detail"] and json.loads(failed["raw_record"])["gold_sql"].endswith("sales")


def test_sample_rows_cover_every_table_within_bounds(layout):
    for per_table, total, expected in [(2, 3, {"sales": 2, "stores": 1}), (2, 2, {"sales": 2, "stores": 0}),
                                       (5, 30, {"sales": 5, "stores": 3})]:
        with DatabaseCatalog(per_table, total) as catalog:
            database = catalog.get(layout / "databases" / "shop.sqlite")
        assert {t: len(r) for t, r in database.sample_rows.items()} == expected
    assert database.sample_rows["sales"][0] == list(SALES[0])


def test_dialect_comes_from_the_file_header(layout):
    copy = layout / "databases" / "renamed.sqlite"
    copy.write_bytes((layout / "questions" / "dbs" / "shop.duckdb").read_bytes())
    assert detect_dialect(copy) == "duckdb"
    not_a_db = layout / "databases" / "notes.db"
    not_a_db.write_text("hello")
    with DatabaseCatalog(3, 30) as catalog:
        assert "not a SQLite or DuckDB database" in catalog.get(not_a_db)


def test_missing_or_unsupported_questions_file_is_a_clear_error(layout):
    with pytest.raises(FileNotFoundError, match="questions file not found"):
        load_dataset(_config(layout, layout / "nope.jsonl"), layout / "data")
    (layout / "q.txt").write_text("question\n")
    with pytest.raises(ValueError, match=r"must be a \.jsonl, \.csv, \.parquet file"):
        load_dataset(_config(layout, layout / "q.txt"), layout / "data")
    with pytest.raises(ValueError, match="needs dataset.path"):
        load_dataset(DatasetConfig(kind="questions"), layout / "data")


def test_withheld_gold_moves_aside_for_a_stable_share(layout):
    rows = [{"question": f"What is the total amount when year is {2000 + i}?", "db_id": "shop",
             "gold_sql": f"SELECT SUM(amount) FROM sales WHERE year = {2000 + i}"} for i in range(400)]
    path = write_questions(layout / "questions" / "many.jsonl", rows)
    raw = load_dataset(_config(layout, path, withhold_gold={"share": 0.25, "splits": ["train"]}), layout / "data").frame
    withheld = raw.filter(pl.col("withheld_gold_sql").is_not_null())
    assert withheld["gold_sql"].null_count() == withheld.height
    assert raw.filter(pl.col("gold_sql").is_not_null())["withheld_gold_sql"].null_count() == raw.height - withheld.height
    assert withheld.height == sum(is_withheld(s, 0.25) for s in raw["source_id"]) and 70 <= withheld.height <= 130
    again = load_dataset(_config(layout, path, withhold_gold={"share": 0.25, "splits": ["train"]}), layout / "data").frame
    assert again.equals(raw)


def test_gold_counts_read_every_row_of_the_file(layout):
    path = write_questions(layout / "questions" / "q.jsonl", ROWS)
    expected = Counter()
    for row in ROWS:
        expected[row.get("split", "train")] += row.get("gold_sql") is not None
    assert gold_counts(_config(layout, path)) == expected and set(expected) >= {"train", "test"}
    unlabeled = write_questions(layout / "questions" / "u.jsonl", [{**r, "gold_sql": None} for r in ROWS])
    counts = gold_counts(_config(layout, unlabeled))
    assert set(counts) == set(expected) and sum(counts.values()) == 0


def test_gold_runs_under_the_gates_guards(layout):
    """A user's gold SQL is executed read-only, time-limited, without file access: a gold that
    writes, reads files or runs away is a counted reject, and nothing is written."""
    written = layout / "pwned.csv"
    rows = [{"question": "q1", "db_path": "dbs/shop.duckdb", "gold_sql": f"COPY (SELECT 42) TO '{written}'"},
            {"question": "q2", "db_path": "dbs/shop.duckdb", "gold_sql": "SELECT * FROM read_csv('/etc/hostname')"},
            {"question": "q3", "db_id": "shop", "gold_sql": "PRAGMA table_info(sales)"},
            {"question": "q4", "db_id": "shop", "gold_sql":
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT COUNT(*) FROM c"}]
    path = write_questions(layout / "questions" / "hostile.jsonl", rows)
    raw = load_dataset(_config(layout, path), layout / "data", ExecutionGates(timeout_ms=200)).frame
    assert raw["reject_reason"].to_list() == ["gold_sql_failed"] * 4
    assert [d.split(":")[0] for d in raw["reject_detail"]] == ["not_authorized", "not_authorized",
                                                               "not_authorized", "timeout"]
    assert not written.exists()


def test_odd_rows_are_counted_not_lost_or_crashing(layout):
    rows = [{"question": {"text": "not a string"}, "db_id": "shop"},
            {"question": "q", "db_id": "../databases/shop"},
            {"question": "q", "db_path": "dbs/bad\u0000name.duckdb"},
            {"question": "What is the lowest amount?", "db_id": "shop", "split": "test"}]
    path = layout / "questions" / "odd.jsonl"
    path.write_text("\ufeff" + "\n".join(json.dumps(r) for r in rows) + "\n{not json\n[1, 2]\n")
    raw = load_dataset(DatasetConfig(kind="questions", path=str(path), databases=str(layout / "databases"),
                                     splits=["test"]), layout / "data").frame
    assert list(zip(raw["split"], raw["reject_reason"], strict=True)) == [
        ("test", None), ("unknown", "malformed_json"), ("unknown", "malformed_record")]
    raw = load_dataset(DatasetConfig(kind="questions", path=str(path), databases=str(layout / "databases"),
                                     splits=["train"]), layout / "data").frame
    assert raw["reject_reason"].to_list() == ["malformed_field:question", "unknown_database", "unknown_database",
                                              "malformed_json", "malformed_record"]
    assert "not a path" in raw["reject_detail"][1] and "null byte" in raw["reject_detail"][2]


def test_views_are_part_of_the_schema(tmp_path):
    import duckdb

    path = tmp_path / "views.duckdb"
    db = duckdb.connect(str(path))
    db.execute("CREATE SCHEMA raw")
    db.execute("CREATE TABLE raw.orders AS SELECT range AS id, range * 10 AS total FROM range(5)")
    db.execute("CREATE VIEW big_orders AS SELECT id, total FROM raw.orders WHERE total > 20")
    db.close()
    with DatabaseCatalog(2, 10) as catalog:
        database = catalog.get(path)
    assert database.sample_rows == {"raw.orders": [[0, 0], [1, 10]], "big_orders": [[3, 30], [4, 40]]}
    assert "CREATE TABLE raw.orders" in database.schema and "CREATE VIEW big_orders" in database.schema


# -- input is never changed silently (issue 24 item 6) ------------------------------------------

BAD_BYTES = b"caf\xe9 \xff"   # Latin-1 and a stray byte: not UTF-8
PLACEHOLDER = "BADBYTES"


def _with_bad_bytes(path: Path) -> Path:
    path.write_bytes(path.read_bytes().replace(PLACEHOLDER.encode(), BAD_BYTES))
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_invalid_utf8_is_a_counted_reject_in_every_text_format(layout, suffix):
    rows = [{"question": ROWS[0]["question"], "db_id": "shop"},
            {"question": f"Which region sells {PLACEHOLDER}?", "db_id": "shop"},
            {"question": "Which région has product of Cocoa? ¿ \ufffd", "db_id": "shop"}]  # real non-ASCII, kept
    path = _with_bad_bytes(write_questions(layout / "questions" / f"enc{suffix}", rows))
    raw = load_dataset(_config(layout, path), layout / "data").frame

    assert raw["reject_reason"].to_list() == [None, "malformed_encoding", None]
    assert raw["question"].to_list()[::2] == [rows[0]["question"], rows[2]["question"]]
    bad = raw.row(1, named=True)
    shown = "Which region sells caf\ufffd \ufffd?"     # each bad byte shown as U+FFFD
    assert bad["split"] == "unknown" and json.loads(bad["raw_record"])["question"] == shown
    if suffix == ".jsonl":
        assert bad["source_id"] == "unknown:line 2"
        offset = len('{"question": "Which region sells caf')
        assert bad["reject_detail"] == f"malformed_encoding: invalid UTF-8 at byte {offset} of the line"
    else:
        assert bad["source_id"] == "unknown:row 2"
        assert bad["reject_detail"] == "malformed_encoding: invalid UTF-8 in column 'question'"


def test_a_bom_is_no_data_and_a_spider_file_that_is_not_utf8_is_refused_in_one_line(layout):
    from fastdistill_assets.datasets.spider import read_items

    path = layout / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps({"question": "q", "db_id": "shop"}).encode() + b"\n")
    raw = load_dataset(_config(layout, path), layout / "data").frame
    assert raw["reject_reason"].to_list() == [None] and raw["question"].to_list() == ["q"]

    spider_file = layout / "train.json"
    spider_file.write_bytes(b'[{"question": "' + BAD_BYTES + b'"}]')
    with pytest.raises(ValueError, match=rf"^invalid UTF-8 at byte 18 of {spider_file}$"):
        read_items(spider_file)


def test_questions_longer_than_the_bound_are_rejected_too_long(layout):
    long_question = "What is the total amount when region is North " + "and " * 1000 + "?"
    rows = [{"question": long_question, "db_id": "shop"}, {"question": ROWS[0]["question"], "db_id": "shop"}]
    path = write_questions(layout / "questions" / "long.jsonl", rows)
    raw = load_dataset(_config(layout, path), layout / "data").frame
    assert raw["reject_reason"].to_list() == ["too_long", None]
    rejected = raw.row(0, named=True)
    assert rejected["reject_detail"] == f"the question has {len(long_question)} characters; " \
                                        "dataset.max_question_chars is 4000"
    assert json.loads(rejected["raw_record"])["question"] == long_question    # kept whole, not cut
    bound = len(ROWS[0]["question"])
    raw = load_dataset(_config(layout, path, max_question_chars=bound), layout / "data").frame
    assert raw["reject_reason"].to_list() == ["too_long", None]          # the bound itself is allowed
    raw = load_dataset(_config(layout, path, max_question_chars=bound - 1), layout / "data").frame
    assert raw["reject_reason"].to_list() == ["too_long", "too_long"]


def test_a_repeated_question_id_is_rejected_and_counted_in_raws_metadata(project, layout):
    from fastdistill_assets.defs.assets.data import raw as raw_asset
    from fastdistill_assets.store.storage import ArtifactStore
    from fastdistill_assets_tests.conftest import materialize

    rows = [{"question_id": "q1", "question": ROWS[0]["question"], "db_id": "shop"},
            {"question_id": "q2", "question": "What is the average amount?", "db_id": "shop"},
            {"question_id": "q3", "question": "What is the highest amount?", "db_id": "shop", "split": "dev"},
            {"question_id": "q1", "question": "What is the lowest amount?", "db_id": "shop"},   # another question
            {"question_id": "q3", "question": "What is the highest amount?", "db_id": "shop"},  # q3 is in dev only
            {"task_id": "q2", "question": "What is the average amount?", "db_id": "shop"}]     # an id by another key
    path = write_questions(layout / "questions" / "ids.csv", rows)
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(path),
                                               "databases": str(layout / "databases"), "splits": ["train"]},
                        scale={"chunk_rows": 2})   # the repeats are in later batches than their first rows
    project.new_run("ids")
    result = materialize(project, [raw_asset], "ids")
    frame = ArtifactStore(project.artifacts).read("ids", "raw")
    assert frame.select("source_id", "reject_reason").rows() == [
        ("q1", None), ("q2", None), ("train:row 4", "duplicate_id"), ("q3", None), ("train:row 6", "duplicate_id")]
    assert frame["reject_detail"][2] == "duplicate_id: question_id 'q1' is also at row 1"
    assert json.loads(frame["raw_record"][2])["question"] == "What is the lowest amount?"
    [event] = result.get_asset_materialization_events()
    metadata = event.event_specific_data.materialization.metadata
    assert metadata["reject_reason_counts"].value == {"duplicate_id": 2}
