"""Questions over the user's own PostgreSQL database: schema and sample rows from its catalog,
gold checked read-only, and the pipeline to `distilled` for labeled and gold-free questions
(issue 23, items 1-2)."""

import json

import polars as pl
import psycopg
import pytest

from fastdistill_assets.config.models import DatasetConfig
from fastdistill_assets.datasets.load import load_dataset
from fastdistill_assets.defs.assets.data import canonical, raw
from fastdistill_assets.defs.assets.gates import distilled, filtered
from fastdistill_assets.defs.assets.teacher import teacher_candidates
from fastdistill_assets.store.storage import ArtifactStore
from fastdistill_assets_tests.conftest import (
    materialize,
    teacher_gateway,
    write_questions,
)

SALES = """
CREATE SCHEMA archive;
CREATE TABLE stores (id integer PRIMARY KEY, name text NOT NULL, city text);
CREATE TABLE sales (id integer PRIMARY KEY, store_id integer NOT NULL REFERENCES stores(id),
                    region text, product text, year integer, amount numeric(10, 2));
CREATE VIEW big_sales AS SELECT * FROM sales WHERE amount > 100;
CREATE TABLE archive.old_sales (id integer PRIMARY KEY, amount numeric);
INSERT INTO stores VALUES (1, 'Harbor', 'Lisbon'), (2, 'Plaza', 'Porto');
INSERT INTO sales VALUES (1, 1, 'North', 'Tea', 2023, 120.00), (2, 1, 'North', 'Cocoa', 2024, 80.50),
    (3, 2, 'East', 'Tea', 2024, 35.25), (4, 2, 'South', 'Coffee', 2023, 210.00), (5, 1, 'East', 'Cocoa', 2024, 15.00);
"""
QUESTIONS = ["What is the total amount when region is North?", "Which region has product of Coffee?",
             "How many product entries have year of 2024?", "What is the highest amount when product is Tea?",
             "What is the average amount?", "What is the lowest amount when year is 2023?"]


@pytest.fixture
def sales_db(postgres_server) -> str:
    return postgres_server.fresh_database("sales", SALES)


def test_the_schema_and_sample_rows_come_from_the_catalog_within_bounds(tmp_path, sales_db, monkeypatch):
    monkeypatch.setenv("SALES_DB_PASSWORD", "s3cret-value")
    rows = [{"question": QUESTIONS[0], "gold_sql": "SELECT SUM(amount) FROM sales WHERE region = 'North'"},
            {"question": QUESTIONS[1], "db_url": sales_db},
            {"question": "Who?", "gold_sql": "SELECT pg_sleep(1)"},
            {"question": "Who?", "db_url": sales_db.replace("fastdistill@", "fastdistill:pw@")}]
    path = write_questions(tmp_path / "q.jsonl", rows)
    config = DatasetConfig(kind="questions", path=str(path), db_url=sales_db, password_env="SALES_DB_PASSWORD",
                           splits=["train"], sample_rows=2, sample_rows_total=3)
    frame = load_dataset(config, tmp_path / "data").frame
    assert frame["reject_reason"].to_list() == [None, None, "gold_sql_failed", "malformed_field:db_url"]
    labeled, free = frame.row(0, named=True), frame.row(1, named=True)
    assert labeled["dialect"] == free["dialect"] == "postgres" and labeled["db_id"] == "sales"
    assert labeled["db_path"] == sales_db + "?password_env=SALES_DB_PASSWORD"    # the variable's name, never its value
    assert "s3cret-value" not in frame.write_ndjson()
    schema = labeled["schema"]
    assert "CREATE TABLE sales (\n  id integer NOT NULL," in schema
    assert "  amount numeric(10,2)" in schema and "  PRIMARY KEY (id)" in schema
    assert "  FOREIGN KEY (store_id) REFERENCES stores(id)" in schema
    assert "CREATE VIEW big_sales AS" in schema and "old_sales" not in schema   # only dataset.schemas (public)
    samples = json.loads(labeled["sample_rows"])
    assert set(samples) == {"sales", "stores", "big_sales"} and sum(len(v) for v in samples.values()) == 3
    assert "not_read_only" in frame["reject_detail"][2]

    by_id = write_questions(tmp_path / "by_id.jsonl", [{"question": QUESTIONS[0], "db_id": "sales"},
                                                        {"question": QUESTIONS[0], "db_id": "hr"}])
    mapped = DatasetConfig(kind="questions", path=str(by_id), databases={"sales": sales_db}, splits=["train"])
    frame = load_dataset(mapped, tmp_path / "data").frame
    assert frame.select("db_id", "db_path", "dialect", "reject_reason").rows() == [
        ("sales", sales_db, "postgres", None), ("hr", None, None, "unknown_database")]
    with pytest.raises(ValueError, match="must not hold a password"):
        DatasetConfig(kind="questions", databases={"sales": sales_db.replace("fastdistill@", "fastdistill:pw@")})

    narrow = config.model_copy(update={"schemas": ["public", "archive"], "max_tables": 2})
    schema = load_dataset(narrow, tmp_path / "data").frame["schema"][0]
    assert "CREATE TABLE archive.old_sales" in schema and "CREATE VIEW" not in schema
    assert schema.endswith("-- 2 more tables and views not shown (at most 2: dataset.max_tables)")

    monkeypatch.delenv("SALES_DB_PASSWORD")
    frame = load_dataset(config, tmp_path / "data").frame
    assert set(frame["reject_reason"]) == {"unknown_database", "malformed_field:db_url"}
    assert "SALES_DB_PASSWORD (dataset.password_env) is not set" in frame["reject_detail"][0]


