"""``configs/provider_gateway.yaml`` as a typed model: the only copy of the gateway's defaults.

The file has a ``defaults`` section (settings for every provider) and ``providers`` (one entry
per provider name; an entry's settings win over ``defaults``, which win over the defaults here).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from fastdistill_assets.config.loading import ConfigError, read_yaml, validated

LOCAL_PROVIDERS = ("embedded", "student")   # served on 127.0.0.1 by the gateway itself


class Prices(NamedTuple):
    """Dollars per million tokens: input, output and input served from the provider's prompt cache
    (None: the full input price). An unknown input or output price leaves a cost unknown."""

    price_in: float | None
    price_out: float | None
    price_cached_in: float | None = None


def dollars(input_tokens: int, output_tokens: int, prices: Prices, cached_tokens: int = 0) -> float | None:
    """What tokens cost at ``prices``, ``cached_tokens`` of the input at the cached price; None when
    the input or output price is unknown."""
    prices = Prices(*prices)   # a plain (in, out) tuple too
    if prices.price_in is None or prices.price_out is None:
        return None
    cached_price = prices.price_in if prices.price_cached_in is None else prices.price_cached_in
    return round(((input_tokens - cached_tokens) * prices.price_in + cached_tokens * cached_price
                  + output_tokens * prices.price_out) / 1e6, 6)


class ProviderSettings(BaseModel):
    """One provider's settings. ``api_key_env`` names the variable holding its key (never the key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # a variable name
    timeout_s: float = Field(default=60.0, gt=0)
    max_retries: int = Field(default=5, ge=0)
    concurrency: int = Field(default=32, ge=1)
    requests_per_minute: float | None = Field(default=None, gt=0)
    tokens_per_minute: float | None = Field(default=None, gt=0)
    max_inflight_tokens: int | None = Field(default=None, ge=1)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_max_s: float = Field(default=30.0, gt=0)
    # the circuit breaker: stop asking once this many attempts in a row could not connect or timed out
    # and no request has succeeded for breaker_silence_s
    breaker_failures: int = Field(default=10, ge=1)
    breaker_silence_s: float = Field(default=60.0, gt=0)
    price_in_per_mtok: float | None = Field(default=None, ge=0)
    price_cached_in_per_mtok: float | None = Field(default=None, ge=0)  # a prompt-cache hit's input (null: full price)
    price_out_per_mtok: float | None = Field(default=None, ge=0)
    supports_n: bool = False    # accepts OpenAI's ``n``: one request for all of a prompt's answers
    batch_price_factor: float = Field(default=1.0, gt=0, le=1)  # the Batch API's prices as a share of these
    in_process: bool = False    # embedded only: answer in this process, no local server (for benchmarks)
    # served on 127.0.0.1 by the gateway as the embedded teacher or a student (the entries named
    # embedded and student are); lets another entry serve the embedded teacher under its own prices
    serves: Literal["embedded", "student"] | None = None

    def prices(self, batch: bool = False) -> Prices:
        """Dollars per million tokens; ``batch``: through the Batch API (times ``batch_price_factor``)."""
        factor = self.batch_price_factor if batch else 1.0
        return Prices(*(None if p is None else p * factor for p in (
            self.price_in_per_mtok, self.price_out_per_mtok, self.price_cached_in_per_mtok)))

    def local_kind(self, provider: str) -> str | None:
        """What the gateway serves itself for this entry (``embedded``, ``student``), or None for a remote one."""
        return self.serves or (provider if provider in LOCAL_PROVIDERS else None)


DEFAULTS = ProviderSettings()


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    providers: dict[str, ProviderSettings]

    def provider(self, name: str, **overrides: Any) -> ProviderSettings:
        """A provider's settings with ``overrides`` (None values ignored) applied and checked.

        Raises:
            ConfigError: unknown provider, or an override out of range.
        """
        if name not in self.providers:
            raise ConfigError(f"unknown provider {name!r}: provider_gateway.yaml has {', '.join(sorted(self.providers))}")
        updates = {key: value for key, value in overrides.items() if value is not None}
        return validated(ProviderSettings, {**self.providers[name].model_dump(exclude_unset=True), **updates},
                         f"provider {name!r}")


def load_gateway_config(path: Path) -> GatewayConfig:
    """Read and check ``provider_gateway.yaml``.

    Raises:
        ConfigError: a missing or malformed file, an unknown key or a value out of range (one line
            naming the file and the key).
    """
    data = read_yaml(path)
    unknown = set(data) - {"defaults", "providers"}
    if unknown:
        raise ConfigError(f"{path}: unknown section {sorted(unknown)[0]!r} (expected defaults, providers)")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{path}: defaults must be a mapping")
    validated(ProviderSettings, defaults, f"{path}: defaults")
    providers = data.get("providers") or {}
    if not isinstance(providers, dict) or not providers:
        raise ConfigError(f"{path}: providers must map provider names to their settings")
    merged: dict[str, Any] = {}
    for name, entry in providers.items():
        if entry is not None and not isinstance(entry, dict):
            raise ConfigError(f"{path}: providers.{name} must be a mapping")
        merged[name] = {**defaults, **(entry or {})}
    return validated(GatewayConfig, {"providers": merged}, str(path))
