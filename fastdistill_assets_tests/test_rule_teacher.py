import pytest

from fastdistill_assets.core.prompt_format import (
    build_messages,
    parse_user_prompt,
    split_rationale,
)
from fastdistill_assets.core.schema_text import parse_schema
from fastdistill_assets.teacher import rule_teacher

SCHEMA = ("CREATE TABLE table_1 (\n  col0 TEXT, -- Player\n  col1 TEXT, -- Club\n  col2 REAL, -- Goals\n"
          "  col3 REAL -- Age\n)")


@pytest.mark.parametrize("question, expected", [
    ("What is the club when player is Ana Silva?", "SELECT col1 FROM table_1 WHERE col0 = 'Ana Silva'"),
    ("How many player entries have goals greater than 10?", "SELECT COUNT(col0) FROM table_1 WHERE col2 > 10"),
    ("What is the average age with club of Porto and goals less than 5?",
     "SELECT AVG(col3) FROM table_1 WHERE col1 = 'Porto' AND col2 < 5"),
    ("What is the highest goals?", "SELECT MAX(col2) FROM table_1"),
    ("Name the smallest age for the club is The Rovers.", "SELECT MIN(col3) FROM table_1 WHERE col1 = 'The Rovers'"),
    ("What is the total goals when age above 30.5?", "SELECT SUM(col2) FROM table_1 WHERE col3 > 30.5"),
])
def test_baseline_predicts_sketch_sql(question, expected):
    assert rule_teacher.predict_sql(question, SCHEMA) == expected


def test_baseline_makes_real_mistakes_on_unmatched_headers():
    # "scorer" is not a header: like an LLM, the baseline hallucinates a column that does not exist.
    assert rule_teacher.predict_sql("Which scorer has goals of 3?", SCHEMA) == "SELECT scorer FROM table_1 WHERE col2 = 3"
    assert rule_teacher.predict_sql("What is the club with 3 goals?", SCHEMA) != "SELECT col1 FROM table_1 WHERE col2 = 3"


def test_parse_schema_reads_plain_ddl():
    table, columns = parse_schema('CREATE TABLE player (name TEXT, team_name TEXT, goals INTEGER)')
    assert table == "player"
    assert [(c.name, c.kind, c.phrase) for c in columns] == [
        ("name", "text", "name"), ("team_name", "text", "team name"), ("goals", "real", "goals")]


def test_reply_round_trips_the_prompt_and_formats_like_a_chat_model():
    replies = set()
    for i in range(60):
        question = f"What is the club when player is Player {i}?"
        messages = build_messages(question, SCHEMA, [["Ana Silva", "Porto", 12, 25]])
        assert parse_user_prompt(messages[1]["content"])["question"] == question
        replies.add(rule_teacher.reply(messages).split("\n")[0][:9])
    assert {"SELECT co", "```sql", "Here is t"} <= replies


def test_rationale_reply_splits():
    messages = build_messages("What is the highest goals?", SCHEMA, [], rationale=True)
    rationale, answer, error = split_rationale(rule_teacher.reply(messages))
    assert error is None and rationale and answer == "SELECT MAX(col2) FROM table_1"
    assert split_rationale("### RATIONALE\nonly thoughts") == ("only thoughts", None, "missing_answer_section")


def test_sampling_varies_with_seed_and_greedy_does_not():
    q = "What is the average age with club of Porto and goals less than 5?"
    greedy = {rule_teacher.predict_sql(q, SCHEMA, 0.0, seed) for seed in range(10)}
    sampled = {rule_teacher.predict_sql(q, SCHEMA, 1.0, seed) for seed in range(10)}
    assert len(greedy) == 1 and len(sampled) > 1
    assert rule_teacher.predict_sql(q, SCHEMA, 1.0, 3) == rule_teacher.predict_sql(q, SCHEMA, 1.0, 3)