def test_labeled_and_gold_free_questions_distill_over_postgres(project, sales_db):
    rows = [{"question": q, "question_id": f"l{i}", "gold_sql": None} for i, q in enumerate(QUESTIONS)]
    rows[0]["gold_sql"] = "SELECT SUM(amount) FROM sales WHERE region = 'North'"
    rows[3]["gold_sql"] = "SELECT MAX(amount) FROM sales WHERE product = 'Tea'"
    path = write_questions(project.root / "questions.jsonl", [{k: v for k, v in r.items() if v is not None}
                                                               for r in rows])
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(path), "db_url": sales_db,
                                               "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 0.6}, recipe={"multi_decode_select": True})
    project.new_run("pg")
    stages = [raw, canonical, teacher_candidates, filtered, distilled]
    assert materialize(project, stages, "pg", teacher=teacher_gateway(project)).success
    store = ArtifactStore(project.artifacts)
    candidates = store.read("pg", "teacher_candidates")
    assert "one PostgreSQL query" in json.loads(candidates["messages"][0])[0]["content"]
    gated = store.read("pg", "filtered").frame
    assert set(gated["dialect"]) == {"postgres"} and gated.height == 3 * len(QUESTIONS)
    executed = gated.filter(pl.col("exec_ok"))
    assert executed.height > 0
    labeled = gated.filter(pl.col("gold_sql").is_not_null())
    assert labeled["gold_match"].any()
    kept = store.read("pg", "distilled").frame
    assert kept.height > 0 and set(kept["db_id"]) == {"sales"}


def test_preflight_says_in_one_line_when_the_role_could_write(project, sales_db, postgres_server):
    import os

    from fastdistill_assets.runtime.preflight import preflight

    with psycopg.connect(sales_db, autocommit=True) as db:
        db.execute("DROP ROLE IF EXISTS reader")
        db.execute("CREATE ROLE reader LOGIN")
        db.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader")
    path = write_questions(project.root / "q.jsonl", [{"question": QUESTIONS[0]}])
    reader = sales_db.replace("fastdistill@", "reader@")
    for url, expected in ((sales_db, f"dataset.db_url: the role of {sales_db} is a superuser; every query runs "
                                     "in a read-only transaction, but a role granted SELECT only is safer"),
                          (reader, None)):
        project.edit_config("run_config", dataset={"kind": "questions", "path": str(path), "db_url": url,
                                                   "splits": ["train"]}, eval_split=None)
        frozen = project.registry.prepare("check", environ=dict(os.environ))
        notes = [n for n in preflight(frozen, project.configs, project.artifacts / "_datasets", dict(os.environ))
                 if n.startswith("dataset.db_url")]
        assert notes == ([expected] if expected else [])


