"""What GitOps tools make of Longshot objects: kstatus (the library Flux, kpt and cli-utils use) and the chart's
Argo CD health checks (Lua), run for real.

* :func:`kstatus` ``(objs) -> [(name, status, message)]``: the Go program ``hack/kstatus`` (sigs.k8s.io/cli-utils
  v0.37.2 ``pkg/kstatus/status.Compute``) over objects given as dicts; ``status`` is one of ``InProgress``,
  ``Current``, ``Failed``, ``Terminating``.
* :func:`kstatus_live` ``(kubeconfig, namespace, resources) -> [(name, status, message)]``: the same over live
  objects, read by the program itself through a kubeconfig.
* :func:`argo_health` ``(obj) -> (status, message)``: the chart's ``files/argocd/<group>/<Kind>/health.lua`` run
  by a real Lua 5.1 interpreter (lupa; Argo CD's gopher-lua implements Lua 5.1) with ``obj`` set as Argo CD
  sets it; ``status`` is one of ``Healthy``, ``Progressing``, ``Degraded``, ``Suspended``.

The kstatus binary is built once into ``~/.cache/longshot/tools`` by ``hack/go-tools.sh kstatus`` (Go module
proxy; about a minute cold) and reused while its sources do not change. Point these helpers at live objects
(``kubectl get br -o json``) or at the fixtures in ``tests/fixtures/status``.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "status"
ARGOCD = ROOT / "charts" / "longshot" / "files" / "argocd"
CONDITIONS_DOC = ROOT / "docs" / "conditions.md"
RESOURCES = ("buildrequests.longshot.dev", "agenttasks.longshot.dev", "mergejobs.longshot.dev")

KStatusRow = tuple[str, str, str]


class ToolError(RuntimeError):
    """A tool could not be built or did not run; the message carries its own error output."""


@cache
def kstatus_binary() -> Path:
    """The kstatus program, built on first use (``hack/go-tools.sh kstatus``)."""
    result = subprocess.run(["bash", str(ROOT / "hack" / "go-tools.sh"), "kstatus"], capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise ToolError(f"hack/go-tools.sh kstatus failed ({result.returncode}):\n{result.stderr[-4000:]}")
    return Path(result.stdout.strip().splitlines()[-1])


def _rows(stdout: str) -> list[KStatusRow]:
    return [(r["name"], r["status"], r["message"]) for r in json.loads(stdout)]


def kstatus(objs: Iterable[Mapping[str, Any]]) -> list[KStatusRow]:
    """kstatus' ``(name, status, message)`` for each object, in order."""
    items = [dict(o) for o in objs]
    result = subprocess.run([str(kstatus_binary()), "-o", "json"], capture_output=True, text=True, check=False,
                            input=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    if result.returncode != 0:
        raise ToolError(f"kstatus failed ({result.returncode}): {result.stderr.strip()}")
    return _rows(result.stdout)


def _live(kubeconfig: Path | str, namespace: str, resources: Sequence[str]) -> list[dict[str, str]]:
    result = subprocess.run([str(kstatus_binary()), "-kubeconfig", str(kubeconfig), "-n", namespace, "-o", "json",
                             *resources], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise ToolError(f"kstatus failed ({result.returncode}): {result.stderr.strip()}")
    return list(json.loads(result.stdout))


def kstatus_live(kubeconfig: Path | str, namespace: str, resources: Sequence[str] = RESOURCES) -> list[KStatusRow]:
    """kstatus' ``(name, status, message)`` for every live object of ``resources`` in ``namespace``."""
    return [(r["name"], r["status"], r["message"]) for r in _live(kubeconfig, namespace, resources)]


def kstatus_live_by_kind(kubeconfig: Path | str, namespace: str,
                         resources: Sequence[str] = RESOURCES) -> dict[tuple[str, str], tuple[str, str]]:
    """The same, keyed by ``(kind, name)`` (the three kinds may share names)."""
    return {(r["kind"], r["name"]): (r["status"], r["message"]) for r in _live(kubeconfig, namespace, resources)}


def health_script(api_version: str, kind: str) -> Path:
    """The chart's Argo CD health check of ``kind`` (``files/argocd/<group>/<Kind>/health.lua``)."""
    group = api_version.partition("/")[0] if "/" in api_version else ""
    path = ARGOCD / group / kind / "health.lua"
    if not path.is_file():
        raise ToolError(f"no Argo CD health check for {api_version} {kind} at {path}")
    return path


def argo_health(obj: Mapping[str, Any]) -> tuple[str, str]:
    """Argo CD's ``(status, message)`` for ``obj`` from the chart's Lua health check."""
    from lupa import lua51  # Argo CD runs health checks in gopher-lua, a Lua 5.1

    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    script = health_script(str(obj.get("apiVersion", "")), str(obj.get("kind", ""))).read_text()
    # Argo CD hands the script the object as a table converted from JSON: numbers are floats, lists 1-based
    lua.globals().obj = lua.table_from(json.loads(json.dumps(obj)), recursive=True)
    hs = lua.execute(script)
    if hs is None:
        raise ToolError("the health check returned nothing")
    return str(hs["status"]), str(hs["message"] or "")


def fixtures() -> dict[str, dict[str, Any]]:
    """The objects of ``tests/fixtures/status/*.yaml`` by file stem (one object per file)."""
    return {p.stem: yaml.safe_load(p.read_text()) for p in sorted(FIXTURES.glob("*.yaml"))}


EXPECTED: dict[str, tuple[str, str, str]] = {
    # fixture: (kstatus status, Argo CD health, a piece of the message both show)
    "br-finalized-passed": ("Current", "Healthy", ""),
    "br-finalized-failed": ("Failed", "Degraded", "`make test` failed on main"),
    "br-plan-rejected": ("Failed", "Degraded", "depends on unknown task 'db'"),
    "br-finalization-off-task-failed": ("Failed", "Degraded", "1 of 4 tasks failed"),
    # kstatus reports Stalled=True as Failed: it has no status for "waiting for a person"; the message says why
    "br-budget-exceeded": ("Failed", "Degraded", "raise spec.budget.maxTokens"),
    "br-in-progress": ("InProgress", "Progressing", "2 running, 1 waiting"),
    # a build the operator has not written yet: the CRD's default status (Reconciling=True/Pending)
    "br-fresh": ("InProgress", "Progressing", "the build waits for the operator"),
    # Stalled comes before Reconciling in status.conditions: Failed at once, while the last Pods still run
    "br-budget-exceeded-busy": ("Failed", "Degraded", "raise spec.budget"),
    "br-configuration": ("Failed", "Degraded", "spec.repository.url: host git.example.invalid does not resolve"),
    "br-configuration-busy": ("Failed", "Degraded", "spec.agent.credentialsSecret"),
    # a question or an approval is a wait on a person, not a failure: Stalled=False, Ready=False/AwaitingInput
    "br-awaiting-input": ("InProgress", "Suspended", "which OAuth provider"),
    "br-awaiting-input-busy": ("InProgress", "Progressing", "1 running"),
    # kstatus falls back to Ready=False (InProgress); Argo CD reads Suspended, which the killswitch does not set
    "br-killswitch": ("InProgress", "Progressing", "the operator killswitch is engaged"),
    "br-spec-edited-after-finish": ("InProgress", "Progressing", "generation is 2"),
    "br-suspended": ("InProgress", "Suspended", "spec.suspend is true"),
    "br-deleting": ("Terminating", "Progressing", ""),
    "at-succeeded": ("Current", "Healthy", ""),
    "at-pending": ("InProgress", "Progressing", "waiting for dependencies or a worker slot"),
    "at-running": ("InProgress", "Progressing", "Pod rest-api-orders-a2 is running"),
    "at-failed": ("Failed", "Degraded", "3 of 3 attempts failed"),
    "at-configuration": ("Failed", "Degraded", "spec.repository.baseBranch"),
    "at-awaiting-input": ("InProgress", "Suspended", "which OAuth provider"),
    "mj-fresh": ("InProgress", "Progressing", "waiting for the operator"),
    "mj-merged": ("Current", "Healthy", ""),
    "mj-queued": ("InProgress", "Progressing", "position 2 in the merge queue"),
    "mj-conflicted": ("Failed", "Degraded", "api/routes.py"),
    "mj-awaiting-approval": ("InProgress", "Suspended", "waiting for spec.approved"),
}
"""What Flux (kstatus) and Argo CD must say of each state in ``tests/fixtures/status`` (issue 12's table)."""


DocRow = dict[str, str]


def docs_table(path: Path = CONDITIONS_DOC) -> dict[str, DocRow]:
    """The table "What a tool sees" of docs/conditions.md, by fixture name: each row's cells by column header
    (``Ready``, ``Stalled``, ``Reconciling``, ``Finalized``, ``kstatus``, ``Argo CD``, ...)."""
    text = path.read_text()
    section = text.split("## What a tool sees", 1)[1].split("\n## ", 1)[0]
    lines = [ln for ln in section.splitlines() if ln.startswith("|")]
    header = [h.strip() for h in lines[0].strip("|").split("|")]
    rows: dict[str, DocRow] = {}
    for ln in lines[2:]:
        cells = dict(zip(header, (x.strip() for x in ln.strip().strip("|").split("|")), strict=True))
        rows[cells["fixture"].strip("`")] = cells
    return rows


def condition_mismatches(row: DocRow, obj: Mapping[str, Any]) -> list[str]:
    """Where the Ready, Stalled, Reconciling and Finalized cells of a docs row disagree with ``obj``'s conditions:
    the cell's first word is the status (``(any)`` matches anything, ``(none)`` means no such condition), and
    reasons in backticks, when the cell names some, must include the condition's reason."""
    conds = {c["type"]: c for c in (obj.get("status") or {}).get("conditions") or []}
    out = []
    for column in ("Ready", "Stalled", "Reconciling", "Finalized"):
        cell = row[column]
        if cell == "(any)":
            continue
        found = conds.get(column)
        if cell == "(none)":
            if found is not None:
                out.append(f"{column}: the docs say none, the object has {found['status']}")
            continue
        status = re.split(r"[ /]", cell, maxsplit=1)[0]
        if found is None or found["status"] != status:
            out.append(f"{column}: the docs say {status}, the object has {found and found['status']}")
            continue
        reasons = re.findall(r"`([A-Za-z]+)`", cell)
        if reasons and found["reason"] not in reasons:
            out.append(f"{column}: the docs name {reasons}, the object's reason is {found['reason']}")
    return out
