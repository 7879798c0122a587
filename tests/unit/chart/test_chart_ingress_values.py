"""The chart's ingress limits are the servers' settings: every LONGSHOT_WEBHOOK_* and ingress env the chart sets is
a field, and the chart's defaults are the code's (docs/security.md, "One ingress", quotes them)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from longshot import config, metrics
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit
CHART = Path(__file__).resolve().parents[3] / "charts" / "longshot"


def test_every_operator_env_of_the_chart_is_a_setting() -> None:
    names = set(re.findall(r"name: LONGSHOT_([A-Z0-9_]+)", (CHART / "templates" / "deployment.yaml").read_text()))
    fields = {name.upper() for name in config.Settings.model_fields}
    assert {"METRICS_PORT", "WEBHOOK_PORT", "WEBHOOK_PER_SOURCE", "WEBHOOK_RATE_PER_SECOND", "WEBHOOK_BURST",
            "WEBHOOK_BODY_TIMEOUT_SECONDS", "WEBHOOK_MAX_CONNECTIONS"} <= names
    assert {n for n in names if n.startswith(("WEBHOOK_", "METRICS_"))} <= fields


def test_the_chart_defaults_are_the_servers() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    hook, gw = values["webhook"], values["gateway"]["ingress"]
    s, g, limits = config.Settings(), GatewaySettings(), metrics.WebhookLimits()
    assert hook["port"] == s.webhook_port == 8081
    assert (hook["perSource"], hook["ratePerSecond"], hook["burst"], hook["bodyTimeoutSeconds"],
            hook["maxConnections"]) == (s.webhook_per_source, s.webhook_rate_per_second, s.webhook_burst,
                                        s.webhook_body_timeout_seconds, s.webhook_max_connections) \
        == (limits.per_source, limits.rate_per_second, limits.burst, limits.body_seconds,
            limits.max_connections) == (4, 5, 20, 10, 256)
    assert s.webhook_inflight_bytes == limits.inflight_bytes == 16 * 1024 * 1024
    assert (gw["maxInflightBodyBytes"], gw["bodyTimeoutSeconds"], gw["maxRequestsPerAttempt"],
            gw["maxConnections"]) == (g.max_inflight_body_bytes, g.body_timeout_seconds, g.max_requests_per_attempt,
                                      g.max_connections) == (64 * 1024 * 1024, 30, 4, 1024)
    assert values["metrics"]["port"] == s.metrics_port != hook["port"]


def test_the_webhook_and_the_metrics_port_differ() -> None:
    with pytest.raises(ValueError, match=r"webhook_port \(9000\) must differ from metrics_port"):
        config.Settings(metrics_port=9000, webhook_port=9000)
    assert config.Settings(metrics_port=9000, webhook_port=0).webhook_port == 0