ORDERS = [(1, "Ana", "12.50", "2024-01-03", True), (2, "Ana", "7.25", "2024-02-11", False),
          (3, "Ben", "30.00", "2024-02-12", True), (4, "Chloe", "4.75", "2024-03-01", True)]
# (candidate, gold): the same question answered by the teacher and by the gold query
PAIRS = [
    ("SELECT SUM(amount) FROM orders WHERE customer = 'Ana'", "SELECT SUM(amount) FROM orders WHERE customer = 'Ana'"),
    ("SELECT customer, COUNT(*) FROM orders GROUP BY customer", "SELECT customer, COUNT(id) FROM orders GROUP BY customer"),
    ("SELECT AVG(amount) FROM orders", "SELECT SUM(amount) / COUNT(*) FROM orders"),
    ("SELECT MAX(amount) FROM orders", "SELECT MIN(amount) FROM orders"),
    ("SELECT placed FROM orders WHERE amount > 10", "SELECT placed FROM orders WHERE id IN (1, 3)"),
    ("SELECT customer FROM orders WHERE placed >= '2024-02-01'", "SELECT customer FROM orders WHERE id > 1"),
    ("SELECT customer FROM orders WHERE paid", "SELECT customer FROM orders WHERE paid = TRUE"),
    ("SELECT amount * 2 FROM orders WHERE customer = 'Chloe'", "SELECT 9.5"),
]


def test_one_data_set_gets_the_same_verdicts_on_postgres_sqlite_and_duckdb(tmp_path, postgres_server):
    import sqlite3

    import duckdb

    from fastdistill_assets.config.models import GatesConfig
    from fastdistill_assets.gates.pipeline import gate_row
    from fastdistill_assets.sqlsafe.execute import Executor

    create = "CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, amount DECIMAL(10, 2), placed DATE, paid BOOLEAN)"
    with psycopg.connect(postgres_server.fresh_database("same", create), autocommit=True) as db:
        for row in ORDERS:
            db.execute("INSERT INTO orders VALUES (%s, %s, %s, %s, %s)", row)
    lite = sqlite3.connect(tmp_path / "same.sqlite")
    lite.execute(create)
    lite.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", [(i, c, float(a), d, p) for i, c, a, d, p in ORDERS])
    lite.commit()
    lite.close()
    duck = duckdb.connect(str(tmp_path / "same.duckdb"))
    duck.execute(create)
    duck.executemany("INSERT INTO orders VALUES (?, ?, ?, ?, ?)", [list(r) for r in ORDERS])
    duck.close()
    engines = {"postgres": postgres_server.url("same"), "sqlite": str(tmp_path / "same.sqlite"),
               "duckdb": str(tmp_path / "same.duckdb")}
    verdicts = {}
    with Executor() as executor:
        for dialect, location in engines.items():
            verdicts[dialect] = [
                {k: out[k] for k in ("exec_ok", "exec_error", "result_rows", "result_signature", "gold_match",
                                     "reject_reason")}
                for out in (gate_row({"error": None, "raw_output": candidate, "dialect": dialect, "db_path": location,
                                      "gold_sql": gold, "question": "q"}, GatesConfig(), False, executor)
                            for candidate, gold in PAIRS)]
    assert verdicts["postgres"] == verdicts["sqlite"] == verdicts["duckdb"]
    assert [v["gold_match"] for v in verdicts["postgres"]] == [True, True, True, False, True, True, True, True]
    assert all(v["exec_ok"] for v in verdicts["postgres"])


