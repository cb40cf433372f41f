"""Alert sinks: the run log always, a JSONL file, and a Slack-compatible webhook when set.

The webhook URL is a secret (Slack's carry a token): it is never logged or stored.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
from pydantic import Field

from fastdistill_assets import settings


@dataclass(frozen=True)
class Alert:
    asset: str
    check: str
    partition: str | None
    severity: str
    description: str | None
    dagster_run_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"))

    def text(self) -> str:
        where = f" for run_id {self.partition}" if self.partition else ""
        return (f":rotating_light: fastdistill check `{self.asset}.{self.check}` failed ({self.severity}){where}: "
                f"{self.description or 'no description'}")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON (``text`` plus the details as fields)."""
    return {"text": alert.text(), "attachments": [{"color": "danger" if alert.severity == "ERROR" else "warning",
                                                   "fields": [{"title": k, "value": str(v), "short": True}
                                                              for k, v in asdict(alert).items() if k != "metadata"]}]}


class AlertSinks(dg.ConfigurableResource):
    """Where alerts go. ``webhook_url`` should come from an EnvVar."""

    jsonl_path: str | None = Field(default_factory=lambda: str(settings.artifacts_dir() / "_alerts" / "alerts.jsonl"))
    webhook_url: str | None = None
    timeout_s: float = 5.0

    def send(self, alert: Alert, log: logging.Logger | Any) -> dict[str, str]:
        """Deliver to every configured sink; a sink that fails is reported, never raised."""
        delivered = {"log": "ok"}
        log.warning(alert.text())
        if self.jsonl_path:
            path = Path(self.jsonl_path)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("a") as handle:
                handle.write(json.dumps(asdict(alert), default=str) + "\n")
            delivered["jsonl"] = "ok"
        if self.webhook_url:
            delivered["webhook"] = self._post(alert)
            if delivered["webhook"] != "ok":
                log.error(f"alert webhook failed: {delivered['webhook']}")
        return delivered

    def _post(self, alert: Alert) -> str:
        request = urllib.request.Request(self.webhook_url, data=json.dumps(slack_payload(alert)).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310 - configured URL
                return "ok" if 200 <= response.status < 300 else f"HTTP {response.status}"
        except urllib.error.HTTPError as err:
            return f"HTTP {err.code}"
        except (urllib.error.URLError, TimeoutError, OSError) as err:
            return type(err).__name__
