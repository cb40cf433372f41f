"""Loading a config: YAML read and validated into its model, environment variables applied,
and every mistake said in one line that names the file, key or variable (:class:`ConfigError`)."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import (
    ValidationError,
)

from fastdistill_assets.config.models import GatesConfig, ModelT, RunConfig


class ConfigError(ValueError):
    """A user's mistake in a config file, an environment variable or the dataset, said in one
    line that names the file, key or variable and what is expected."""


_URL_PASSWORD = re.compile(r"(://[^/@:\s'\"]*:)[^@\s'\"]*@")   # scheme://user:PASSWORD@


def without_passwords(text: str) -> str:
    """``text`` with the password of every URL in it shown as ``***``: what a message may echo."""
    return _URL_PASSWORD.sub(r"\1***@", text)


def describe_validation_error(err: ValidationError, source: str, env: dict[tuple[str, ...], str] | None = None) -> str:
    """One line for the first problem pydantic found (and how many more), naming the key and,
    where the value came from an environment variable, the variable."""
    first = err.errors()[0]
    loc = tuple(str(part) for part in first["loc"])
    key = ".".join(loc) or "(top level)"
    shown = without_passwords(repr(first["input"]))
    origin = f"{env[loc]}={shown} sets {key}" if env and loc in env else key
    secret = any("key" in part.lower() for part in loc)  # never echo what may be a key
    got = "" if first["type"] in {"missing", "extra_forbidden"} or (env and loc in env) or secret \
        else f" (got {shown})"
    more = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    return f"{source}: {origin}: {first['msg']}{got}{more}"


def read_yaml(path: Path) -> dict[str, Any]:
    """Read a YAML mapping.

    Raises:
        ConfigError: the file is missing, is not valid YAML or does not hold a mapping.
    """
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML: {problem}{where}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a YAML mapping, got {type(data).__name__}")
    return data


def validated(model: type[ModelT], data: dict[str, Any], source: str,
              env: dict[tuple[str, ...], str] | None = None) -> ModelT:
    """``model`` from ``data``; a mistake is a one-line :class:`ConfigError` naming ``source`` and the key."""
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, source, env)) from None


def overlaid(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay``'s keys set over it, mappings merged key by key."""
    merged = dict(base)
    for key, value in overlay.items():
        merged[key] = overlaid(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def load_run_config(path: Path, environ: dict[str, str] | None = None, overlay: Path | None = None) -> RunConfig:
    """The run config at ``path``, with ``overlay``'s settings over it (``configs/demo.yaml`` for the
    demo) and the environment's applied last (see :data:`ENV_SETTINGS`)."""
    data = read_yaml(path)
    source = str(path)
    if overlay is not None:
        data, source = overlaid(data, read_yaml(overlay)), f"{path} with {overlay}"
    env: dict[tuple[str, ...], str] = {}
    if environ is not None:
        data, env = apply_environment(data, environ)
    config = validated(RunConfig, data, source, env)
    paths = {key: _path(value) for key in ("path", "databases", "db_path")
             if isinstance(value := getattr(config.dataset, key), str)}   # (databases: or URLs by db_id)
    # frozen absolute, so steps started from another folder read the same files
    return config.model_copy(update={"dataset": config.dataset.model_copy(update=paths)}) if paths else config


def load_gates(path: Path) -> GatesConfig:
    return validated(GatesConfig, read_yaml(path), str(path))


OLLAMA_PORT = 11434


def ollama_base_url(host: str) -> str:
    """OLLAMA_HOST (``host:port``, ``http://host:port`` or a URL ending in /v1) -> its OpenAI-compatible URL."""
    url = host.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    scheme, _, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if ":" not in authority:  # Ollama's own default port, as the ollama CLI reads OLLAMA_HOST
        authority += f":{OLLAMA_PORT}"
    url = f"{scheme}://{authority}{slash}{path}".rstrip("/")
    return url if url.endswith("/v1") else url + "/v1"


def _path(value: str) -> str:
    return str(Path(value).expanduser().resolve())


@dataclass(frozen=True)
class EnvSetting:
    """An environment variable that sets one run-config key when a run is frozen."""

    variable: str
    key: tuple[str, str]
    provider: str | None = None             # only when the run's teacher.provider is this one
    convert: Callable[[str], Any] = str


# Provider-specific variables first: the generic FASTDISTILL_* ones win over them.
ENV_SETTINGS: tuple[EnvSetting, ...] = (
    EnvSetting("FASTDISTILL_PROVIDER", ("teacher", "provider")),
    EnvSetting("OPENROUTER_MODEL", ("teacher", "model"), "openrouter"),
    EnvSetting("OPENROUTER_TIMEOUT", ("teacher", "timeout_s"), "openrouter"),
    EnvSetting("OPENROUTER_TEMPERATURE", ("decode", "temperature"), "openrouter"),
    EnvSetting("OPENROUTER_MAX_TOKENS", ("decode", "max_tokens"), "openrouter"),
    EnvSetting("OLLAMA_MODEL", ("teacher", "model"), "ollama"),
    EnvSetting("OLLAMA_HOST", ("teacher", "base_url"), "ollama", ollama_base_url),
    EnvSetting("OLLAMA_TIMEOUT", ("teacher", "timeout_s"), "ollama"),
    EnvSetting("FASTDISTILL_MODEL", ("teacher", "model")),
    EnvSetting("FASTDISTILL_BASE_URL", ("teacher", "base_url")),
    EnvSetting("FASTDISTILL_TIMEOUT_S", ("teacher", "timeout_s")),
    EnvSetting("FASTDISTILL_LLM_BATCH_SIZE", ("teacher", "concurrency")),
    EnvSetting("FASTDISTILL_CONCURRENCY", ("teacher", "concurrency")),
    EnvSetting("FASTDISTILL_TEMPERATURE", ("decode", "temperature")),
    EnvSetting("FASTDISTILL_MAX_TOKENS", ("decode", "max_tokens")),
    EnvSetting("FASTDISTILL_DATA_PATH", ("dataset", "path"), convert=_path),
    EnvSetting("FASTDISTILL_DB_PATH", ("dataset", "db_path"), convert=_path),
)


def apply_environment(data: dict[str, Any], environ: dict[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The run config's raw data with :data:`ENV_SETTINGS` applied, and which variable set which key.

    Values are applied when a run is frozen, never later, so the frozen config records what was
    used; they are validated with the rest (a mistake names the variable). A data path also
    picks the dataset kind when it says it (see :func:`dataset_from_path`).
    """
    data = {section: dict(values) if isinstance(values, dict) else values for section, values in data.items()}
    env: dict[tuple[str, ...], str] = {}
    provider = environ.get("FASTDISTILL_PROVIDER") or (data.get("teacher") or {}).get("provider") or "embedded"
    for setting in ENV_SETTINGS:
        value = environ.get(setting.variable, "").strip()
        if not value or (setting.provider is not None and setting.provider != provider):
            continue
        section = data.setdefault(setting.key[0], {})
        if not isinstance(section, dict):
            continue  # the file's own mistake; validation names it
        section[setting.key[1]] = setting.convert(value)
        env[setting.key] = setting.variable
    if "FASTDISTILL_DATA_PATH" in env.values():
        data["dataset"] = dataset_from_path(data["dataset"])
    return data, env


def dataset_from_path(dataset: dict[str, Any]) -> dict[str, Any]:
    """Pick the dataset kind from a data path given by the environment.

    A file ``<split>.jsonl`` with ``<split>.tables.jsonl`` beside it is the official WikiSQL
    layout (its folder is the dataset); any other file is a questions file. A folder keeps a
    wikisql or spider kind; a demo kind with a folder becomes wikisql when the folder holds
    ``*.tables.jsonl`` and spider otherwise (so does a questions kind given a folder).
    """
    path, kind = Path(dataset["path"]), dataset.get("kind", "demo")
    if path.is_file() or path.suffix.lower() in {".jsonl", ".csv", ".parquet"}:
        stem = path.name.removesuffix(".jsonl")
        if path.name.endswith(".jsonl") and (path.parent / f"{stem}.tables.jsonl").is_file():
            return {**dataset, "kind": "wikisql", "path": str(path.parent)}
        return {**dataset, "kind": "questions"}
    if kind in {"wikisql", "spider"}:
        return dataset
    return {**dataset, "kind": "wikisql" if any(path.glob("*.tables.jsonl")) else "spider"}


