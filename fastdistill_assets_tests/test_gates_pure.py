import json

import pytest

from fastdistill_assets.config.models import JudgeGates, RuleGates, TeacherConfig
from fastdistill_assets.core.judge_format import (
    parse_judge_score,
    preview_rows,
    result_preview,
)
from fastdistill_assets.gates.clean import clean_sql
from fastdistill_assets.gates.gold import (
    gold_is_ordered,
    result_signature,
    results_match,
)
from fastdistill_assets.gates.judge import JudgeEndpoint, judge_endpoint
from fastdistill_assets.gates.rules import check_rules
from fastdistill_assets.gates.select import deterministic_score
from fastdistill_assets.sqlsafe.parse import parse_sql

RULES = RuleGates(banned_tokens=["DROP ", "ATTACH ", "PRAGMA "])


@pytest.mark.parametrize("raw, sql, actions", [
    ("SELECT a FROM t", "SELECT a FROM t", ()),
    ("```sql\nSELECT a FROM t\n```", "SELECT a FROM t", ("code_fence", "whitespace")),
    ("```\nSELECT a FROM t;\n```", "SELECT a FROM t", ("code_fence", "trailing_semicolon")),
    ("Here is the query:\n```sql\nSELECT a FROM t;\n```\nHope it helps!", "SELECT a FROM t", ("code_fence", "trailing_semicolon")),
    ("Sure! The answer is: SELECT a FROM t", "SELECT a FROM t", ("leading_prose",)),
    ("SELECT a FROM t;;  \n", "SELECT a FROM t", ("trailing_semicolon",)),
    ("  SELECT a FROM t  ", "SELECT a FROM t", ("whitespace",)),
    ("```sql\nDROP TABLE t\n```", "DROP TABLE t", ("code_fence", "whitespace")),
    (None, "", ("no_output",)),
    ("", "", ()),
])
def test_clean_sql(raw, sql, actions):
    cleaned = clean_sql(raw)
    assert cleaned.sql == sql and cleaned.actions == actions


@pytest.mark.parametrize("sql, reason", [
    ("SELECT name FROM player", None),
    ("SELECT name FROM player WHERE club = 'DROP TABLE x; --'", None),
    ("", "empty_output"),
    ("   ", "empty_output"),
    ("SELECT 1", "too_short"),
    ("SELECT " + "a, " * 1000 + "b FROM t", "too_long"),
    ("SELECT name FROM player; DROP TABLE player", "multiple_statements"),
    ("DROP TABLE player", "banned_token"),
    ("ATTACH DATABASE 'x.db' AS x", "banned_token"),
    ("pragma writable_schema = 1", "banned_token"),
    ("UPDATE player SET goals = 0", "not_select"),
    ("SELECT name FROM player WHERE club = '\ufffd'", "non_utf8"),
    ("SELECT name FROM player WHERE club = '\udcff'", "non_utf8"),
])
def test_rules(sql, reason):
    assert check_rules(sql, RULES) == reason


@pytest.mark.parametrize("sql, ok, error_prefix", [
    ("SELECT name FROM player WHERE goals > 3", True, None),
    ("WITH x AS (SELECT 1 AS a) SELECT a FROM x", True, None),
    ("SELECT name FROM player UNION SELECT club FROM player", True, None),
    ("SELECT name FROM WHERE", False, "parse_error"),
    ("SELECT (name FROM player", False, "parse_error"),
    ("DROP TABLE player", False, "not_read_only"),
    ("ATTACH DATABASE 'x.db' AS x", False, "not_read_only"),
    ("INSERT INTO player VALUES (1, 2, 3, 4)", False, "not_read_only"),
    ("PRAGMA journal_mode = DELETE", False, "not_read_only"),
    ("SELECT 1; SELECT 2", False, "parse_error"),
])
def test_parse(sql, ok, error_prefix):
    parsed = parse_sql(sql, "sqlite")
    assert parsed.ok is ok
    assert (parsed.error or "").split(":")[0] == (error_prefix or "")


def test_parse_keeps_the_parser_message():
    assert parse_sql("SELECT (name FROM player", "sqlite").error == "parse_error: Expecting ). Line 1, Col: 17."


@pytest.mark.parametrize("cand, gold, kwargs, expected", [
    ([(1,), (2,)], [(2,), (1,)], {}, True),
    ([(1,), (1,), (2,)], [(1,), (2,)], {}, False),
    ([(1,), (1,), (2,)], [(1,), (2,)], {"semantics": "set"}, True),
    ([(3,)], [(3.0,)], {}, True),
    ([(0.1 + 0.2,)], [(0.3,)], {}, True),
    ([(0.3001,)], [(0.3,)], {}, False),
    ([(0.3001,)], [(0.3,)], {"tolerance": 1e-3}, True),
    ([(1,), (2,)], [(2,), (1,)], {"ordered": True}, False),
    ([("a", None)], [("a", None)], {}, True),
    ([], [], {}, True),
    ([(1, 2)], [(1,)], {}, False),
])
def test_results_match(cand, gold, kwargs, expected):
    assert results_match(cand, gold, **kwargs) is expected


def test_result_signature_is_order_insensitive_and_normalizes_numbers():
    assert result_signature([(1, "a"), (2.0, "b")]) == result_signature([(2, "b"), (1.0, "a")])
    assert result_signature([(1,)]) != result_signature([(1,), (1,)])
    assert gold_is_ordered("SELECT a FROM t ORDER  BY a") and not gold_is_ordered("SELECT a FROM t")


