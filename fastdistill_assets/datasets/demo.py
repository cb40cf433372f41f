"""The embedded demo dataset, generated deterministically in the WikiSQL format.

Twelve domains of realistic single-table data (typed columns, 20 to 30 rows per table);
questions with varied phrasing over SELECT, the five aggregates and 0 to 3 WHERE conditions
with =, < and >. Train, dev and test use disjoint tables. Generated once into a folder
(``{split}.jsonl``, ``{split}.tables.jsonl``, ``{split}.db``) and read by the real WikiSQL
loader, so the demo exercises exactly the code path a real WikiSQL download would.
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastdistill_assets.datasets.wikisql import table_name

GENERATOR_VERSION = "demo-v1"
SPLITS: dict[str, tuple[int, int]] = {"train": (11, 17), "dev": (2, 13), "test": (4, 13)}  # tables/domain, q/table

FIRST = ["Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas", "Keiko", "Liam",
         "Maria", "Noah", "Olga", "Pablo", "Quinn", "Rosa", "Samir", "Tara", "Umar", "Vera", "Wen", "Yusuf", "Zoe"]
LAST = ["Adams", "Brooks", "Costa", "Dubois", "Evans", "Fischer", "Garcia", "Hansen", "Ito", "Jensen", "Kowalski",
        "Lopez", "Moreau", "Novak", "Okafor", "Petrov", "Quist", "Rossi", "Silva", "Tanaka", "Ueda", "Varga",
        "Weber", "Xu", "Yilmaz", "Zimmer"]
CITIES = ["Lisbon", "Oslo", "Austin", "Kyoto", "Lyon", "Porto", "Denver", "Seville", "Tampere", "Bergen", "Graz",
          "Leeds", "Malmo", "Quito", "Recife", "Surat", "Turin", "Utrecht", "Valencia", "Wroclaw", "Zagreb",
          "Nagoya", "Perth", "Calgary", "Dublin", "Krakow", "Munich", "Nantes"]
COUNTRIES = ["Portugal", "Norway", "Japan", "France", "Spain", "Finland", "Austria", "England", "Sweden", "Ecuador",
             "Brazil", "India", "Italy", "Netherlands", "Poland", "Croatia", "Australia", "Canada", "Ireland",
             "Germany", "Kenya", "Chile", "Mexico", "Ghana"]
ADJ = ["Silent", "Golden", "Broken", "Hidden", "Last", "Crimson", "Distant", "Frozen", "Electric", "Wild",
       "Quiet", "Burning", "Lost", "Paper", "Iron", "Velvet"]
NOUN = ["River", "Garden", "Empire", "Signal", "Harbor", "Mirror", "Forest", "Letter", "Engine", "Horizon",
        "Orchard", "Lantern", "Station", "Voyage", "Canyon", "Echo"]

Gen = Callable[[random.Random], Any]


def _name(r: random.Random) -> str:
    return f"{r.choice(FIRST)} {r.choice(LAST)}"


def _title(r: random.Random) -> str:
    return f"The {r.choice(ADJ)} {r.choice(NOUN)}"


def _int(lo: int, hi: int) -> Gen:
    return lambda r: r.randint(lo, hi)


def _real(lo: float, hi: float, digits: int = 1) -> Gen:
    return lambda r: round(r.uniform(lo, hi), digits)


def _pick(options: list[str]) -> Gen:
    return lambda r: r.choice(options)


@dataclass(frozen=True)
class DemoColumn:
    header: str
    kind: str  # "text" | "real"
    gen: Gen
    noun: str = ""

    @property
    def phrase(self) -> str:
        return self.noun or self.header.lower()


@dataclass(frozen=True)
class Domain:
    name: str
    columns: tuple[DemoColumn, ...]


DOMAINS: tuple[Domain, ...] = (
    Domain("football", (
        DemoColumn("Player", "text", _name), DemoColumn("Position", "text", _pick(["Goalkeeper", "Defender", "Midfielder", "Forward"])),
        DemoColumn("Club", "text", lambda r: f"{r.choice(CITIES)} {r.choice(['United', 'Rovers', 'Athletic', 'City'])}"),
        DemoColumn("Age", "real", _int(17, 38)), DemoColumn("Goals", "real", _int(0, 35)), DemoColumn("Appearances", "real", _int(1, 52)),
        DemoColumn("Nationality", "text", _pick(COUNTRIES)))),
    Domain("cities", (
        DemoColumn("City", "text", _pick(CITIES)), DemoColumn("Country", "text", _pick(COUNTRIES)),
        DemoColumn("Population", "real", _int(40_000, 9_000_000)), DemoColumn("Area (km2)", "real", _real(20, 1500), "area"),
        DemoColumn("Founded", "real", _int(800, 1950), "founding year"), DemoColumn("Elevation (m)", "real", _int(0, 2800), "elevation"))),
    Domain("movies", (
        DemoColumn("Title", "text", _title), DemoColumn("Director", "text", _name),
        DemoColumn("Genre", "text", _pick(["Drama", "Comedy", "Thriller", "Documentary", "Animation", "Horror", "Western"])),
        DemoColumn("Year", "real", _int(1960, 2024)), DemoColumn("Runtime (min)", "real", _int(72, 190), "runtime"),
        DemoColumn("Box office ($M)", "real", _real(0.5, 900.0), "box office"))),
    Domain("cars", (
        DemoColumn("Model", "text", lambda r: f"{r.choice(['Astra', 'Corsa', 'Vega', 'Nova', 'Orion', 'Pulse', 'Terra'])} {r.randint(100, 990)}"),
        DemoColumn("Manufacturer", "text", _pick(["Volvo", "Fiat", "Skoda", "Mazda", "Kia", "Seat", "Dacia", "Tesla"])),
        DemoColumn("Body style", "text", _pick(["Sedan", "Hatchback", "Wagon", "Coupe", "SUV", "Van"])),
        DemoColumn("Horsepower", "real", _int(70, 520)), DemoColumn("Price ($)", "real", _int(12_000, 110_000), "price"),
        DemoColumn("Year", "real", _int(1995, 2025)))),
    Domain("books", (
        DemoColumn("Title", "text", _title), DemoColumn("Author", "text", _name),
        DemoColumn("Publisher", "text", _pick(["Penguin", "Harper", "Vintage", "Faber", "Picador", "Orbit", "Tor"])),
        DemoColumn("Pages", "real", _int(96, 1100)), DemoColumn("Published", "real", _int(1900, 2024), "publication year"),
        DemoColumn("Rating", "real", _real(2.0, 5.0, 2)))),
    Domain("employees", (
        DemoColumn("Name", "text", _name),
        DemoColumn("Department", "text", _pick(["Sales", "Finance", "Engineering", "Legal", "Marketing", "Support", "Research"])),
        DemoColumn("Job title", "text", _pick(["Analyst", "Manager", "Engineer", "Director", "Intern", "Consultant"]), "job title"),
        DemoColumn("Salary", "real", _int(28_000, 210_000)), DemoColumn("Age", "real", _int(21, 66)),
        DemoColumn("Office", "text", _pick(CITIES)))),
    Domain("mountains", (
        DemoColumn("Peak", "text", lambda r: f"Mount {r.choice(LAST)}"),
        DemoColumn("Range", "text", _pick(["Alps", "Andes", "Rockies", "Pyrenees", "Caucasus", "Atlas", "Dolomites"])),
        DemoColumn("Country", "text", _pick(COUNTRIES)), DemoColumn("Height (m)", "real", _int(1200, 8800), "height"),
        DemoColumn("Prominence (m)", "real", _int(100, 4800), "prominence"),
        DemoColumn("First ascent", "real", _int(1786, 1990), "first ascent year"))),
    Domain("songs", (
        DemoColumn("Song", "text", _title), DemoColumn("Artist", "text", _name), DemoColumn("Album", "text", _title),
        DemoColumn("Length (s)", "real", _int(120, 480), "length"), DemoColumn("Chart position", "real", _int(1, 100)),
        DemoColumn("Year", "real", _int(1965, 2024)))),
    Domain("airports", (
        DemoColumn("Airport", "text", lambda r: f"{r.choice(CITIES)} {r.choice(['International', 'Regional', 'Central', 'Airfield'])}"),
        DemoColumn("City", "text", _pick(CITIES)), DemoColumn("Country", "text", _pick(COUNTRIES)),
        DemoColumn("Passengers (millions)", "real", _real(0.2, 80.0), "passengers"), DemoColumn("Runways", "real", _int(1, 6)),
        DemoColumn("Opened", "real", _int(1920, 2020), "opening year"))),
    Domain("elections", (
        DemoColumn("District", "text", lambda r: f"{r.choice(CITIES)} {r.choice(['North', 'South', 'East', 'West', 'Central'])}"),
        DemoColumn("Candidate", "text", _name),
        DemoColumn("Party", "text", _pick(["Green", "Labour", "Liberal", "Conservative", "Independent", "Social Democrat"])),
        DemoColumn("Votes", "real", _int(800, 95_000)), DemoColumn("Vote share (%)", "real", _real(1.0, 72.0), "vote share"),
        DemoColumn("Year", "real", _int(1990, 2024)))),
    Domain("restaurants", (
        DemoColumn("Restaurant", "text", lambda r: f"{r.choice(['Casa', 'Bistro', 'Chez', 'Taverna', 'Cafe'])} {r.choice(LAST)}"),
        DemoColumn("Cuisine", "text", _pick(["Italian", "Thai", "Mexican", "Japanese", "Indian", "French", "Greek"])),
        DemoColumn("City", "text", _pick(CITIES)), DemoColumn("Rating", "real", _real(2.5, 5.0, 1)),
        DemoColumn("Seats", "real", _int(12, 240)), DemoColumn("Price level", "real", _int(1, 4)))),
    Domain("athletics", (
        DemoColumn("Athlete", "text", _name), DemoColumn("Country", "text", _pick(COUNTRIES)),
        DemoColumn("Event", "text", _pick(["100m", "200m", "400m", "800m", "1500m", "5000m", "Marathon"])),
        DemoColumn("Time (s)", "real", _real(9.6, 8000.0, 2), "time"), DemoColumn("Rank", "real", _int(1, 40)),
        DemoColumn("Year", "real", _int(1980, 2024)))),
)

AGG_TEMPLATES: dict[int, tuple[list[str], list[str]]] = {  # agg -> (with conditions, without)
    0: (["What is the {sel} when {conds}?", "Which {sel} has {conds}?", "Tell me the {sel} for {conds}.",
         "Name the {sel} with {conds}.", "Give the {sel} where {conds}."],
        ["List every {sel}.", "What are all the {sel} values?"]),
    1: (["What is the highest {sel} when {conds}?", "What is the maximum {sel} with {conds}?",
         "Name the largest {sel} for {conds}."], ["What is the highest {sel}?", "What is the maximum {sel}?"]),
    2: (["What is the lowest {sel} when {conds}?", "What is the minimum {sel} with {conds}?",
         "Name the smallest {sel} for {conds}."], ["What is the lowest {sel}?", "What is the minimum {sel}?"]),
    3: (["How many {sel} entries have {conds}?", "What is the number of {sel} when {conds}?",
         "Count the {sel} where {conds}."], ["How many {sel} entries are there?", "Count all {sel} values."]),
    4: (["What is the total {sel} when {conds}?", "What is the sum of {sel} with {conds}?",
         "How much {sel} in total for {conds}?"], ["What is the total {sel}?", "What is the sum of all {sel}?"]),
    5: (["What is the average {sel} when {conds}?", "What is the mean {sel} with {conds}?",
         "What is the average {sel} for {conds}?"], ["What is the average {sel}?", "What is the mean {sel}?"]),
}
COND_TEMPLATES: dict[int, list[str]] = {
    0: ["{col} is {v}", "the {col} is {v}", "{col} of {v}", "a {col} of {v}"],
    1: ["{col} greater than {v}", "{col} more than {v}", "{col} above {v}", "{col} over {v}"],
    2: ["{col} less than {v}", "{col} under {v}", "{col} below {v}", "{col} smaller than {v}"],
}
AGG_WEIGHTS = [45, 10, 10, 15, 10, 10]
N_CONDS_WEIGHTS = [12, 45, 31, 12]


def _fmt(value: Any) -> str:
    return str(value)


def _make_table(r: random.Random, domain: Domain) -> list[list[Any]]:
    return [[c.gen(r) for c in domain.columns] for _ in range(r.randint(20, 30))]


def _make_question(r: random.Random, domain: Domain, rows: list[list[Any]]) -> tuple[str, dict[str, Any]]:
    cols = domain.columns
    agg = r.choices(range(6), weights=AGG_WEIGHTS)[0]
    numeric = [i for i, c in enumerate(cols) if c.kind == "real"]
    sel = r.choice(numeric) if agg in (1, 2, 4, 5) else r.randrange(len(cols))
    n_conds = min(r.choices(range(4), weights=N_CONDS_WEIGHTS)[0], len(cols) - 1)
    anchor = r.choice(rows)
    cond_cols = r.sample([i for i in range(len(cols)) if i != sel], n_conds)
    conds: list[list[Any]] = []
    for c in cond_cols:
        value = anchor[c]
        op = 0
        if cols[c].kind == "real":
            op = r.choice([0, 1, 2])
            lower = sorted({row[c] for row in rows if row[c] < value})
            higher = sorted({row[c] for row in rows if row[c] > value})
            if op == 1 and lower:
                value = lower[-1]
            elif op == 2 and higher:
                value = higher[0]
            else:
                op = 0
        conds.append([c, op, value])
    phrases = [r.choice(COND_TEMPLATES[op]).format(col=cols[c].phrase, v=_fmt(v)) for c, op, v in conds]
    joined = phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1] if phrases else ""
    with_conds, without = AGG_TEMPLATES[agg]
    template = r.choice(with_conds if conds else without)
    question = template.format(sel=cols[sel].phrase, conds=joined)
    return question[0].upper() + question[1:], {"sel": sel, "agg": agg, "conds": conds}


def write_split(folder: Path, split: str, tables_per_domain: int, questions_per_table: int, seed: int) -> None:
    """Write one split in WikiSQL format: `<split>.jsonl`, `<split>.tables.jsonl` and `<split>.db`
    (tables_per_domain tables of every domain, questions_per_table questions each)."""
    r = random.Random(f"{seed}:{split}")
    db = sqlite3.connect(folder / f"{split}.db")
    with (folder / f"{split}.jsonl").open("w") as questions, (folder / f"{split}.tables.jsonl").open("w") as tables:
        for d_index, domain in enumerate(DOMAINS):
            for t_index in range(tables_per_domain):
                table_id = f"{d_index + 1}-{split}{t_index:03d}-{domain.name}"
                rows = _make_table(r, domain)
                types = [c.kind for c in domain.columns]
                tables.write(json.dumps({"id": table_id, "header": [c.header for c in domain.columns],
                                         "types": types, "rows": rows}) + "\n")
                columns = ", ".join(f"col{i} {'REAL' if t == 'real' else 'TEXT'}" for i, t in enumerate(types))
                db.execute(f"CREATE TABLE {table_name(table_id)} ({columns})")
                placeholders = ", ".join("?" for _ in types)
                db.executemany(f"INSERT INTO {table_name(table_id)} VALUES ({placeholders})", rows)
                for _ in range(questions_per_table):
                    question, sketch = _make_question(r, domain, rows)
                    questions.write(json.dumps({"phase": 1, "table_id": table_id, "question": question,
                                                "sql": sketch}) + "\n")
    db.commit()
    db.close()


def generate(folder: Path, seed: int = 7) -> Path:
    """Write the demo dataset into ``folder`` (which must not exist yet)."""
    folder.mkdir(parents=True)
    for split, (tables_per_domain, questions_per_table) in SPLITS.items():
        write_split(folder, split, tables_per_domain, questions_per_table, seed)
    (folder / "VERSION").write_text(GENERATOR_VERSION)
    return folder


def ensure_demo_dataset(root: Path) -> Path:
    """The demo dataset folder under ``root``, generated (atomically) on first use."""
    target = root / GENERATOR_VERSION
    if (target / "VERSION").exists():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=root))
    generate(tmp / "data")
    try:
        (tmp / "data").rename(target)
    except OSError:  # generated concurrently: keep the first
        pass
    shutil.rmtree(tmp, ignore_errors=True)
    return target
