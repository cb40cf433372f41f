import subprocess
import sys

import pytest

from fastdistill_assets.core import contract

RECORD = {"question": "  How many   goals\n did Ana score? ", "db_id": "t1", "extra": "ignored"}
FIELDS = ["question", "db_id"]


def _id(task="text2sql", schema="CREATE TABLE t (a TEXT)", record=RECORD, decode='{"t":0}') -> str:
    return contract.sample_id(task, contract.schema_hash(schema), contract.canonical_input(record, FIELDS), decode)


def test_canonical_input_is_sorted_and_whitespace_normalized():
    assert contract.canonical_input(RECORD, FIELDS) == '{"db_id":"t1","question":"How many goals did Ana score?"}'


def test_canonical_input_ignores_field_order_and_unchosen_fields():
    reordered = {"db_id": "t1", "question": "How many goals did Ana score?", "other": 1}
    assert contract.canonical_input(reordered, list(reversed(FIELDS))) == contract.canonical_input(RECORD, FIELDS)


def test_canonical_input_missing_field_is_a_clear_error():
    with pytest.raises(KeyError, match="db_id"):
        contract.canonical_input({"question": "q"}, FIELDS)


def test_sample_id_is_stable_across_processes():
    code = (
        "from fastdistill_assets.core import contract as c;"
        "r={'question':'  How many   goals\\n did Ana score? ','db_id':'t1'};"
        "print(c.sample_id('text2sql', c.schema_hash('CREATE TABLE t (a TEXT)'),"
        " c.canonical_input(r, ['question','db_id']), '{\"t\":0}'))"
    )
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={"PYTHONHASHSEED": "123"}).stdout.strip()
    assert other == _id()
    assert len(other) == 64


@pytest.mark.parametrize("change", [
    {"task": "other-task"},
    {"schema": "CREATE TABLE t (a REAL)"},
    {"record": {**RECORD, "question": "How many goals did Bo score?"}},
    {"record": {**RECORD, "db_id": "t2"}},
    {"decode": '{"t":0.7}'},
])
def test_sample_id_is_sensitive_to_each_part(change):
    assert _id(**change) != _id()


def test_part_boundaries_cannot_shift():
    assert contract.sample_id("ab", "c", "d", "e") != contract.sample_id("a", "bc", "d", "e")


def test_schema_hash_is_sha256_of_schema():
    import hashlib

    assert contract.schema_hash("x") == hashlib.sha256(b"x").hexdigest()
