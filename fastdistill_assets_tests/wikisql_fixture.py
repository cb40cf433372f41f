"""Write small WikiSQL- and Spider-format datasets in code for the tests."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from fastdistill_assets.datasets.wikisql import table_name

TABLE = {"id": "1-100-1", "header": ["Player", "Team", "Goals"], "types": ["text", "text", "real"],
         "rows": [["Ana Silva", "Porto", 12], ["Ben Ito", "Lyon", 7], ["Cai Xu", "Porto", 3]]}


# The official Salesforce release's layout: this tables file keeps the original case, the DB holds
# text lower-cased (write_official_wikisql). Unicode whose str.lower() is one-to-one; a number in
# a text column; int and float cells in a real column (the DB holds 3 as 3.0).
OFFICIAL_TABLE = {"id": "1-10015132-11", "header": ["Player", "Hometown", "Season", "Points"],
                  "types": ["text", "text", "text", "real"],
                  "rows": [["Ñúñez Ortiz", "São Paulo", "1998", 4.5], ["Ben O'Hara", "Lyon", "2001", 7.25],
                           ["Zoë ÅBERG", "Malmö", "1998", 3], ["Cai Xu", "ZÜRICH", "2003", 12]]}


def write_wikisql(folder: Path, split: str, questions: list[Any], tables: list[dict] | None = None,
                  db_columns: dict[str, int] | None = None, lower_db_text: bool = False) -> Path:
    """Write ``{split}.jsonl`` (raw lines allowed as str), tables and a DB.

    ``db_columns`` lets a test create a table with fewer columns than its header (gold fails);
    ``lower_db_text`` stores the DB's text cells lower-cased, as the official release does.
    """
    folder.mkdir(parents=True, exist_ok=True)
    tables = tables or [TABLE]
    with (folder / f"{split}.jsonl").open("w") as f:
        for q in questions:
            f.write((q if isinstance(q, str) else json.dumps(q)) + "\n")
    with (folder / f"{split}.tables.jsonl").open("w") as f:
        for t in tables:
            f.write(json.dumps(t) + "\n")
    db = sqlite3.connect(folder / f"{split}.db")
    for t in tables:
        n = (db_columns or {}).get(t["id"], len(t["header"]))
        cols = ", ".join(f"col{i} {'REAL' if t['types'][i] == 'real' else 'TEXT'}" for i in range(n))
        db.execute(f"CREATE TABLE {table_name(t['id'])} ({cols})")
        db.executemany(f"INSERT INTO {table_name(t['id'])} VALUES ({', '.join('?' * n)})",
                       [[c.lower() if lower_db_text and isinstance(c, str) else c for c in row[:n]]
                        for row in t["rows"]])
    db.commit()
    db.close()
    return folder


def write_official_wikisql(folder: Path, split: str, questions: list[Any]) -> Path:
    """:data:`OFFICIAL_TABLE` in the official release's layout: DB text lower-cased, tables file not."""
    return write_wikisql(folder, split, questions, tables=[OFFICIAL_TABLE], lower_db_text=True)


def write_spider(folder: Path, items: list[Any]) -> Path:
    (folder / "database" / "club").mkdir(parents=True)
    db = sqlite3.connect(folder / "database" / "club" / "club.sqlite")
    db.execute("CREATE TABLE player (name TEXT, team TEXT, goals INTEGER)")
    db.executemany("INSERT INTO player VALUES (?, ?, ?)", TABLE["rows"])
    db.commit()
    db.close()
    (folder / "train.json").write_text(json.dumps(items))
    return folder


# One good WikiSQL question over table 1-100-1.
GOOD = {"phase": 1, "table_id": "1-100-1", "question": "How many goals did Ana Silva score?",
        "sql": {"sel": 2, "agg": 0, "conds": [[0, 0, "Ana Silva"]]}}
