"""Spider and BIRD layouts: every table's sample rows, BIRD's evidence and difficulty, its
``dev_databases/`` layout and ``SQL`` key, and the empty-gold count."""

import json
import sqlite3
from pathlib import Path

import polars as pl
import pytest

from fastdistill_assets.config.models import DatasetConfig, RunConfig
from fastdistill_assets.core.prompt_format import build_messages
from fastdistill_assets.datasets import spider
from fastdistill_assets.datasets.canonical import canonicalize
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets_tests.wikisql_fixture import TABLE, write_spider

SCHOOLS = [("Lincoln High", "Springfield", 1200), ("Oak Ridge", "Shelbyville", 640)]
CLUBS = [("Chess", "Lincoln High"), ("Drama", "Oak Ridge"), ("Robotics", "Lincoln High")]


def _school_db(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE schools (name TEXT, city TEXT, students INTEGER)")
        db.execute("CREATE TABLE clubs (club TEXT, school TEXT)")
        db.executemany("INSERT INTO schools VALUES (?, ?, ?)", SCHOOLS)
        db.executemany("INSERT INTO clubs VALUES (?, ?)", CLUBS)
    return path


BIRD = [
    {"question_id": 0, "db_id": "school", "question": "How many clubs does the largest school have?",
     "evidence": "largest school refers to MAX(students)",
     "SQL": "SELECT COUNT(*) FROM clubs WHERE school = (SELECT name FROM schools ORDER BY students DESC LIMIT 1)",
     "difficulty": "moderate"},
    {"question_id": 1, "db_id": "school", "question": "Which city has a school named Elm?", "evidence": "",
     "SQL": "SELECT city FROM schools WHERE name = 'Elm'", "difficulty": "simple"},
    {"question_id": 2, "db_id": "school", "question": "Bad gold", "SQL": "SELECT nope FROM schools"},
]


@pytest.fixture
def bird(tmp_path) -> Path:
    """BIRD's release layout: dev/dev.json and dev/dev_databases/<db_id>/<db_id>.sqlite."""
    _school_db(tmp_path / "dev" / "dev_databases" / "school" / "school.sqlite")
    (tmp_path / "dev" / "dev.json").write_text(json.dumps(BIRD))
    return tmp_path


@pytest.mark.parametrize("root", ["", "dev"])  # the release folder, or its dev/ folder
def test_bird_layout_evidence_difficulty_and_every_table(bird, root):
    rows = spider.load_split(bird / root, "dev")
    assert [r["reject_reason"] for r in rows] == [None, None, "gold_sql_failed"]
    first, elm = rows[0], rows[1]
    assert first["evidence"] == "largest school refers to MAX(students)" and elm["evidence"] is None
    assert (first["difficulty"], elm["difficulty"]) == ("moderate", "simple")
    assert json.loads(first["sample_rows"]) == {"clubs": [list(c) for c in CLUBS], "schools": [list(s) for s in SCHOOLS]}
    assert "CREATE TABLE clubs" in first["schema"] and "CREATE TABLE schools" in first["schema"]
    assert (first["gold_empty"], elm["gold_empty"]) == (False, True)  # no school named Elm


def test_bird_evidence_reaches_the_prompt_and_canonical_input(bird):
    config = RunConfig(dataset=DatasetConfig(kind="spider", path=str(bird), splits=["dev"]), eval_split="dev")
    loaded = load_dataset(config.dataset, bird / "data")
    assert loaded.facts["gold_empty_result"] == 1
    canonical = canonicalize(loaded.frame, config).frame
    first = canonical.row(0, named=True)
    assert json.loads(first["canonical_input"])["evidence"] == "largest school refers to MAX(students)"
    assert first["difficulty"] == "moderate"
    prompt = build_messages(first["question"], first["schema"], json.loads(first["sample_rows"]),
                            evidence=first["evidence"])[-1]["content"]
    assert "largest school refers to MAX(students)" in prompt
    assert "-- table clubs" in prompt and "-- table schools" in prompt and "Robotics" in prompt


def test_empty_gold_can_be_rejected_by_config(bird):
    dataset = DatasetConfig(kind="spider", path=str(bird), splits=["dev"], gold_empty_result="reject")
    raw = load_dataset(dataset, bird / "data").frame
    assert raw["reject_reason"].to_list() == [None, "gold_empty_result", "gold_sql_failed"]
    assert "Elm" in json.loads(raw["raw_record"][1])["question"]


def test_sample_rows_are_bounded_per_table_and_in_total(bird):
    rows = spider.load_split(bird / "dev", "dev", sample_rows=2, sample_rows_total=3)
    assert json.loads(rows[0]["sample_rows"]) == {"clubs": [list(c) for c in CLUBS[:2]], "schools": [list(SCHOOLS[0])]}


def test_spider_layout_and_bad_rows(tmp_path):
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
    assert json.loads(rows[0]["sample_rows"]) == {"player": [list(r) for r in TABLE["rows"]]}
    assert rows[0]["difficulty"] is None and rows[0]["gold_empty"] is False


def test_a_split_without_questions_file_names_what_was_looked_for(bird):
    with pytest.raises(FileNotFoundError, match="no questions file for split 'train'.*train_spider.json"):
        spider.load_split(bird, "train")
    assert pl.DataFrame(spider.load_split(bird, "dev")).height == 3
