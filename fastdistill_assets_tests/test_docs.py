"""The docs: the README and each topic in docs/, in English and Chinese, document the same
commands, and every command and config key they document exists."""

import re
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

from fastdistill_assets.cli import build_parser
from fastdistill_assets.config.models import GatesConfig, RunConfig

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^(?:\.venv/bin/)?(?:make|fastdistill|dagster)\s+\S.*$")
TOPICS = sorted(p.stem for p in (REPO / "docs").glob("*.md"))
PAIRS = [("README.md", "README.zh.md"), *((f"docs/{t}.md", f"docs/zh/{t}.md") for t in TOPICS)]
EVERY_DOC = [name for pair in PAIRS for name in pair]
# a backticked dotted key that starts with a section of the run config or the gate config
CONFIG_KEY = re.compile(r"^(?P<section>[a-z_]+)\.(?P<rest>[a-z_][a-z0-9_.]*)$")


def commands(markdown: str) -> set[str]:
    """Every command line in the fenced code blocks (comments after `#` left out) and every
    inline code span that is a command."""
    found = set()
    for block in re.findall(r"```[a-z]*\n(.*?)```", markdown, re.DOTALL):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()
            if COMMAND.match(line):
                found.add(line)
    prose = re.sub(r"```.*?```", "", markdown, flags=re.DOTALL)
    found |= {span.strip() for span in re.findall(r"`([^`\n]+)`", prose) if COMMAND.match(span.strip())}
    return found


def _model_of(annotation: object) -> type[BaseModel] | None:
    """The pydantic model an annotation holds (``Model``, ``Model | None``), else None."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def key_exists(model: type[BaseModel], path: list[str]) -> bool:
    """Whether ``path`` names a field of ``model`` (into nested models; a dict's keys are free)."""
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    if typing.get_origin(field.annotation) is dict:
        value = typing.get_args(field.annotation)[1]
        inner = _model_of(value)
        return inner is None or len(path) == 2 or key_exists(inner, path[2:])
    inner = _model_of(field.annotation)
    return inner is not None and key_exists(inner, path[1:])


def config_keys(markdown: str) -> set[str]:
    """Inline code spans that name a key of the run config or the gate config by its section."""
    sections = set(RunConfig.model_fields) | set(GatesConfig.model_fields)
    return {span for span in re.findall(r"`([^`\n]+)`", markdown)
            if (m := CONFIG_KEY.match(span)) and m["section"] in sections and not span.endswith((".py", ".yaml"))}


def test_commands_finds_block_and_inline_commands():
    text = "```bash\nmake demo   # run it\nls\n```\nThen `fastdistill run list` or `make`-less `x`."
    assert commands(text) == {"make demo", "fastdistill run list"}


@pytest.mark.parametrize("name", ["README.md", "README.zh.md"])
def test_readme_starts_with_the_two_commands_and_stays_short(name):
    text = (REPO / name).read_text()
    first_block = re.search(r"```bash\n(.*?)```", text, re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]
    assert len(text.splitlines()) <= 150


def test_every_topic_has_its_chinese_twin_and_the_readmes_map_them_all():
    assert len(TOPICS) >= 8 and sorted(p.stem for p in (REPO / "docs" / "zh").glob("*.md")) == TOPICS
    english, chinese = ((REPO / name).read_text() for name in ("README.md", "README.zh.md"))
    assert all(f"(docs/{t}.md)" in english and f"(docs/zh/{t}.md)" in chinese for t in TOPICS)


@pytest.mark.parametrize("english, chinese", PAIRS)
def test_the_chinese_docs_cover_the_same_commands(english, chinese):
    assert commands((REPO / english).read_text()) - commands((REPO / chinese).read_text()) == set()


def test_every_documented_command_exists():
    """`fastdistill <command> [<subcommand>]` is in the CLI's parser, `make <target>` in the Makefile."""
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.choices and isinstance(a.choices, dict))  # argparse's own
    targets = set(re.findall(r"^([a-z][a-z-]*):", (REPO / "Makefile").read_text(), re.M))
    documented = set().union(*(commands((REPO / name).read_text()) for name in EVERY_DOC))
    assert len(documented) > 20
    unknown = []
    for command in documented:
        words = command.removeprefix(".venv/bin/").split()
        if words[0] == "make":
            unknown += [command] if not set(w for w in words[1:] if "=" not in w) <= targets else []
        elif words[0] == "fastdistill" and words[1].startswith("-"):
            unknown += [command] if words[1] not in parser._option_string_actions else []
        elif words[0] == "fastdistill":
            sub = subparsers.choices.get(words[1])
            nested = next((a for a in (sub._actions if sub else []) if a.choices and isinstance(a.choices, dict)), None)
            if sub is None or (nested is not None and len(words) > 2 and not words[2].startswith("-")
                               and words[2] not in nested.choices):
                unknown.append(command)
    assert unknown == []


def test_every_documented_config_key_exists():
    keys = set().union(*(config_keys((REPO / name).read_text()) for name in EVERY_DOC))
    assert len(keys) > 30  # the docs name many; each must be a real field
    unknown = sorted(key for key in keys if not (key_exists(RunConfig, key.split("."))
                                                  or key_exists(GatesConfig, key.split("."))))
    assert unknown == []


@pytest.mark.parametrize("key, exists", [("decode.temperature", True), ("dataset.withhold_gold.share", True),
                                         ("consistency.min_executed", True), ("checks.any_name.value", True),
                                         ("decode.temprature", False), ("teacher.escalate.nope", False)])
def test_key_exists(key, exists):
    assert (key_exists(RunConfig, key.split(".")) or key_exists(GatesConfig, key.split("."))) is exists
