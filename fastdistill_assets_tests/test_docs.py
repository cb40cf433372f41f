"""The READMEs: the English and the Chinese one document the same commands."""

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
COMMAND = re.compile(r"^(?:\.venv/bin/)?(?:make|fastdistill|dagster)\s+\S.*$")


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


def test_commands_finds_block_and_inline_commands():
    text = "```bash\nmake demo   # run it\nls\n```\nThen `fastdistill run list` or `make`-less `x`."
    assert commands(text) == {"make demo", "fastdistill run list"}


@pytest.mark.parametrize("name", ["README.md", "README.zh.md"])
def test_readme_starts_with_the_two_commands(name):
    first_block = re.search(r"```bash\n(.*?)```", (REPO / name).read_text(), re.DOTALL).group(1)
    assert [line.split("#")[0].strip() for line in first_block.splitlines()] == ["make demo", "make test"]


def test_the_chinese_readme_covers_the_same_commands():
    english, chinese = (commands((REPO / name).read_text()) for name in ("README.md", "README.zh.md"))
    assert len(english) > 10
    assert english - chinese == set()
