import json
from collections import Counter

from fastdistill_assets.datasets import demo, wikisql


def _questions(folder, split):
    return [json.loads(line) for line in (folder / f"{split}.jsonl").read_text().splitlines()]


def test_demo_dataset_is_deterministic(tmp_path, demo_dataset):
    again = demo.generate(tmp_path / "again")
    for split in demo.SPLITS:
        assert (again / f"{split}.jsonl").read_bytes() == (demo_dataset / f"{split}.jsonl").read_bytes()
        assert (again / f"{split}.tables.jsonl").read_bytes() == (demo_dataset / f"{split}.tables.jsonl").read_bytes()


def test_demo_dataset_shape(demo_dataset):
    train, test = _questions(demo_dataset, "train"), _questions(demo_dataset, "test")
    assert len(train) >= 2000 and len(test) >= 300
    tables = {s: {q["table_id"] for q in _questions(demo_dataset, s)} for s in demo.SPLITS}
    assert not tables["train"] & tables["test"] and not tables["train"] & tables["dev"] and not tables["dev"] & tables["test"]
    aggs = Counter(q["sql"]["agg"] for q in train)
    assert set(aggs) == set(range(6))
    n_conds = Counter(len(q["sql"]["conds"]) for q in train)
    assert set(n_conds) == {0, 1, 2, 3}
    ops = Counter(op for q in train for _, op, _ in q["sql"]["conds"])
    assert set(ops) == {0, 1, 2}
    for line in (demo_dataset / "train.tables.jsonl").read_text().splitlines():
        table = json.loads(line)
        assert len(table["rows"]) >= 20
        assert {"text", "real"} <= set(table["types"])
    assert len({q["question"] for q in train}) > 0.95 * len(train)


def test_every_demo_question_loads_and_executes(demo_dataset):
    rows = wikisql.load_split(demo_dataset, "test")
    assert rows and all(r["reject_reason"] is None for r in rows)
