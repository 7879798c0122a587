"""The model proxy's limits are settings the chart sets: every LONGSHOT_GATEWAY_* name in the gateway's
Deployment is a field of GatewaySettings, and the defaults are the documented ones."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit
CHART = Path(__file__).resolve().parents[3] / "charts" / "longshot"


def test_every_gateway_env_of_the_chart_is_a_setting():
    names = set(re.findall(r"LONGSHOT_GATEWAY_([A-Z0-9_]+)", (CHART / "templates" / "gateway-deployment.yaml")
                           .read_text()))
    fields = {name.upper() for name in GatewaySettings.model_fields}
    assert {"MAX_MODEL_REQUEST_BYTES", "MAX_MODEL_CALLS_PER_ATTEMPT", "MODEL_CALLS_PER_SECOND", "MODEL_CALL_BURST",
            "MAX_MODEL_INFLIGHT_BYTES", "DEFAULT_RESERVE_OUTPUT_TOKENS"} <= names
    assert names <= fields


def test_the_chart_defaults_are_the_gateways():
    model = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["model"]
    d = GatewaySettings()
    assert (model["maxRequestBytes"], model["maxCallsPerAttempt"], model["callsPerSecond"], model["callBurst"],
            model["maxInflightBytes"], model["defaultReserveOutputTokens"]) == (
        d.max_model_request_bytes, d.max_model_calls_per_attempt, d.model_calls_per_second, d.model_call_burst,
        d.max_model_inflight_bytes, d.default_reserve_output_tokens) == (
        4 * 1024 * 1024, 4, 2.0, 20, 48 * 1024 * 1024, 4096)


def test_the_mcp_limits_are_chart_values_with_the_gateways_defaults():
    deployment = (CHART / "templates" / "gateway-deployment.yaml").read_text()
    for name in ("MAX_MCP_REQUEST_BYTES", "MAX_MCP_RESPONSE_BYTES", "MCP_TIMEOUT_SECONDS", "MAX_MCP_CALLS_PER_ATTEMPT"):
        assert f"LONGSHOT_GATEWAY_{name}" in deployment
    mcp = yaml.safe_load((CHART / "values.yaml").read_text())["gateway"]["mcp"]
    d = GatewaySettings()
    assert (mcp["maxRequestBytes"], mcp["maxResponseBytes"], mcp["timeoutSeconds"], mcp["maxCallsPerAttempt"]) == (
        d.max_mcp_request_bytes, d.max_mcp_response_bytes, d.mcp_timeout_seconds, d.max_mcp_calls_per_attempt) == (
        256 * 1024, 4 * 1024 * 1024, 120.0, 4)


def test_the_limits_are_read_from_the_environment():
    s = GatewaySettings.from_env({"LONGSHOT_GATEWAY_MAX_MODEL_REQUEST_BYTES": "1048576",
                                  "LONGSHOT_GATEWAY_MODEL_CALLS_PER_SECOND": "0.5"})
    assert (s.max_model_request_bytes, s.model_calls_per_second) == (1048576, 0.5)
