"""The provider gateway: one OpenAI-compatible surface for every provider.

Settings, later wins: the provider's entry in ``configs/provider_gateway.yaml`` (over its
``defaults`` section, over :class:`ProviderSettings`); the run's frozen overrides
(``teacher.base_url``, ``timeout_s``, ``concurrency``, set in the run config or by environment
variables when the run was created); then fields set on the resource. The API key comes from the
resource's ``api_key`` (an ``EnvVar``) or from the variable named by the provider's
``api_key_env``; it is never logged, stored or put in metadata. The ``embedded`` and ``student``
providers start a server on 127.0.0.1 for the call unless a base URL is given. Responses are
cached under the endpoint's identity (``teacher.cache``): ``<provider>@<base URL>``, or for a
server started here ``local:embedded`` / ``local:student:<weights sha256>``. The run's
``teacher.error_profile`` reaches the embedded teacher the gateway starts through the overrides
(``TeacherConfig.endpoint_overrides``); a profile that is not clean is named in the identity,
``local:embedded:<profile sha256[:12]>``, so answers of one profile are never served for another.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from fastdistill_assets.config import settings
from fastdistill_assets.config.loading import ConfigError, validated
from fastdistill_assets.config.models import (
    ERROR_PROFILE_KEY,
    DecodeProfile,
    TeacherErrorProfile,
)
from fastdistill_assets.store.layout import response_cache
from fastdistill_assets.teacher.batch import BatchOptions
from fastdistill_assets.teacher.budget import SpendLimit
from fastdistill_assets.teacher.cache import (
    ResponseCache,
    endpoint_identity,
    local_identity,
)
from fastdistill_assets.teacher.generation import (
    EndpointSettings,
    GenerationRequest,
    GenerationResult,
    Generator,
    ProgressFn,
)
from fastdistill_assets.teacher.provider_config import (
    GatewayConfig,
    Prices,
    ProviderSettings,
    load_gateway_config,
)
from fastdistill_assets.teacher.server import (
    EMBEDDED_MODEL_NAME,
    ChatServer,
    InProcessChat,
    embedded_model,
    embedded_teacher,
)

API_KEY_ENV = "FASTDISTILL_API_KEY"  # the resource's api_key (an EnvVar), for any provider
_RESOURCE_OVERRIDES = ("base_url", "timeout_s", "concurrency", "max_retries", "requests_per_minute",
                       "tokens_per_minute")


def error_profile(overrides: Mapping[str, Any] | None) -> TeacherErrorProfile | None:
    """The embedded teacher's error profile in the run's overrides; None when absent or clean.

    Raises:
        ConfigError: the profile does not validate.
    """
    value = (overrides or {}).get(ERROR_PROFILE_KEY)
    if value is None:
        return None
    profile = value if isinstance(value, TeacherErrorProfile) else validated(
        TeacherErrorProfile, dict(value), f"teacher.{ERROR_PROFILE_KEY}")
    return None if profile.is_clean else profile


def endpoint_settings(overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """The overrides that are provider settings (the error profile is not one)."""
    return {key: value for key, value in (overrides or {}).items() if key != ERROR_PROFILE_KEY}


def _model(model: str | None, entry: ProviderSettings) -> str:
    """The model a call asks for: the run's, else the provider's default."""
    return model or entry.model or "default"


class LocalStudents(dg.ConfigurableResource):
    """Serves the ``student`` provider: a run's trained student behind a local server.

    The teacher plane does not load students. The training plane passes its implementation in
    (``training.serving.StudentServers`` as the gateway's ``students``); this base serves none.
    """

    def start(self, run_id: str) -> tuple[ChatServer, str]:
        """A server (not yet started) for the student trained in ``run_id``, and its cache identity.

        Raises:
            ConfigError: no student can be served here.
        """
        raise ConfigError("the student provider is not available: the teacher resource has no students server")


class ProviderGateway(dg.ConfigurableResource):
    """Calls a teacher (or judge) through an OpenAI-compatible ``/chat/completions``."""

    config_path: str = Field(default_factory=lambda: str(settings.configs_dir() / "provider_gateway.yaml"))
    cache_path: str = Field(default_factory=lambda: str(response_cache(settings.artifacts_dir())))
    students: LocalStudents | None = Field(
        default=None, description="serves the `student` provider (the training plane passes in StudentServers)")
    api_key: str | None = Field(default=None, description="API key (use an EnvVar); overrides api_key_env")
    base_url: str | None = None
    timeout_s: float | None = None
    concurrency: int | None = None
    max_retries: int | None = None
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None

    def gateway_config(self) -> GatewayConfig:
        """Raises:
            ConfigError: the gateway file is missing or malformed."""
        return load_gateway_config(Path(self.config_path))

    def settings(self, provider: str, overrides: Mapping[str, Any] | None = None) -> ProviderSettings:
        """A provider's settings with the run's ``overrides`` and the resource's fields applied.

        Raises:
            ConfigError: unknown provider or a setting out of range.
        """
        resource = {key: getattr(self, key) for key in _RESOURCE_OVERRIDES if getattr(self, key) is not None}
        return self.gateway_config().provider(provider, **{**endpoint_settings(overrides), **resource})

    def api_key_for(self, provider: str, entry: ProviderSettings) -> str | None:
        """The key the provider needs, or None where it needs none.

        Raises:
            ConfigError: the provider needs a key and its variable is unset.
        """
        key_env = entry.api_key_env
        api_key = self.api_key or (os.environ.get(key_env) if key_env else None)
        if key_env and not api_key:
            raise ConfigError(f"provider {provider!r} needs an API key: set {key_env} (or {API_KEY_ENV})")
        return api_key

    def check(self, provider: str, overrides: Mapping[str, Any] | None = None) -> ProviderSettings:
        """What a call to ``provider`` needs, checked before anything runs: a known provider whose
        settings validate, a base URL (the local providers start their own server) and its key.

        Raises:
            ConfigError: the first problem, in one line.
        """
        entry = self.settings(provider, overrides)
        if entry.local_kind(provider) is None and not entry.base_url:
            raise ConfigError(f"provider {provider!r} has no base_url: set it in provider_gateway.yaml "
                              "or teacher.base_url")
        self.api_key_for(provider, entry)
        return entry

    def teacher_identity(self, provider: str, model: str | None, overrides: Mapping[str, Any] | None = None) -> str:
        """``<model>@<provider or base URL>``: the model a call would reach (``model``, else the
        provider's default), for what must change when the teacher does (a stage's fingerprint).

        Raises:
            ConfigError: unknown provider or a setting out of range.
        """
        entry = self.settings(provider, overrides)
        return f"{_model(model, entry)}@{entry.base_url or provider}"

    def endpoint(self, provider: str, model: str | None, decode: DecodeProfile,
                 overrides: Mapping[str, Any] | None = None, base_url: str | None = None,
                 cache_identity: str | None = None) -> EndpointSettings:
        """Resolve the settings for one provider and decode profile. ``base_url`` and ``cache_identity``
        are given for a server the gateway started; otherwise the identity is ``<provider>@<base URL>``.

        Raises:
            ConfigError: unknown provider, no base URL, a missing key or a setting out of range.
        """
        entry = self.check(provider, overrides)
        url = base_url or entry.base_url
        if not url:
            raise ConfigError(f"provider {provider!r} is started by the gateway: call open(), not endpoint()")
        return EndpointSettings(
            base_url=url, model=_model(model, entry),
            cache_identity=cache_identity or endpoint_identity(provider, url),
            api_key=self.api_key_for(provider, entry),
            timeout_s=entry.timeout_s, max_retries=entry.max_retries, concurrency=entry.concurrency,
            requests_per_minute=entry.requests_per_minute, tokens_per_minute=entry.tokens_per_minute,
            max_inflight_tokens=entry.max_inflight_tokens, backoff_base_s=entry.backoff_base_s,
            backoff_max_s=entry.backoff_max_s, breaker_failures=entry.breaker_failures,
            breaker_silence_s=entry.breaker_silence_s, temperature=decode.temperature, top_p=decode.top_p,
            max_tokens=decode.max_tokens, send_seed=decode.num_generations > 1, supports_n=entry.supports_n,
        )

    def prices(self, provider: str, batch: bool = False) -> Prices:
        """The provider's prices; ``batch``: through the Batch API."""
        return self.gateway_config().provider(provider).prices(batch)

    @contextlib.contextmanager
    def open(self, provider: str, model: str | None, decode: DecodeProfile,
             overrides: Mapping[str, Any] | None = None) -> Iterator[EndpointSettings]:
        """Endpoint settings for the call; starts and stops a local server where the provider is local.

        ``embedded`` serves the package's baseline teacher with the overrides' error profile (cache
        identity ``local:embedded``, or ``local:embedded:<profile fingerprint>`` with a profile),
        behind a local server or, with ``in_process: true``, answered in this process;
        ``student`` serves the student trained in run ``model``, the born-again chain (cache identity
        ``local:student:<weights sha256>``). Their port changes every time, so it is no identity.
        """
        entry = self.settings(provider, overrides)
        kind = entry.local_kind(provider)
        if kind is None or entry.base_url:
            yield self.endpoint(provider, model, decode, overrides)
            return
        if kind == "student":
            if not model:
                raise ConfigError("the student provider needs teacher.model = the parent run_id")
            server, identity = (self.students or LocalStudents()).start(model)
        else:
            profile = error_profile(overrides)
            identity = local_identity(provider, profile.fingerprint() if profile else None)
            if entry.in_process:
                chat = InProcessChat(embedded_model(profile), EMBEDDED_MODEL_NAME)
                yield dataclasses.replace(self.endpoint(provider, model, decode, overrides, base_url=chat.base_url,
                                                        cache_identity=identity), transport=chat)
                return
            server = embedded_teacher(error_profile=profile)
        with server:
            yield self.endpoint(provider, model, decode, overrides, base_url=server.base_url, cache_identity=identity)

    @contextlib.contextmanager
    def session(self, provider: str, model: str | None, decode: DecodeProfile, progress: ProgressFn | None = None,
                concurrency: int | None = None, overrides: Mapping[str, Any] | None = None,
                spend: SpendLimit | None = None, batch: BatchOptions | None = None) -> Iterator[Generator]:
        """A generator over the cache and the provider, for several batches of requests (a local
        provider's server stays up between them). ``generator.calls`` counts the calls made.
        ``overrides``: the run's frozen endpoint settings (see ``TeacherConfig.endpoint_overrides``);
        ``spend``: a hard budget over all its requests (``teacher.budget``); ``batch``: through the
        Batch API (``teacher.mode: batch``)."""
        cache = ResponseCache(Path(self.cache_path))
        try:
            with self.open(provider, model, decode, overrides) as endpoint:
                if concurrency:
                    endpoint = dataclasses.replace(endpoint, concurrency=concurrency)
                yield Generator(endpoint, cache, decode.key(), progress, spend=spend, batch=batch)
        finally:
            cache.close()

    def generate(self, requests: Sequence[GenerationRequest], provider: str, model: str | None,
                 decode: DecodeProfile, progress: ProgressFn | None = None, concurrency: int | None = None,
                 overrides: Mapping[str, Any] | None = None) -> tuple[list[GenerationResult], EndpointSettings, int]:
        """Run one batch of requests through a :meth:`session`. Returns (results, settings, calls made)."""
        with self.session(provider, model, decode, progress, concurrency, overrides) as generator:
            results = generator.run(requests)
        return results, generator.settings, generator.calls
