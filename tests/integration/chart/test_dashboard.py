"""The chart's Grafana dashboard passes dashboard-linter v0.1.1's rules (re-implemented in ``dashboard_lint``: the Go
module proxy refuses the module) and its every query parses with Prometheus' own PromQL parser (promtool)."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import dashboard_lint as dl
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
BOARD_PATH = ROOT / "charts" / "longshot" / "files" / "dashboard.json"


@pytest.fixture
def board() -> dict[str, Any]:
    return dict(json.loads(BOARD_PATH.read_text()))


def test_the_dashboard_passes_the_linter_rules(board: dict[str, Any]) -> None:
    assert dl.lint(board) == []


def test_every_query_filters_on_job_instance_and_namespace(board: dict[str, Any]) -> None:
    targets = [t for p in board["panels"] for t in p.get("targets", [])]
    assert len(targets) >= 26
    for t in targets:
        for s in dl.selectors(t["expr"]):
            assert {k: s.matchers[k] for k in ("job", "instance", "namespace")} == {
                "job": ("=~", "$job"), "instance": ("=~", "$instance"), "namespace": ("=~", "$namespace")}, t["expr"]


def test_the_variables_chain_namespace_job_instance(board: dict[str, Any]) -> None:
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "job", "instance"]
    assert "$namespace" in variables["job"]["query"]["query"]
    assert "$job" in variables["instance"]["query"]["query"]
    assert all(v.get("description") for v in variables.values() if v["type"] == "query")


def test_every_query_parses_with_the_prometheus_parser(board: dict[str, Any], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: apt-get install prometheus (hack/cluster/install-deps.sh installs it)"
    rules = tmp_path / "dashboard-rules.yaml"
    rules.write_text(yaml.safe_dump(dl.promql_rule_file(board)))
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(dl.queries(board))} rules found" in result.stdout


def test_promtool_refuses_an_invalid_query(board: dict[str, Any], tmp_path: Path) -> None:
    board["panels"][1]["targets"][0]["expr"] = 'sum(rate(longshot_merges_total{job=~"$job"}[$__rate_interval])'
    rules = tmp_path / "bad.yaml"
    rules.write_text(yaml.safe_dump(dl.promql_rule_file(board)))
    result = subprocess.run(["promtool", "check", "rules", str(rules)], capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert "panel_2_A" in result.stdout + result.stderr or "unclosed" in result.stderr


# The re-implemented rules can fail: each breakage is reported by the rule the real linter would report it with.

def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    return next(p for p in board["panels"] if p["title"] == title)


def _broken(board: dict[str, Any], change: str) -> dict[str, Any]:
    b = copy.deepcopy(board)
    if change == "editable":
        b["editable"] = True
    elif change == "description":
        _panel(b, "Merge duration")["description"] = ""
    elif change == "job-matcher":
        t = _panel(b, "Active workers")["targets"][0]
        t["expr"] = t["expr"].replace('job=~"$job",', "")
    elif change == "rate-interval":
        t = _panel(b, "Merges per minute by result")["targets"][0]
        t["expr"] = t["expr"].replace("$__rate_interval", "5m")
    elif change == "counter":
        t = _panel(b, "Tokens (range)")["targets"][0]
        t["expr"] = 'sum(longshot_tokens_total{job=~"$job",instance=~"$instance",namespace=~"$namespace"})'
    elif change == "instance-template":
        b["templating"]["list"] = [v for v in b["templating"]["list"] if v["name"] != "instance"]
    elif change == "all-value":
        next(v for v in b["templating"]["list"] if v["name"] == "job")["allValue"] = ".*"
    elif change == "units":
        _panel(b, "Cost (range)")["fieldConfig"]["defaults"]["unit"] = "dollars"
    elif change == "datasource":
        _panel(b, "Merge duration")["datasource"] = {"type": "prometheus", "uid": "prom-prod"}
    elif change == "refresh":
        b["templating"]["list"][1]["refresh"] = 1
    return b


@pytest.mark.parametrize(("change", "rule"), [
    ("editable", "uneditable-dashboard"), ("description", "panel-title-description"), ("job-matcher", "target-job"),
    ("rate-interval", "target-rate-interval"), ("counter", "target-counter-agg"),
    ("instance-template", "template-instance"), ("all-value", "template-job"), ("units", "panel-units"),
    ("datasource", "panel-datasource"), ("refresh", "template-on-time-change-reload"),
])
def test_each_rule_catches_its_breakage(board: dict[str, Any], change: str, rule: str) -> None:
    problems = dl.lint(_broken(board, change))
    assert problems, change
    assert {p.split(":")[0] for p in problems} == {rule}, problems
