"""The rules of Grafana's dashboard-linter v0.1.1, re-implemented because the Go module proxy refuses that module
(``go install github.com/grafana/dashboard-linter@v0.1.1``: "reading .../@v/v0.1.1.info: 403 Forbidden: This module
version is not available").

Rules (the linter's names): uneditable-dashboard, template-datasource, template-job, template-instance,
template-on-time-change-reload, panel-datasource, panel-title-description, panel-units, panel-no-targets,
target-job, target-instance, target-rate-interval, target-counter-agg; plus the ``namespace`` matcher this project
requires. target-promql and template-label-promql (valid PromQL) are checked with the real Prometheus parser
(``promtool check rules``) in the test, see :func:`promql_rule_file`.

PromQL is read by a small tokenizer that knows what these rules need: which names are metric selectors, their
matchers, their range, and the function they are an argument of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

PROMETHEUS = "prometheus"
QUERY_PANELS = {"stat", "singlestat", "graph", "table", "timeseries", "gauge"}
DATASOURCE_PANELS = {"singlestat", "graph", "table", "timeseries"}
# the units of grafana-data's valueFormats the linter accepts (the ones this project could use)
VALID_UNITS = {"none", "string", "short", "percent", "percentunit", "bytes", "decbytes", "bits", "ns", "µs", "ms",
               "s", "m", "h", "d", "dtdurations", "dtdurationms", "ops", "reqps", "rps", "cps", "opm", "rpm", "cpm",
               "currencyUSD", "currencyEUR", "currencyGBP", "bool", "bool_yes_no", "bool_on_off"}
REQUIRED_MATCHERS = ("job", "instance", "namespace")
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset", "and", "or", "unless",
            "atan2"}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}

_TOKEN = re.compile(r"""
    (?P<string>"(?:\\.|[^"\\])*"|'(?:\\.|[^'\\])*'|`[^`]*`)
  | (?P<range>\[[^\]]*\])
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<number>[0-9][0-9.eExXa-fA-F]*)
  | (?P<var>\$\{?[A-Za-z_][A-Za-z0-9_]*\}?)
  | (?P<op>=~|!~|!=|==|>=|<=|[-+*/%^<>=,(){}])
  | (?P<space>\s+)