@pytest.mark.parametrize("text, score", [("Score: 5", 1.0), ("score=1", 0.0), ("3", 0.5), ("I think 4/5", None),
                                         ("", None), ("Score: 3. The query is fine.", 0.5)])
def test_parse_judge_score(text, score):
    assert parse_judge_score(text)[0] == score


def test_deterministic_score():
    assert [deterministic_score(False, None, 0), deterministic_score(True, True, 1),
            deterministic_score(True, False, 2), deterministic_score(True, False, 0)] == [0.0, 1.0, 0.5, 0.25]


def test_result_preview_is_json_of_the_first_rows_bounded_by_rows_columns_and_cells():
    rows = [(i, "x" * 1000, None, 1.5, b"\x00\x01", float("inf")) for i in range(300)]
    preview = result_preview(rows, max_rows=2, max_columns=5, max_chars=4)
    assert preview_rows(preview) == [[i, "xxxx...", None, 1.5, "<2 bytes>", "... 1 more columns"] for i in (0, 1)]
    assert json.loads(result_preview(rows)) == preview_rows(result_preview(rows))
    assert len(preview_rows(result_preview(rows))) == 5 and len(result_preview(rows)) < 1000
    assert result_preview([]) == "[]" and preview_rows(None) == []


def test_the_judge_is_its_own_provider_or_the_teacher_at_the_runs_endpoint():
    teacher = TeacherConfig(provider="vllm", base_url="http://gpu:8000/v1", concurrency=3)
    assert judge_endpoint(JudgeGates(enabled=True), teacher) == JudgeEndpoint(
        "vllm", None, {"base_url": "http://gpu:8000/v1", "concurrency": 3})
    assert judge_endpoint(JudgeGates(enabled=True, provider="openai", model="gpt-4o"), teacher) == JudgeEndpoint(
        "openai", "gpt-4o", None)


@pytest.mark.parametrize("configured, rows, cpus, expected", [
    (4, 0, 8, 1),              # nothing to gate
    (4, 1999, 8, 1),           # below the pool threshold
    (4, 2000, 8, 2),           # one worker per 1,000 rows at most
    (4, 3999, 8, 3),
    (4, 100_000, 8, 4),        # configured wins over the CPUs
    (1, 100_000, 8, 1),
    (None, 100_000, 8, 8),     # None: the CPUs this process may run on
    (None, 100_000, 1, 1),
    (None, 5000, 16, 5),
])
def test_gate_workers(monkeypatch, tmp_path, configured, rows, cpus, expected):
    import os

    from fastdistill_assets.core import processes
    monkeypatch.setattr(processes, "PROC_CGROUP", tmp_path / "no-cgroup")
    monkeypatch.setattr(processes, "CGROUP_ROOT", tmp_path / "no-cgroup-fs")

    from fastdistill_assets.gates.pipeline import gate_workers
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert gate_workers(configured, rows) == expected


def test_gate_workers_without_affinity(monkeypatch, tmp_path):
    import os

    from fastdistill_assets.core import processes
    monkeypatch.setattr(processes, "PROC_CGROUP", tmp_path / "no-cgroup")
    monkeypatch.setattr(processes, "CGROUP_ROOT", tmp_path / "no-cgroup-fs")

    from fastdistill_assets.gates.pipeline import gate_workers
    monkeypatch.delattr(os, "sched_getaffinity", raising=False)
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    assert gate_workers(None, 50_000) == 3
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert gate_workers(None, 50_000) == 1


@pytest.mark.parametrize("own, parent, cpus, expected", [
    (None, None, 8, 8),                       # no cgroup v2: the affinity
    ("max 100000\n", None, 8, 8),             # no quota
    ("200000 100000\n", None, 8, 2),          # docker --cpus=2
    ("150000 100000\n", None, 8, 2),          # 1.5 CPUs: rounded up
    ("50000 100000\n", None, 8, 1),
    ("800000 100000\n", None, 4, 4),          # a quota above the affinity: the affinity
    ("garbage\n", None, 8, 8),
    ("100 0\n", None, 8, 8),                  # a zero period is no quota, not a crash
    ("max 100000\n", "300000 100000\n", 8, 3),  # a parent's quota (a systemd slice) applies too
    ("400000 100000\n", "300000 100000\n", 8, 3),
])
def test_available_cpus_honours_the_cgroup_quotas(monkeypatch, tmp_path, own, parent, cpus, expected):
    import os

    from fastdistill_assets.core import processes
    root = tmp_path / "cgroup"
    leaf = root / "system.slice" / "job.service"
    leaf.mkdir(parents=True)
    for folder, cpu_max in ((leaf, own), (leaf.parent, parent)):
        if cpu_max is not None:
            (folder / "cpu.max").write_text(cpu_max)
    (tmp_path / "self-cgroup").write_text("0::/system.slice/job.service\n")
    monkeypatch.setattr(processes, "CGROUP_ROOT", root)
    monkeypatch.setattr(processes, "PROC_CGROUP", tmp_path / "self-cgroup")
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cpus)), raising=False)
    assert processes.available_cpus() == expected
    assert processes.step_workers(None, 2) == max(1, expected // 2) and processes.step_workers(5, 2) == 5
