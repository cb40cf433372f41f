"""The provider gateway: one OpenAI-compatible surface for every provider.

Settings are merged in this order (later wins): ``defaults`` and the provider's entry in
``configs/provider_gateway.yaml``; environment variables ``FASTDISTILL_BASE_URL``,
``FASTDISTILL_TIMEOUT_S``, ``FASTDISTILL_CONCURRENCY``; then fields set on the resource.
The API key comes from the resource's ``api_key`` (an ``EnvVar``) or from the variable
named by the provider's ``api_key_env``; it is never logged, stored or put in metadata.
The ``embedded`` provider starts the package's own server on 127.0.0.1 for the call.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field, PrivateAttr

from fastdistill_assets import settings
from fastdistill_assets.config import DecodeProfile, read_yaml
from fastdistill_assets.teacher.cache import ResponseCache
from fastdistill_assets.teacher.generation import (EndpointSettings, GenerationRequest, GenerationResult, Generator,
                                                   ProgressFn)

ENV_OVERRIDES = {"FASTDISTILL_BASE_URL": "base_url", "FASTDISTILL_TIMEOUT_S": "timeout_s",
                 "FASTDISTILL_CONCURRENCY": "concurrency"}
_NUMERIC = {"timeout_s": float, "concurrency": int}


class ProviderGateway(dg.ConfigurableResource):
    """Calls a teacher (or judge) through an OpenAI-compatible ``/chat/completions``."""

    config_path: str = Field(default_factory=lambda: str(settings.configs_dir() / "provider_gateway.yaml"))
    cache_path: str = Field(default_factory=lambda: str(settings.artifacts_dir() / "_cache" / "responses.sqlite"))
    artifacts_dir: str = Field(default_factory=lambda: str(settings.artifacts_dir()),
                               description="where the `student` provider finds a run's trained student")
    api_key: str | None = Field(default=None, description="API key (use an EnvVar); overrides api_key_env")
    base_url: str | None = None
    timeout_s: float | None = None
    concurrency: int | None = None
    max_retries: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    _last_generator: Generator | None = PrivateAttr(default=None)

    def provider_entry(self, provider: str) -> dict[str, Any]:
        config = read_yaml(Path(self.config_path))
        providers = config.get("providers", {})
        if provider not in providers:
            raise ValueError(f"unknown provider {provider!r}; configured: {sorted(providers)}")
        return {**config.get("defaults", {}), **(providers[provider] or {})}

    def endpoint(self, provider: str, model: str | None, decode: DecodeProfile, base_url: str | None = None) -> EndpointSettings:
        """Resolve the settings for one provider and decode profile."""
        entry = self.provider_entry(provider)
        for env, key in ENV_OVERRIDES.items():
            if os.environ.get(env):
                entry[key] = _NUMERIC.get(key, str)(os.environ[env])
        for key in ("base_url", "timeout_s", "concurrency", "max_retries", "requests_per_minute", "tokens_per_minute"):
            if getattr(self, key) is not None:
                entry[key] = getattr(self, key)
        entry["base_url"] = base_url or entry.get("base_url")
        if not entry["base_url"]:
            raise ValueError(f"provider {provider!r} has no base_url")
        key_env = entry.get("api_key_env")
        api_key = self.api_key or (os.environ.get(key_env) if key_env else None)
        if key_env and not api_key:
            raise ValueError(f"provider {provider!r} needs an API key: set {key_env} or FASTDISTILL_API_KEY")
        return EndpointSettings(
            base_url=entry["base_url"], model=model or entry.get("model") or "default", api_key=api_key,
            timeout_s=float(entry.get("timeout_s", 60)), max_retries=int(entry.get("max_retries", 5)),
            concurrency=int(entry.get("concurrency", 32)), requests_per_minute=entry.get("requests_per_minute"),
            tokens_per_minute=entry.get("tokens_per_minute"), max_inflight_tokens=entry.get("max_inflight_tokens"),
            backoff_base_s=float(entry.get("backoff_base_s", 0.5)), backoff_max_s=float(entry.get("backoff_max_s", 30)),
            temperature=decode.temperature, top_p=decode.top_p, max_tokens=decode.max_tokens,
            send_seed=decode.num_generations > 1,
        )

    def prices(self, provider: str) -> tuple[float | None, float | None]:
        entry = self.provider_entry(provider)
        return entry.get("price_in_per_mtok"), entry.get("price_out_per_mtok")

    @contextlib.contextmanager
    def open(self, provider: str, model: str | None, decode: DecodeProfile) -> Iterator[EndpointSettings]:
        """Endpoint settings for the call; starts and stops a local server where the provider is local.

        ``embedded`` serves the package's baseline teacher; ``student`` serves the student trained
        in run ``model`` (the born-again chain).
        """
        local = provider in ("embedded", "student") and not self.base_url and not os.environ.get("FASTDISTILL_BASE_URL")
        if not local:
            yield self.endpoint(provider, model, decode)
            return
        if provider == "student":
            from fastdistill_assets.config import RunRegistry
            from fastdistill_assets.training.serving import student_server

            if not model:
                raise ValueError("the student provider needs teacher.model = the parent run_id")
            server = student_server(RunRegistry(Path(self.artifacts_dir), Path(self.config_path).parent), model)
        else:
            from fastdistill_assets.teacher.server import embedded_teacher

            server = embedded_teacher()
        with server:
            yield self.endpoint(provider, model, decode, base_url=server.base_url)

    def generate(self, requests: Sequence[GenerationRequest], provider: str, model: str | None,
                 decode: DecodeProfile, progress: ProgressFn | None = None,
                 concurrency: int | None = None) -> tuple[list[GenerationResult], EndpointSettings, int]:
        """Run requests through the cache and the provider. Returns (results, settings, calls made)."""
        cache = ResponseCache(Path(self.cache_path))
        try:
            with self.open(provider, model, decode) as endpoint:
                if concurrency:
                    endpoint = dataclasses.replace(endpoint, concurrency=concurrency)
                generator = Generator(endpoint, cache, decode.key(), progress)
                results = generator.run(requests)
        finally:
            cache.close()
        return results, endpoint, generator.calls
