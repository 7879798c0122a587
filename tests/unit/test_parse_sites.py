"""Every parse in the product goes through a bounded parser, or is listed here with why its input is trusted.

The sites are found in the source (an AST walk of ``operator/longshot``): calls of ``json.loads``/``json.load``,
``<response>.json()``, protobuf's ``ParseFromString`` and ``yaml.load``/``yaml.safe_load``. A new parse of outside
bytes that does not use ``api.boundedjson`` (JSON) or ``gateway.traces``' wire walk (OTLP) fails this test until it
does, or until it is listed in TRUSTED with the reason its input is not an adversary's.
"""

from __future__ import annotations

import ast
import functools
from collections import Counter
from pathlib import Path

import longshot

ROOT = Path(longshot.__file__).parent

TRUSTED: dict[tuple[str, str], tuple[int, str]] = {
    # (module, parse) -> (how many, why the input is trusted)
    ("api/boundedjson.py", "json.loads"): (1, "the bounded parser itself, after its budget is checked"),
    ("runtime/kube.py", "json.loads"): (1, "the Kubernetes API server's answer"),
    ("runtime/leader.py", "json.loads"): (2, "the Kubernetes API server's answers"),
    ("runtime/listwatch.py", "json.loads"): (2, "the Kubernetes API server's lists and watch events"),
    ("runtime/netpol.py", "json.loads"): (1, "the operator's own settings (chart values)"),
    ("core/egress.py", "json.loads"): (1, "the egress allowlist of the operator's own settings (chart values)"),
    ("core/admission.py", "json.loads"): (1, "the tenants, node selector and tolerations of the operator's own "
                                             "settings (chart values)"),
    ("gateway/pricing.py", "yaml.safe_load"): (1, "the gateway's price table (chart values)"),
    ("gateway/hook.py", "json.loads"): (1, "the scope the gateway itself put into the hook's environment"),
    ("cli/main.py", "json.loads"): (2, "kubectl longshot: the user's own API server, in the user's process"),
    ("cli/main.py", "yaml.safe_load"): (1, "kubectl longshot: the user's own kubeconfig files (size-bounded)"),
    ("cli/errors.py", "json.loads"): (1, "kubectl longshot: the Status body of the user's own API server"),
    ("agent/delegation.py", "json.loads"): (2, "the agent Pod: the tenant's process parsing its own input"),
    ("agent/tools.py", "json.loads"): (2, "the agent Pod: the tenant's process parsing its model's answer"),
    ("agent/backends/http.py", ".json()"): (3, "the agent Pod: the tenant's process parsing its model's answer"),
    ("agent/backends/openai.py", "json.loads"): (1, "the agent Pod: its model's answer"),
    ("agent/backends/anthropic.py", "json.loads"): (1, "the agent Pod: its model's answer"),
    ("agent/backends/command.py", "json.loads"): (2, "the agent Pod: its own command's output"),
    ("agent/backends/scripted.py", "yaml.safe_load"): (1, "the agent Pod: its own test script"),
}
"""Parses whose input is not controlled by another tenant, an agent or an outside server. Test support
(``longshot_testing``, not shipped) lives beside the package and is not scanned."""

PARSES = {("json", "loads"): "json.loads", ("json", "load"): "json.load", ("yaml", "load"): "yaml.load",
          ("yaml", "safe_load"): "yaml.safe_load", ("orjson", "loads"): "orjson.loads",
          ("ujson", "loads"): "ujson.loads", ("pickle", "loads"): "pickle.loads"}


@functools.cache  # the package's source is read and parsed once for the tests below
def _sites() -> Counter[tuple[str, str]]:
    found: Counter[tuple[str, str]] = Counter()
    for path in sorted(ROOT.rglob("*.py")):
        module = path.relative_to(ROOT).as_posix()
        for node in ast.walk(ast.parse(path.read_text(), module)):
            if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
                continue
            attr = node.func.attr
            owner = node.func.value
            if isinstance(owner, ast.Name) and (owner.id, attr) in PARSES:
                found[(module, PARSES[(owner.id, attr)])] += 1
            elif attr == "json" and not node.args and not node.keywords:
                found[(module, ".json()")] += 1
            elif attr in ("ParseFromString", "FromString", "MergeFromString"):
                found[(module, "protobuf")] += 1
    return found


def test_every_parse_is_bounded_or_listed_as_trusted() -> None:
    unlisted = {site: n for site, n in _sites().items() if site not in TRUSTED}
    assert not unlisted, (f"parses not through api.boundedjson: {unlisted}; use boundedjson.loads with a Budget, or "
                          "list the site in TRUSTED with why its input is trusted")


def test_the_trusted_list_is_exact() -> None:
    sites = _sites()
    wrong = {site: (sites.get(site, 0), n) for site, (n, _) in TRUSTED.items() if sites.get(site, 0) != n}
    assert not wrong, f"TRUSTED counts differ from the source (found, listed): {wrong}"


def test_the_untrusted_inputs_use_the_bounded_parser() -> None:
    users = {path.relative_to(ROOT).as_posix() for path in ROOT.rglob("*.py")
             if "boundedjson.loads(" in path.read_text()}
    assert {"runtime/trackers.py", "api/handoff.py", "gateway/ledger.py", "gateway/delegation.py",
            "gateway/server.py", "gateway/metering.py", "gateway/modelroutes.py", "gateway/identity.py",
            "core/ledger.py"} <= users