""", re.VERBOSE)


@dataclass
class Selector:
    metric: str
    matchers: dict[str, tuple[str, str]]
    """label -> (operator, value without quotes)"""
    range: str | None
    function: str | None
    """The function or aggregation whose argument list holds the selector directly."""


def tokens(expr: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while pos < len(expr):
        m = _TOKEN.match(expr, pos)
        if not m:
            raise ValueError(f"cannot read PromQL at {expr[pos:pos + 20]!r} in {expr!r}")
        pos = m.end()
        kind = m.lastgroup or ""
        if kind != "space":
            out.append((kind, m.group()))
    return out


def selectors(expr: str) -> list[Selector]:
    toks = tokens(expr)
    found: list[Selector] = []
    calls: list[str | None] = []  # one entry per open "(": the function name, or None for grouping/label lists
    pending: str | None = None  # an aggregation written `max by (state) (...)`: its "(" comes after the labels
    i = 0
    while i < len(toks):
        kind, text = toks[i]
        nxt = toks[i + 1][1] if i + 1 < len(toks) else ""
        if text == "(":
            calls.append(pending)
            pending = None
        elif kind == "ident" and nxt in ("by", "without") and text not in KEYWORDS:
            pending = text
        elif text == ")":
            calls.pop()
        elif kind == "ident" and text in LABEL_LIST_KEYWORDS and nxt == "(":
            # skip the label list: by (state), on (job), ...
            i += 2
            while toks[i][1] != ")":
                i += 1
        elif kind == "ident" and nxt == "(":
            calls.append(text)
            i += 1
        elif kind == "ident" and text not in KEYWORDS:
            matchers: dict[str, tuple[str, str]] = {}
            if nxt == "{":
                i += 2
                while toks[i][1] != "}":
                    label, op, value = toks[i][1], toks[i + 1][1], toks[i + 2][1]
                    matchers[label] = (op, value[1:-1])
                    i += 3
                    if toks[i][1] == ",":
                        i += 1
            rng = None
            if i + 1 < len(toks) and toks[i + 1][0] == "range":
                rng = toks[i + 1][1][1:-1]
                i += 1
            found.append(Selector(text, matchers, rng, calls[-1] if calls else None))
        i += 1
    return found


def _template(board: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((t for t in board.get("templating", {}).get("list", []) if t.get("name") == name), None)


def _uid(obj: dict[str, Any]) -> str:
    ds = obj.get("datasource")
    return str(ds.get("uid", "")) if isinstance(ds, dict) else str(ds or "")


def lint(board: dict[str, Any]) -> list[str]:
    """The linter's errors and warnings for ``board``, one message each; [] when it is clean."""
    title = board.get("title", "")
    out: list[str] = []
    # uneditable-dashboard
    if board.get("editable", True):
        out.append(f"uneditable-dashboard: '{title}' is editable, it should be set to 'editable: false'")
    # template-datasource
    datasources = [t for t in board.get("templating", {}).get("list", []) if t.get("type") == "datasource"]
    if not datasources:
        out.append(f"template-datasource: '{title}' does not have a templated data source")
    for ds in datasources:
        query = str(ds.get("query", ""))
        if ds.get("name") not in {f"{query.lower()}_datasource"} | ({"datasource"} if len(datasources) == 1 else set()):
            out.append(f"template-datasource: variable named '{ds.get('name')}', should be 'datasource'")
        if ds.get("label") not in {f"{query.title()} data source"} | ({"Data source"} if len(datasources) == 1
                                                                     else set()):
            out.append(f"template-datasource: variable labeled '{ds.get('label')}', should be 'Data source'")
    prometheus = bool(datasources) and datasources[0].get("query") == PROMETHEUS
    # template-job, template-instance
    if prometheus:
        for name in ("job", "instance"):
            t = _template(board, name)
            if t is None:
                out.append(f"template-{name}: '{title}' is missing the {name} template")
                continue
            if _uid(t) not in ("$datasource", "${datasource}"):
                out.append(f"template-{name}: should use datasource '$datasource', is '{_uid(t)}'")
            if t.get("type") != "query":
                out.append(f"template-{name}: should be a Prometheus query, is '{t.get('type')}'")
            if t.get("label") != name.title():
                out.append(f"template-{name}: should be labeled '{name.title()}', is '{t.get('label')}'")
            if not t.get("multi"):
                out.append(f"template-{name}: should be a multi select")
            if t.get("allValue") != ".+":
                out.append(f"template-{name}: allValue should be '.+', is '{t.get('allValue')}'")
    # template-on-time-change-reload
    for t in board.get("templating", {}).get("list", []):
        if t.get("type") == "query" and t.get("refresh") != 2:
            out.append(f"template-on-time-change-reload: variable '{t.get('name')}' refresh is {t.get('refresh')}, "
                       "should be 2 (On Time Range Change)")
    names = {f"${d.get('name')}" for d in datasources} | {f"${{{d.get('name')}}}" for d in datasources}
    for p in board.get("panels", []):
        where = f"panel {p.get('id')} '{p.get('title', '')}'"
        ptype = p.get("type")
        # panel-datasource
        if ptype in DATASOURCE_PANELS and _uid(p) not in names:
            out.append(f"panel-datasource: {where} does not use a templated datasource, uses '{_uid(p)}'")
        # panel-title-description
        if ptype in QUERY_PANELS and (not p.get("title") or not p.get("description")):
            out.append(f"panel-title-description: {where} has no title or no description")
        # panel-units
        unit = p.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        if ptype in QUERY_PANELS and unit not in VALID_UNITS:
            out.append(f"panel-units: {where} has no or invalid units: '{unit}'")
        # panel-no-targets
        if ptype in QUERY_PANELS and not p.get("targets"):
            out.append(f"panel-no-targets: {where} has no targets")
        if not prometheus:
            continue
        for t in p.get("targets", []):
            expr = t.get("expr", "")
            for s in selectors(expr):
                # target-job, target-instance, and namespace
                for label in REQUIRED_MATCHERS:
                    if s.matchers.get(label) != ("=~", f"${label}"):
                        out.append(f"target-{label}: {where} target {t.get('refId')}: selector {s.metric} has no "
                                   f"{label}=~\"${label}\" matcher")
                # target-rate-interval
                if s.range is not None and s.function in ("rate", "irate") and s.range != "$__rate_interval":
                    out.append(f"target-rate-interval: {where} target {t.get('refId')}: {s.function}() over "
                               f"[{s.range}], should use $__rate_interval")
                # target-counter-agg
                if s.metric.endswith("_total") and (s.range is None or s.function not in ("rate", "irate",
                                                                                           "increase")):
                    out.append(f"target-counter-agg: {where} target {t.get('refId')}: counter {s.metric} is not "
                               "aggregated with rate, irate or increase")
    return out


def substitute(expr: str) -> str:
    """``expr`` with Grafana's variables replaced, so that the Prometheus parser can read it."""
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?", r"\1", expr)


def queries(board: dict[str, Any]) -> dict[str, str]:
    """Every PromQL query of ``board`` (targets, and the selectors of label_values() variables) by a name."""
    out = {}
    for p in board.get("panels", []):
        for t in p.get("targets", []):
            out[f"panel_{p['id']}_{t.get('refId', 'A')}"] = t["expr"]
    for v in board.get("templating", {}).get("list", []):
        if v.get("type") != "query":
            continue
        q = v["query"]["query"] if isinstance(v.get("query"), dict) else str(v.get("query", ""))
        m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q)
        out[f"variable_{v['name']}"] = m.group(1) if m else q
    return out


def promql_rule_file(board: dict[str, Any]) -> dict[str, Any]:
    """A Prometheus rule file recording every query of ``board``: ``promtool check rules`` parses each with the
    real PromQL parser (the linter's target-promql and template-label-promql rules)."""
    return {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:{name}", "expr": substitute(expr)} for name, expr in queries(board).items()]}]}
