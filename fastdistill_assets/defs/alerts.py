"""Alert sinks: the sensor's tick log always, a JSONL file, and a Slack-compatible webhook when set.

Two kinds of alert go through the same sinks:

* ``check_failed``: one per failed asset check evaluation (``failed_check_alerts``);
* ``run_failed``: one per failed Dagster run (``failed_run_alerts``): a crashed step, a provider
  that is down, a full disk, and also a run stopped by a blocking check. The run alert names the
  failed steps and the first error, and lists the failed checks that were alerted on their own.

The "log" sink is the sensor's own log: it shows under the sensor's ticks in the UI (and in the
daemon's output), not in the failed run's event log.

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

from fastdistill_assets.config import settings
from fastdistill_assets.store.layout import alerts_file

CHECK_FAILED = "check_failed"
RUN_FAILED = "run_failed"


@dataclass(frozen=True)
class Alert:
    asset: str | None
    check: str | None
    partition: str | None
    severity: str
    description: str | None
    dagster_run_id: str
    metadata: dict[str, Any] = field(default_factory=dict)
    kind: str = CHECK_FAILED
    failed_steps: list[str] = field(default_factory=list)
    error: str | None = None
    failed_checks: list[str] = field(default_factory=list)
    ui_path: str | None = None
    artifacts_path: str | None = None
    at: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    def text(self) -> str:
        where = f" for run_id {self.partition}" if self.partition else ""
        if self.kind == RUN_FAILED:
            steps = ", ".join(f"`{s}`" for s in self.failed_steps) or "no step (the run itself)"
            checks = (f" Failed check(s) in this run, each alerted separately: "
                      f"{', '.join(f'`{c}`' for c in self.failed_checks)}." if self.failed_checks else "")
            look = f" See Dagster run {self.dagster_run_id}" + (f" ({self.ui_path})" if self.ui_path else "")
            look += f", artifacts {self.artifacts_path}." if self.artifacts_path else "."
            return (f":x: fastdistill run failed{where}: failed step(s) {steps}: "
                    f"{(self.error or self.description or 'no error message').rstrip('.')}.{checks}{look}")
        return (f":rotating_light: fastdistill check `{self.asset}.{self.check}` failed ({self.severity}){where}: "
                f"{self.description or 'no description'} (Dagster run {self.dagster_run_id})")


def slack_payload(alert: Alert) -> dict[str, Any]:
    """Slack incoming-webhook JSON (``text`` plus the details as fields)."""
    return {"text": alert.text(), "attachments": [{"color": "danger" if alert.severity == "ERROR" else "warning",
                                                   "fields": [{"title": k, "value": str(v), "short": True}
                                                              for k, v in asdict(alert).items()
                                                              if k != "metadata" and v not in (None, [])]}]}


class AlertSinks(dg.ConfigurableResource):
    """Where alerts go. ``webhook_url`` should come from an EnvVar."""

    jsonl_path: str | None = Field(default_factory=lambda: str(alerts_file(settings.artifacts_dir())))
    webhook_url: str | None = None
    timeout_s: float = 5.0

    def send(self, alert: Alert, log: logging.Logger | Any) -> dict[str, str]:
        """Deliver to every configured sink; a sink that fails is reported, never raised."""
        delivered = {"log": "ok"}
        log.warning(alert.text())
        if self.jsonl_path:
            try:
                path = Path(self.jsonl_path)
                path.parent.mkdir(parents=True, exist_ok=True)
                with path.open("a") as handle:
                    handle.write(json.dumps(asdict(alert), default=str) + "\n")
                delivered["jsonl"] = "ok"
            except OSError as err:  # a full disk must not stop the webhook
                delivered["jsonl"] = type(err).__name__
                log.error(f"alert file {self.jsonl_path} not written: {err}")
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
