"""What Flux, Argo CD and ``kubectl wait`` see of Longshot objects, checked with the real tools on objects stored by a
real API server: kstatus (sigs.k8s.io/cli-utils v0.37.2, the Go program in hack/kstatus) reading them through a
kubeconfig, the chart's Argo CD Lua health checks, and kubectl's own wait.

The objects are the fixtures of ``tests/fixtures/status`` (one per state, following the conditions contract of
docs/conditions.md), created and their status written through the status subresource; ``status_tools.EXPECTED``
is the table they must produce. Point the same helpers at objects the operator wrote to check the operator.
"""

from __future__ import annotations

import copy
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes
import pytest
import yaml

import status_tools as st
from longshot import api

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "longshot"
GROUP, VERSION = "longshot.dev", "v1alpha1"
PLURAL = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs"}

DEFAULTS = {r.kind: r.status_default for r in api.RESOURCES}
"""The CRDs' default statuses: a fixture with one of them is stored without any status write."""

pytestmark = pytest.mark.integration


def _store(custom: kubernetes.client.CustomObjectsApi, namespace: str, fixture: dict[str, Any]) -> dict[str, Any]:
    """Create ``fixture`` in ``namespace`` as the operator would leave it: spec, then status through the status
    subresource, then (for generation 2) the spec edit the operator has not seen; returns the live object."""
    plural = PLURAL[fixture["kind"]]
    meta = fixture["metadata"]
    deleting = bool(meta.get("deletionTimestamp"))
    edited = meta.get("generation", 1) - 1 - deleting  # the deletion itself makes a new generation
    assert edited in (0, 1), "fixtures describe generation 1, or 2 for one edit after the status was written"
    body = {"apiVersion": fixture["apiVersion"], "kind": fixture["kind"], "spec": copy.deepcopy(fixture["spec"]),
            "metadata": {"name": meta["name"], **({"labels": meta["labels"]} if "labels" in meta else {}),
                         **({"finalizers": meta["finalizers"]} if "finalizers" in meta else {})}}
    if edited:  # created with the spec before the edit
        body["spec"]["workers"]["max"] += 1
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, plural, body)
    if fixture["status"] != DEFAULTS.get(fixture["kind"]):  # a fresh object's status is the API server's default
        custom.patch_namespaced_custom_object_status(GROUP, VERSION, namespace, plural, meta["name"],
                                                     {"status": fixture["status"]})
    if edited:
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, plural, meta["name"],
                                              {"spec": {"workers": {"max": fixture["spec"]["workers"]["max"]}}})
    if deleting:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, plural, meta["name"])
    live = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, meta["name"])
    assert isinstance(live, dict)
    return live


@pytest.fixture
def live(custom: kubernetes.client.CustomObjectsApi, namespace: str) -> Iterator[dict[str, dict[str, Any]]]:
    """Every fixture stored in the test namespace, by fixture name."""
    objs = {name: _store(custom, namespace, fx) for name, fx in st.fixtures().items()}
    yield objs
    for obj in objs.values():  # let the namespace go: drop the finalizers of the object being deleted
        if obj["metadata"].get("finalizers"):
            custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL[obj["kind"]],
                                                  obj["metadata"]["name"], {"metadata": {"finalizers": None}})


def _missing(written: Any, stored: Any, path: str = "status") -> list[str]:
    """Where ``stored`` lacks or changed what ``written`` has (the API server may add defaults)."""
    if isinstance(written, dict):
        if not isinstance(stored, dict):
            return [path]
        return [m for k, v in written.items() for m in _missing(v, stored.get(k), f"{path}.{k}")]
    if isinstance(written, list):
        if not isinstance(stored, list) or len(stored) != len(written):
            return [path]
        return [m for i, (w, s) in enumerate(zip(written, stored, strict=True)) for m in _missing(w, s, f"{path}[{i}]")]
    return [] if written == stored else [f"{path}: {written!r} stored as {stored!r}"]


def test_the_api_server_keeps_every_fixture_as_written(live: dict[str, dict[str, Any]]) -> None:
    # nothing pruned or refused by the CRD schemas: the fixtures are objects the operator can really write
    for name, fx in st.fixtures().items():
        assert _missing(fx["status"], live[name]["status"]) == [], name
        assert live[name]["metadata"]["generation"] == fx["metadata"]["generation"], name
    assert live["br-deleting"]["metadata"].get("deletionTimestamp")


def test_kstatus_over_live_objects(control_plane, live: dict[str, dict[str, Any]], namespace: str) -> None:  # type: ignore[no-untyped-def]
    seen = st.kstatus_live_by_kind(control_plane.kubeconfig, namespace)
    fixtures = st.fixtures()
    assert len(seen) == len(fixtures)
    for key, (kstatus, _, message) in st.EXPECTED.items():
        status, text = seen[(fixtures[key]["kind"], fixtures[key]["metadata"]["name"])]
        assert status == kstatus, (key, status, text)
        assert message in text, (key, text)


def test_a_fresh_object_is_in_progress_before_the_operator_writes_anything(control_plane, live, namespace) -> None:  # type: ignore[no-untyped-def]
    # created without any status write: the API server fills in the CRD's default status on every read
    for name in ("br-fresh", "mj-fresh", "at-pending"):
        kind = live[name]["kind"]
        # (and the defaults of the status' own fields: counts at 0 and the like)
        assert _missing(DEFAULTS[kind], live[name]["status"]) == [], name
        assert "observedGeneration" not in live[name]["status"], name
    seen = st.kstatus_live_by_kind(control_plane.kubeconfig, namespace)
    for kind, name in (("BuildRequest", "br-fresh"), ("MergeJob", "mj-fresh"), ("AgentTask", "at-pending")):
        assert seen[(kind, live[name]["metadata"]["name"])][0] == "InProgress", name
        assert st.argo_health(live[name])[0] == "Progressing", name


