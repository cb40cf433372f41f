"""The shipped config files hold only what a user changes: every default lives once, in the
typed models; the commented keys in the files say those defaults; the demo's settings stay in
the demo's own file."""

import re

import pytest
import yaml

from fastdistill_assets.config.loading import load_run_config
from fastdistill_assets.config.models import GatesConfig, RunConfig
from fastdistill_assets_tests.conftest import REPO_CONFIGS

FILES = [("run_config.yaml", RunConfig), ("quality_gates.yaml", GatesConfig)]
COMMENTED_KEY = re.compile(r"^#( *)([a-z_]+:.*)$")   # "#   key: value": a documented default


def leaves(data, prefix=()):
    if isinstance(data, dict) and data:
        for key, value in data.items():
            yield from leaves(value, (*prefix, key))
    else:
        yield prefix, data


def value_at(data, path):
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return KeyError
        data = data[key]
    return data


def uncommented(text: str) -> str:
    """The file with its commented keys uncommented (prose comments dropped)."""
    return "\n".join(m[1][1:] + m[2] if (m := COMMENTED_KEY.match(line)) else line for line in text.splitlines())


@pytest.mark.parametrize("name, model", FILES)
def test_a_shipped_config_sets_nothing_its_model_already_defaults(name, model):
    data = yaml.safe_load((REPO_CONFIGS / name).read_text()) or {}
    defaults = model().model_dump()
    assert [".".join(path) for path, value in leaves(data) if value_at(defaults, path) == value] == []


@pytest.mark.parametrize("name, model", FILES)
def test_the_commented_keys_of_a_shipped_config_say_its_model_s_defaults(name, model):
    text = (REPO_CONFIGS / name).read_text()
    documented = yaml.safe_load(uncommented(text))
    set_here = {path for path, _ in leaves(yaml.safe_load(text) or {})}
    defaults = model().model_dump()
    model.model_validate(documented)  # uncommented, it is a valid config
    shown = [(path, value) for path, value in leaves(documented) if path not in set_here]
    assert len(shown) > 20
    assert [(".".join(path), value, value_at(defaults, path)) for path, value in shown
            if value_at(defaults, path) != value] == []


def test_the_demo_s_settings_apply_to_the_demo_only():
    plain = load_run_config(REPO_CONFIGS / "run_config.yaml", environ={})
    demo = load_run_config(REPO_CONFIGS / "run_config.yaml", environ={}, overlay=REPO_CONFIGS / "demo.yaml")
    assert plain == RunConfig()   # a run created with `fastdistill run new` gets the models' defaults
    assert (plain.dataset.withhold_gold.share, plain.teacher.escalate) == (0.0, None)
    assert demo.dataset.withhold_gold.share == 0.25 and demo.teacher.escalate.provider == "embedded_strong"