def test_escalation_the_judge_and_the_evaluation_run_against_the_same_server(project, sales_db):
    from fastdistill_assets.defs.assets.evaluation import eval_report
    from fastdistill_assets.defs.assets.training import baseline_model, student_model

    golds = {"What is the total amount when region is East?": "SELECT SUM(amount) FROM sales WHERE region = 'East'",
             "What is the highest amount when product is Cocoa?": "SELECT MAX(amount) FROM sales WHERE product = 'Cocoa'",
             "What is the lowest amount?": "SELECT MIN(amount) FROM sales"}   # not the train questions
    rows = [{"question": q, "split": "train"} for q in QUESTIONS]
    rows += [{"question": q, "split": "test", "gold_sql": sql} for q, sql in golds.items()]
    path = write_questions(project.root / "questions.jsonl", rows)
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(path), "db_url": sales_db,
                                               "splits": ["train", "test"]},
                        teacher={"splits": ["train"], "escalate": {"provider": "embedded_strong"}},
                        decode={"num_generations": 3, "temperature": 0.6}, recipe={"multi_decode_select": True},
                        eval_split="test", training={"epochs": 2})
    project.edit_config("quality_gates", judge={"enabled": True})
    project.new_run("all")
    stages = [raw, canonical, teacher_candidates, filtered, distilled, student_model, baseline_model, eval_report]
    result = materialize(project, stages, "all", teacher=teacher_gateway(project), raise_on_error=False)
    materialized = {e.event_specific_data.materialization.asset_key.path[-1]
                    for e in result.get_asset_materialization_events()}
    assert materialized == {"raw", "canonical", "teacher_candidates", "filtered", "distilled", "student_model",
                            "baseline_model", "eval_report"}
    store = ArtifactStore(project.artifacts)
    gated = store.read("all", "filtered").frame
    assert gated["judge_score"].is_not_null().any()                      # the judge saw the server's results
    assert "embedded_strong" in set(gated["provider"])                  # unsettled samples were escalated
    report = json.loads(store.read("all", "eval_report").files["eval_report.json"].read_text())
    # the teacher's and the student's answers ran on the server and were compared with the gold's results
    assert report["student"]["n"] == len(golds) and report["teacher"]["correct"] > 0


def test_the_documented_commands_distill_over_postgres_and_warn_of_a_role_that_can_write(project, sales_db):
    import os
    import subprocess

    from fastdistill_assets_tests.conftest import BIN

    path = write_questions(project.root / "questions.jsonl",
                           [{"question": q, **({"gold_sql": "SELECT AVG(amount) FROM sales"} if i == 4 else {})}
                            for i, q in enumerate(QUESTIONS)])
    project.edit_config("run_config", dataset={"kind": "questions", "path": str(path), "db_url": sales_db,
                                               "password_env": "SALES_DB_PASSWORD", "splits": ["train"]},
                        decode={"num_generations": 3, "temperature": 0.6}, recipe={"multi_decode_select": True},
                        eval_split=None)
    env = {**os.environ, "FASTDISTILL_ARTIFACTS": str(project.artifacts), "FASTDISTILL_CONFIGS": str(project.configs),
           "DAGSTER_HOME": str(project.root / "home"), "SALES_DB_PASSWORD": "s3cret-value"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "fastdistill"), *args], env=env, capture_output=True, text=True,
                              cwd=project.root, timeout=300)

    created = run("run", "new", "pgcli")
    assert created.returncode == 0, created.stderr
    assert f"dataset.db_url: the role of {sales_db} is a superuser" in created.stdout + created.stderr
    done = run("materialize", "pgcli", "--select", "raw,canonical,teacher_candidates,filtered,distilled")
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.startswith("materialized distilled ") for line in done.stdout.splitlines())
    kept = ArtifactStore(project.artifacts).read("pgcli", "distilled").frame
    assert kept.height > 0
    # the password is read when connecting, never written anywhere
    leaked = [p for p in project.root.rglob("*") if p.is_file() and b"s3cret-value" in p.read_bytes()]
    assert leaked == [] and "s3cret-value" not in created.stdout + done.stdout + done.stderr


def test_a_url_holding_a_password_is_refused_in_one_line_that_does_not_repeat_it():
    from fastdistill_assets.config.loading import ConfigError, validated
    from fastdistill_assets.config.models import RunConfig

    with pytest.raises(ConfigError) as refused:
        validated(RunConfig, {"dataset": {"kind": "questions",
                                          "db_url": "postgresql://reader:hunter2@db.internal:5432/sales"}},
                  "configs/run_config.yaml")
    message = str(refused.value)
    assert message.startswith("configs/run_config.yaml: dataset.db_url: ") and "must not hold a password" in message
    assert "hunter2" not in message and "postgresql://reader:***@db.internal:5432/sales" in message
    assert "\n" not in message