def test_the_docs_table_is_what_kstatus_says(control_plane, live, namespace) -> None:  # type: ignore[no-untyped-def]
    # docs/conditions.md "What a tool sees": the kstatus cell of every row, against kstatus over the live object
    # (the Argo CD cell and the condition cells: tests/unit/chart/test_argocd_health.py)
    seen = st.kstatus_live_by_kind(control_plane.kubeconfig, namespace)
    rows = st.docs_table()
    assert rows and set(rows) <= set(live)
    for name, row in rows.items():
        status, text = seen[("BuildRequest", live[name]["metadata"]["name"])]
        assert row["kstatus"] == status, (name, text)
        assert row["Argo CD"] == st.argo_health(live[name])[0], name


def test_kstatus_over_files_agrees_with_live_objects(live: dict[str, dict[str, Any]]) -> None:
    names = sorted(st.EXPECTED)
    from_files = st.kstatus(st.fixtures()[n] for n in names)
    from_live = st.kstatus(live[n] for n in names)
    assert [r[1] for r in from_files] == [st.EXPECTED[n][0] for n in names]
    assert [r[1] for r in from_live] == [r[1] for r in from_files]


def test_argo_cd_health_of_live_objects(live: dict[str, dict[str, Any]]) -> None:
    for name, (_, health, message) in st.EXPECTED.items():
        status, text = st.argo_health(live[name])
        assert status == health, (name, text)
        assert message in text, (name, text)


def _wait(kubectl, namespace: str, name: str, condition: str) -> subprocess.CompletedProcess[str]:  # type: ignore[no-untyped-def]
    # a bounded wait: the condition holds already, or it never will for this object
    result: subprocess.CompletedProcess[str] = kubectl(
        "wait", "-n", namespace, f"buildrequest/{name}", f"--for={condition}", "--timeout=3s", check=False)
    return result


def test_kubectl_wait_returns_on_both_outcomes(kubectl, live: dict[str, dict[str, Any]], namespace: str) -> None:  # type: ignore[no-untyped-def]
    passed, failed = live["br-finalized-passed"], live["br-finalized-failed"]
    # the docs' wait: the build stopped working (done, failed or waiting for a person)
    for br in (passed, failed, live["br-plan-rejected"], live["br-finalization-off-task-failed"],
               live["br-budget-exceeded"]):
        result = _wait(kubectl, namespace, br["metadata"]["name"], "condition=Reconciling=False")
        assert result.returncode == 0, (br["metadata"]["name"], result.stderr)
    # then Ready says which
    assert _wait(kubectl, namespace, passed["metadata"]["name"], "condition=Ready").returncode == 0
    assert _wait(kubectl, namespace, failed["metadata"]["name"], "condition=Stalled").returncode == 0
    assert _wait(kubectl, namespace, failed["metadata"]["name"], "condition=Ready").returncode != 0
    # a build at work is not done
    assert _wait(kubectl, namespace, live["br-in-progress"]["metadata"]["name"],
                 "condition=Reconciling=False").returncode != 0


def test_kubectl_wait_does_not_accept_a_condition_of_an_older_generation(kubectl, live: dict[str, dict[str, Any]],  # type: ignore[no-untyped-def]
                                                                          namespace: str) -> None:
    # the spec was edited after the build finished: Ready=True belongs to generation 1, the object is at 2
    edited = live["br-spec-edited-after-finish"]["metadata"]["name"]
    result = _wait(kubectl, namespace, edited, "condition=Ready")
    assert result.returncode != 0
    assert "timed out" in result.stderr


def test_the_argocd_cm_patch_from_the_chart_notes_merges_the_health_checks(control_plane, kubectl,  # type: ignore[no-untyped-def]
                                                                           namespace: str) -> None:
    helm_bin = Path(control_plane.bin_dir) / "helm"
    kubectl_bin = Path(control_plane.bin_dir) / "kubectl"
    docs = [d for d in yaml.safe_load_all(subprocess.run(
        [str(helm_bin), "template", "rel", str(CHART), "-n", namespace, "--set", "argocd.healthChecks.enabled=true",
         "--show-only", "templates/argocd-health-configmap.yaml"], capture_output=True, text=True, check=True).stdout)
        if d]
    (cm,) = docs
    kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(cm))
    # an argocd-cm with settings of its own, standing in for Argo CD's
    kubectl("create", "configmap", "argocd-cm", "-n", namespace, "--from-literal=url=https://argocd.example.com")
    notes = (CHART / "templates" / "NOTES.txt").read_text()
    line = next(x.strip() for x in notes.splitlines() if "patch configmap argocd-cm" in x)
    command = (line.replace("-n argocd", f"-n {namespace}")
               .replace("{{ .Release.Namespace }}", namespace)
               .replace('{{ include "longshot.fullname" . }}', "rel-longshot")
               .replace("kubectl ", f"{kubectl_bin} --kubeconfig={control_plane.kubeconfig} "))
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    data = json.loads(kubectl("get", "configmap", "argocd-cm", "-n", namespace, "-o", "json").stdout)["data"]
    assert data["url"] == "https://argocd.example.com"
    for kind in PLURAL:
        script = (CHART / "files" / "argocd" / "longshot.dev" / kind / "health.lua").read_text()
        assert data[f"resource.customizations.health.longshot.dev_{kind}"] == script.rstrip("\n")
