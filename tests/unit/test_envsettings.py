"""The operator's, the gateway's and the agent runner's settings (pydantic-settings, ``longshot.envsettings``): a
bad value in an environment variable fails naming the variable, the defaults are the documented ones, the
environment is read by ``from_env`` only, and every variable the chart sets is a known setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from longshot import config
from longshot.agent import errors
from longshot.agent import settings as agentsettings
from longshot.api import handoff
from longshot.core import egress
from longshot.core import proxy as cproxy
from longshot.envsettings import EnvSettings, SettingsError
from longshot.gateway.settings import GatewaySettings
from longshot.logs import LogSettings

pytestmark = pytest.mark.unit
TEMPLATES = Path(__file__).resolve().parents[2] / "charts" / "longshot" / "templates"
ALL = (config.Settings, GatewaySettings, agentsettings.Settings, agentsettings.Paths)


@pytest.mark.parametrize(("cls", "name", "value", "why"), [
    (config.Settings, "LONGSHOT_MAX_WORKERS", "many", "valid integer"),
    (config.Settings, "LONGSHOT_MAX_WORKERS", "-1", "greater than or equal to 0"),
    (config.Settings, "LONGSHOT_METRICS_PORT", "70000", "less than or equal to 65535"),
    (config.Settings, "LONGSHOT_KILLSWITCH", "maybe", "valid boolean"),
    (config.Settings, "LONGSHOT_NETWORK_POLICY", "disabled", "valid boolean"),
    (config.Settings, "LONGSHOT_IMAGE_PULL_POLICY", "Sometimes", "'Always', 'IfNotPresent' or 'Never'"),
    (config.Settings, "LONGSHOT_SCAN_TIMEOUT_SECONDS", "1.5s", "valid number"),
    (config.Settings, "LONGSHOT_LEASE_RENEW_SECONDS", "0", "greater than 0"),
    (GatewaySettings, "LONGSHOT_GATEWAY_PORT", "http", "valid integer"),
    (GatewaySettings, "LONGSHOT_GATEWAY_MODEL_CALLS_PER_SECOND", "-2", "greater than or equal to 0"),
    (GatewaySettings, "LONGSHOT_GATEWAY_ALLOW_FILE_URLS", "sure", "valid boolean"),
    (GatewaySettings, "LONGSHOT_GATEWAY_MAX_PUSH_BYTES", "1e9", "valid integer"),
])
def test_a_bad_value_fails_naming_the_variable(cls: type[EnvSettings], name: str, value: str, why: str) -> None:
    with pytest.raises(SettingsError) as e:
        cls.from_env({name: value, "LONGSHOT_UNRELATED": "x"})
    assert str(e.value).startswith(f"{name}={value!r}: ") and why in str(e.value)


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(SettingsError) as e:
        config.Settings.from_env({"LONGSHOT_MAX_WORKERS": "x", "LONGSHOT_METRICS_PORT": "y"})
    assert "LONGSHOT_MAX_WORKERS='x'" in str(e.value) and "LONGSHOT_METRICS_PORT='y'" in str(e.value)


def test_a_long_bad_value_is_shown_bounded() -> None:
    with pytest.raises(SettingsError) as e:
        config.Settings.from_env({"LONGSHOT_MAX_WORKERS": "9" * 10_000 + "x"})
    assert "LONGSHOT_MAX_WORKERS=" in str(e.value) and len(str(e.value)) < 400


def test_the_agent_runner_reports_a_bad_value_as_a_configuration_error() -> None:
    # the runner turns a ConfigError into the Configuration failure class (a retry cannot help)
    with pytest.raises(errors.ConfigError, match=r"^LONGSHOT_RETRY_MAX_ATTEMPTS='eight': .*valid integer"):
        agentsettings.Settings.from_env({"LONGSHOT_RETRY_MAX_ATTEMPTS": "eight"})
    with pytest.raises(errors.ConfigError, match=r"^LONGSHOT_HEARTBEAT_SECONDS='-1': "):
        agentsettings.Settings.from_env({"LONGSHOT_HEARTBEAT_SECONDS": "-1"})


def test_the_defaults() -> None:
    op = config.Settings(identity="x")
    assert (op.agent_image, op.image_pull_policy, op.max_workers, op.killswitch, op.namespace, op.metrics_port,
            op.workspace_max_bytes, op.lease_duration_seconds, op.lease_renew_seconds, op.gateway_url,
            op.network_policy, op.heartbeat_timeout_seconds, op.egress_allowed_hosts, op.egress_allow_file_urls,
            op.scan_timeout_seconds) == (
        "longshot-agent:dev", "IfNotPresent", 50, False, "longshot-system", 8080, 1024**3, 15, 2, "", True, 300,
        "*", True, 90.0)
    assert op.egress_denied_cidrs == ",".join(egress.DEFAULT_DENIED_CIDRS)
    gw = GatewaySettings()
    assert (gw.port, gw.address, gw.namespace, gw.audience, gw.allow_file_urls, gw.max_push_bytes,
            gw.mirror_max_bytes, gw.request_burst, gw.openai_url) == (
        8080, "0.0.0.0", "longshot-system", "longshot-gateway", False, 256 * 1024**2, 2 * 1024**3, 200.0,
        "https://api.openai.com/v1")
    ag = agentsettings.Settings()
    assert (ag.heartbeat_seconds, ag.output_cap, ag.retry_max_attempts, ag.max_corrections) == (30.0, 16_000, 8, 3)
    paths = agentsettings.Paths()
    assert (str(paths.task_input), str(paths.workspace), str(paths.checkout)) == (
        handoff.TASK_INPUT_PATH, handoff.WORKSPACE_DIR, f"{handoff.WORKSPACE_DIR}/repo")


@pytest.mark.parametrize("cls", ALL)
def test_an_empty_environment_is_the_defaults(cls: type[EnvSettings]) -> None:
    made = cls.from_env({"PATH": "/bin"})
    assert made.model_dump(exclude={"identity"}) == cls().model_dump(exclude={"identity"})


def test_the_constructor_never_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # tests and benchmarks build settings in code: what the process environment holds must not leak into them
    monkeypatch.setenv("LONGSHOT_MAX_WORKERS", "3")
    monkeypatch.setenv("LONGSHOT_GATEWAY_PORT", "9999")
    monkeypatch.setenv("LONGSHOT_OUTPUT_CAP", "7")
    assert config.Settings(metrics_port=0).max_workers == 50
    assert GatewaySettings().port == 8080 and agentsettings.Settings().output_cap == 16_000
    # from_env() without a mapping is the process environment
    assert config.Settings.from_env().max_workers == 3
    assert GatewaySettings.from_env().port == 9999 and agentsettings.Settings.from_env().output_cap == 7


def test_the_spellings_the_environment_used_before_still_parse() -> None:
    s = config.Settings.from_env({"LONGSHOT_KILLSWITCH": " Yes ", "LONGSHOT_NETWORK_POLICY": "false",
                                  "LONGSHOT_EGRESS_ALLOW_FILE_URLS": "0", "LONGSHOT_MAX_WORKERS": " 12 ",
                                  "LONGSHOT_SCAN_TIMEOUT_SECONDS": "0.25", "LONGSHOT_NAMESPACE": "ops",
                                  "POD_NAME": "ignored-here", "LONGSHOT_IDENTITY": "replica-a"})
    assert (s.killswitch, s.network_policy, s.egress_allow_file_urls, s.max_workers, s.scan_timeout_seconds,
            s.namespace, s.identity) == (True, False, False, 12, 0.25, "ops", "replica-a")
    # an empty boolean was false, and still is
    assert config.Settings.from_env({"LONGSHOT_NETWORK_POLICY": ""}).network_policy is False


def test_an_empty_variable_is_a_value_for_the_operator_and_the_default_for_the_gateway_and_agent() -> None:
    # as before: the operator's empty LONGSHOT_EGRESS_DENIED_CIDRS is "no range"; the gateway's is the default (the
    # chart writes "none" for an empty list, for both)
    assert config.Settings.from_env({"LONGSHOT_EGRESS_DENIED_CIDRS": ""}).egress_policy().denied_cidrs == ()
    assert GatewaySettings.from_env({"LONGSHOT_GATEWAY_EGRESS_DENIED_CIDRS": ""}).egress_denied_cidrs == \
        ",".join(egress.DEFAULT_DENIED_CIDRS)
    assert GatewaySettings.from_env({"LONGSHOT_GATEWAY_PORT": ""}).port == 8080
    assert agentsettings.Settings.from_env({"LONGSHOT_OUTPUT_CAP": ""}).output_cap == 16_000
    assert str(agentsettings.Paths.from_env({"LONGSHOT_WORKSPACE_DIR": ""}).workspace) == handoff.WORKSPACE_DIR


def test_the_agent_paths_keep_their_variable_names() -> None:
    assert agentsettings.Paths.env_names() == {
        "task_input": "LONGSHOT_TASK_INPUT", "git_credentials": "LONGSHOT_GIT_CREDENTIALS_DIR",
        "llm_credentials": "LONGSHOT_LLM_CREDENTIALS_DIR", "script": "LONGSHOT_SCRIPT_DIR",
        "prompts": "LONGSHOT_PROMPTS_DIR", "skills": "LONGSHOT_SKILLS_DIR",
        "instructions": "LONGSHOT_INSTRUCTIONS_DIR", "workspace": "LONGSHOT_WORKSPACE_DIR",
        "termination_log": "LONGSHOT_TERMINATION_LOG"}
    p = agentsettings.Paths.from_env({"LONGSHOT_GIT_CREDENTIALS_DIR": "/g", "LONGSHOT_SCRIPT_DIR": "/s",
                                      "LONGSHOT_TERMINATION_LOG": "/t"})
    assert (str(p.git_credentials), str(p.script), str(p.termination_log)) == ("/g", "/s", "/t")


def test_settings_are_frozen_and_replace_validates() -> None:
    s = config.Settings(identity="x")
    with pytest.raises(ValidationError):
        s.max_workers = 3  # type: ignore[misc]
    assert s.replace(max_workers=3).max_workers == 3 and s.replace(max_workers=3).identity == "x"
    assert s.max_workers == 50
    with pytest.raises(ValidationError, match="metrics_port"):
        s.replace(metrics_port=-1)
    with pytest.raises(ValidationError, match="no_such_setting"):
        config.Settings(no_such_setting=1)  # type: ignore[call-arg]


def _chart_env(template: str, prefix: str) -> set[str]:
    """The LONGSHOT_* names a Deployment template sets: its literal names and those of the included egressEnv."""
    text = (TEMPLATES / template).read_text()
    names = set(re.findall(r"- name: (LONGSHOT_[A-Z0-9_]+)", text))
    helpers = (TEMPLATES / "_helpers.tpl").read_text()
    egress_block = helpers[helpers.index('define "longshot.egressEnv"'):]
    egress_block = egress_block[:egress_block.index("{{- end -}}")]
    for included in re.findall(r'include "longshot.egressEnv" \(dict "root" \. "prefix" "([A-Z_]+)"\)', text):
        assert included == prefix
        names |= {included + n for n in re.findall(r"- name: \{\{ \.prefix \}\}([A-Z0-9_]+)", egress_block)}
    return names


@pytest.mark.parametrize(("template", "cls"), [("deployment.yaml", config.Settings),
                                               ("gateway-deployment.yaml", GatewaySettings)])
def test_every_variable_the_chart_sets_is_a_setting(template: str, cls: type[EnvSettings]) -> None:
    prefix = str(cls.model_config["env_prefix"])
    names = _chart_env(template, prefix)
    assert len(names) > 15 and any(n.startswith(prefix + "EGRESS_") for n in names)
    # LONGSHOT_LOG_LEVEL and LONGSHOT_LOG_FORMAT: read by both processes at start (longshot.logs)
    known = set(cls.env_names().values()) | set(LogSettings.env_names().values())
    assert {"LONGSHOT_LOG_LEVEL", "LONGSHOT_LOG_FORMAT"} <= names
    assert names <= known, names - known


def test_the_gateway_url_is_the_operators_not_a_gateway_setting() -> None:
    # the prefixes overlap: LONGSHOT_GATEWAY_URL (the operator's) is no gateway setting and is ignored there
    assert "LONGSHOT_GATEWAY_URL" in config.Settings.env_names().values()
    assert "LONGSHOT_GATEWAY_URL" not in GatewaySettings.env_names().values()
    assert GatewaySettings.from_env({"LONGSHOT_GATEWAY_URL": "http://gw"}) == GatewaySettings()


@pytest.mark.parametrize(("cls", "prefix"), [(config.Settings, "LONGSHOT_"), (GatewaySettings, "LONGSHOT_GATEWAY_")])
def test_the_proxy_is_read_from_our_settings_or_the_standard_variables_and_must_be_allowed(
        cls: type[config.Settings] | type[GatewaySettings], prefix: str) -> None:
    allow = f'{prefix}EGRESS_ALLOW=[{{"host": "proxy.corp", "purposes": ["proxy"], "ports": [3128]}}]'
    name, value = allow.split("=", 1)
    standard = cls.from_env({name: value, "https_proxy": "http://proxy.corp:3128", "NO_PROXY": ".corp"})
    assert (standard.proxies().https, standard.proxies().http, standard.proxies().no_proxy) == (
        "http://proxy.corp:3128", None, ("corp",))
    assert cls.env_name("https_proxy") == "HTTPS_PROXY" and cls.env_name("no_proxy") == "NO_PROXY"
    ours = cls.from_env({name: value, f"{prefix}EGRESS_PROXY_URL": "proxy.corp:3128",
                         f"{prefix}EGRESS_NO_PROXY": "none", "HTTPS_PROXY": "http://other:1", "NO_PROXY": "*"})
    assert ours.proxies().urls == ("http://proxy.corp:3128",) and ours.proxies().no_proxy == ()
    assert ours.replace(namespace="x").proxies() == ours.proxies()
    with pytest.raises(SettingsError, match=r"egress.proxy.url 'http://elsewhere:3128' is not in the egress "
                                            r"allowlist for the purpose proxy"):
        cls.from_env({name: value, f"{prefix}EGRESS_PROXY_URL": "http://elsewhere:3128"})
    with pytest.raises(SettingsError, match="credentials in the proxy URL") as e:
        cls.from_env({name: value, "HTTPS_PROXY": "http://me:hunter2@proxy.corp:3128"})
    assert "hunter2" not in str(e.value)
    assert cls.from_env({}).proxies() == cproxy.Proxies()
