"""A real Prometheus (Debian's ``prometheus`` binary) scrapes the operator through its metrics Service while a
build runs, and its query API shows the build: merges, a passed finalization, succeeded tasks."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from longshot_testing import cluster as lc

from .conftest import SYSTEM_NS, apply, build_request, host_reaches_pods, kget, script_configmap, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

SERVICE = "longshot-metrics"
SCRIPT = """
roles:
  planner:
    - finish:
        summary: one task
        tasks:
          - {name: metered, description: "Add metered.txt", scope: [metered.txt]}
  reviewer:
    - finish: {summary: fine, verdict: approved}
tasks:
  metered:
    - write: {path: metered.txt, content: "metered\\n"}
    - finish: {summary: "Add metered"}
steps:
  - finish: {summary: nothing to do}
"""


class Prometheus:
    """``prometheus`` as a child process on 127.0.0.1:<free port>, its config and TSDB in ``directory``."""

    def __init__(self, binary: str, directory: Path, config: dict[str, Any]) -> None:
        self.port = lc.cpl.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = directory / "prometheus.log"
        (directory / "prometheus.yml").write_text(json.dumps(config, indent=2))  # JSON is YAML
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [binary, f"--config.file={directory / 'prometheus.yml'}",
                 f"--storage.tsdb.path={directory / 'data'}", f"--web.listen-address=127.0.0.1:{self.port}",
                 "--storage.tsdb.retention.time=1h", "--log.level=info"],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)

    def _get(self, path: str) -> Any:
        with urllib.request.urlopen(f"{self.url}{path}", timeout=5) as r:
            return json.loads(r.read()) if r.headers.get_content_type() == "application/json" else r.read()

    def ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"prometheus exited with {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
        try:
            self._get("/-/ready")
        except OSError:
            return False
        return True

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector of ``expr`` (``/api/v1/query``), as Prometheus returns it."""
        reply = self._get("/api/v1/query?" + urllib.parse.urlencode({"query": expr}))
        assert reply["status"] == "success", reply
        return list(reply["data"]["result"])

    def targets(self) -> list[dict[str, Any]]:
        return list(self._get("/api/v1/targets?state=active")["data"]["activeTargets"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def service_targets(kubectl) -> list[dict[str, Any]]:  # type: ignore[no-untyped-def]
    """The metrics Service's ready endpoints as Prometheus file_sd target groups, labelled with the Service
    and Pod names (what Kubernetes service discovery would label them with)."""
    slices = kget(kubectl, "-n", SYSTEM_NS, "endpointslices", "-l", f"kubernetes.io/service-name={SERVICE}") or {}
    groups = []
    for s in slices.get("items", []):
        port = next((p["port"] for p in s.get("ports") or [] if p.get("name") == "metrics"), None)
        for e in s.get("endpoints") or []:
            if port is None or not (e.get("conditions") or {}).get("ready"):
                continue
            groups.append({"targets": [f"{a}:{port}" for a in e["addresses"]],
                           "labels": {"service": SERVICE, "namespace": SYSTEM_NS,
                                      "pod": (e.get("targetRef") or {}).get("name", "")}})
    return groups


def scrape_config(targets: Path) -> dict[str, Any]:
    """Scrape the operator through its metrics Service: the targets are the Service's endpoints, resolved from
    its EndpointSlices by the test (``service_targets``) into a file_sd file. Not Kubernetes service discovery
    (Debian builds Prometheus without it: ``field kubernetes_sd_configs not found``), and not the ClusterIP
    (this cluster has no kube-proxy; only the ``kubernetes`` Service has an iptables rule), but the same
    addresses: the operator Pods' IPs on the cluster bridge, which the host reaches."""
    return {
        "global": {"scrape_interval": "2s", "scrape_timeout": "1s", "evaluation_interval": "2s"},
        "scrape_configs": [{
            "job_name": "longshot",
            "file_sd_configs": [{"files": [str(targets)], "refresh_interval": "2s"}],
        }],
    }


@pytest.fixture
def prometheus(cluster, operator, kubectl, tmp_path: Path) -> Iterator[Prometheus]:  # type: ignore[no-untyped-def]
    host_reaches_pods(cluster, "Prometheus on the host scrapes the Pod IPs behind the Service")
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("no prometheus binary: run hack/cluster/install-deps.sh (Debian package prometheus)")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    targets = directory / "targets.json"
    groups = wait_for(lambda: service_targets(kubectl), 120, f"a ready endpoint of Service {SERVICE}")
    targets.write_text(json.dumps(groups))
    prom = Prometheus(binary, directory, scrape_config(targets))
    try:
        wait_for(prom.ready, 60, "Prometheus to be ready")
        yield prom
    finally:
        prom.stop()
        print(f"\nprometheus log: {prom.log}")


def value(result: list[dict[str, Any]]) -> float:
    return sum(float(s["value"][1]) for s in result)


def test_prometheus_scrapes_the_operator_through_its_service(prometheus, kubectl, namespace, git_repo) -> None:  # type: ignore[no-untyped-def]
    # the operator is a healthy target, found through the Service
    def scraped() -> list[dict[str, Any]] | None:
        up = prometheus.query(f'up{{job="longshot",service="{SERVICE}"}} == 1')
        return up or None

    up = wait_for(scraped, 60, f"Prometheus to scrape the operator through Service {SERVICE}")
    pods = {p["metadata"]["name"]: p["status"].get("podIP") for p in
            (kget(kubectl, "-n", SYSTEM_NS, "pods", "-l", "app.kubernetes.io/component=operator") or {})["items"]}
    for series in up:
        assert series["metric"]["pod"] in pods, (series, pods)
        assert series["metric"]["instance"] == f"{pods[series['metric']['pod']]}:8080", series
    # where the counters stand before this build (earlier tests' builds may have counted already)
    merged_before = value(prometheus.query('longshot_merges_total{result="Merged"}'))
    passed_before = value(prometheus.query('longshot_finalizations_total{outcome="Passed"}'))

    apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("metered", git_repo, script="script"))

    def finalized() -> dict[str, Any] | None:
        br = kget(kubectl, "-n", namespace, "br", "metered")
        c = next((c for c in ((br or {}).get("status") or {}).get("conditions") or [] if c["type"] == "Finalized"),
                 {})
        if c.get("status") == "True" or (c.get("status") == "False" and c.get("reason") != "InProgress"):
            return c
        return None

    final = wait_for(finalized, 420, "BuildRequest metered to be finalized", interval=2)
    assert final["status"] == "True", final

    # and Prometheus saw it, in its own time series
    merged = wait_for(lambda: prometheus.query(f'sum(longshot_merges_total{{result="Merged"}}) > {merged_before}'),
                      60, "Prometheus to record the build's merge")
    passed = wait_for(
        lambda: prometheus.query(f'sum(longshot_finalizations_total{{outcome="Passed"}}) >= {passed_before + 1}'),
        60, "Prometheus to record the build's passed finalization")
    succeeded = wait_for(lambda: prometheus.query('sum(longshot_tasks{state="Succeeded"}) >= 2'), 60,
                         "Prometheus to record the build's succeeded tasks (planner and worker)")
    assert value(merged) >= merged_before + 1 and value(passed) >= passed_before + 1 and value(succeeded) >= 2
    # the series carry the Service's labels, as a ServiceMonitor-driven Prometheus would have them
    series = prometheus.query('longshot_merges_total{result="Merged"}')
    assert series and all(s["metric"]["service"] == SERVICE and s["metric"]["job"] == "longshot" for s in series)
