"""The chart's alerts (``charts/longshot/files/alerts.yaml``): Prometheus' own promtool checks the rules and runs
their unit tests (``promtool/alerts_test.yaml``: input series and the alerts they must and must not fire); every
alert is tested, has a runbook section in docs/runbooks.md, and reads only metrics Longshot exports."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from longshot import metrics
from longshot.gateway import metrics as gateway_metrics

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "charts" / "longshot" / "files" / "alerts.yaml"
TESTS = Path(__file__).parent / "promtool" / "alerts_test.yaml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
RUNBOOK_BASE = "https://github.com/longshot-dev/longshot/blob/main/docs/runbooks.md"


@pytest.fixture
def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: apt-get install prometheus (hack/cluster/install-deps.sh installs it)"
    return path


def rules() -> list[dict[str, Any]]:
    return [r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]


def test_promtool_checks_the_rules(promtool: str) -> None:
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rules())} rules found" in result.stdout


def test_promtool_unit_tests_of_the_alerts_pass(promtool: str) -> None:
    result = subprocess.run([promtool, "test", "rules", str(TESTS)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_a_changed_rule_fails_its_unit_test(promtool: str, tmp_path: Path) -> None:
    # the unit tests pin the thresholds: a build stalled for 5 minutes must not page
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "alerts.yaml").write_text(RULES.read_text().replace("for: 30m", "for: 5m", 1))
    doc = yaml.safe_load(TESTS.read_text())
    doc["rule_files"] = ["rules/alerts.yaml"]
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(doc))
    result = subprocess.run([promtool, "test", "rules", str(tmp_path / "test.yaml")], capture_output=True, text=True,
                            check=False)
    assert result.returncode != 0
    assert "alertname: LongshotBuildStalled, time: 25m" in result.stdout + result.stderr


def test_every_alert_has_a_test_that_fires_it_and_one_that_does_not() -> None:
    cases = [c for t in yaml.safe_load(TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    for rule in rules():
        mine = [c for c in cases if c["alertname"] == rule["alert"]]
        assert any(c["exp_alerts"] for c in mine), rule["alert"]
        assert any(not c["exp_alerts"] for c in mine), rule["alert"]


def _anchors(markdown: str) -> set[str]:
    # GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#{1,6} (.+)$", markdown, re.MULTILINE)}


def test_every_alert_has_a_runbook_section() -> None:
    anchors = _anchors(RUNBOOKS.read_text())
    for rule in rules():
        url = rule["annotations"]["runbook_url"]
        base, _, anchor = url.partition("#")
        assert base == RUNBOOK_BASE, url  # the chart rewrites this base to prometheusRule.runbookBaseUrl
        assert anchor == rule["alert"].lower() and anchor in anchors, rule["alert"]
        assert {"summary", "description"} <= set(rule["annotations"]), rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]


def test_the_alerts_read_only_metrics_longshot_exports() -> None:
    exported: set[str] = set()
    for registry in (metrics.REGISTRY, gateway_metrics.REGISTRY):
        for family in registry.collect():
            exported |= {s.name for s in family.samples} | {family.name}
    used = {m for r in rules() for m in re.findall(r"\b(longshot_[a-z_]+)", r["expr"])}
    assert used and sorted(used - exported) == []
    # besides them only Prometheus' own `up` (a name before a selector or a range: `up{`, `x[5m]`)
    selected = {m for r in rules() for m in re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]", r["expr"])}
    assert sorted(m for m in selected if not m.startswith("longshot_")) == ["up"]


def test_the_down_alerts_read_up_of_the_operators_and_the_gateways_jobs() -> None:
    """An absent or down operator or gateway pages: `up` of the ServiceMonitors' jobs (named after the Services,
    `<fullname>-metrics` and `<fullname>-gateway`, spelled for release `longshot`; the chart's template puts the
    release's in their place: tests/integration/test_chart.py), with `absent` for no target at all."""
    alerts = {r["alert"]: r for r in rules()}
    for name, job in (("LongshotOperatorDown", "longshot-metrics"), ("LongshotGatewayDown", "longshot-gateway")):
        selector = f'up{{job="{job}", namespace="longshot-system"}}'
        assert alerts[name]["expr"] == f"sum by (namespace, job) ({selector}) == 0 or absent({selector})"
        assert alerts[name]["for"] == "5m" and alerts[name]["labels"]["severity"] == "critical"
