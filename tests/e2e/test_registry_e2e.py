"""A release through a real registry (issue 55): ``make release`` + ``make push`` (hack/release.py) to a Distribution
registry (Debian's ``docker-registry``) on this host, then ``helm install oci://...`` of the pushed chart with its
own image defaults, the node pulling the images from the registry, and a demo build Finalized.

The images are the ones the session already built (``hack/images.sh``; retagged, not rebuilt) under a version no
run used before, so the node cannot have them: it must pull. The session's chart release (longshot-system) is
uninstalled for the test, as two operators watching every namespace would both take the build, and installed
again afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from .conftest import (
    ROOT,
    SYSTEM_NS,
    apply,
    build_request,
    install_chart,
    install_operator,
    is_kind,
    kget,
    script_configmap,
    wait_for,
)
from .test_build import SCRIPT, condition

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[str]:
    """A Distribution registry on 127.0.0.1 (a free port), storage in tmp; its ``host:port``."""
    binary = shutil.which("docker-registry")
    if binary is None:
        pytest.fail("docker-registry is missing: run hack/cluster/install-deps.sh (Debian's docker-registry)")
    port = free_port()
    config = tmp_path / "registry.yml"
    config.write_text(json.dumps({  # YAML is a superset of JSON
        "version": 0.1, "log": {"level": "warn"},
        "storage": {"filesystem": {"rootdirectory": str(tmp_path / "registry")}},
        "http": {"addr": f"127.0.0.1:{port}"}}))
    log = (tmp_path / "registry.log").open("w")
    proc = subprocess.Popen([binary, "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)

    def up() -> bool:
        assert proc.poll() is None, (tmp_path / "registry.log").read_text()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    try:
        wait_for(up, 30, f"the registry on 127.0.0.1:{port}", interval=0.2)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def hack_release(*args: str) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "hack" / "release.py"), *args], capture_output=True,
                            text=True, env={**os.environ, "COSIGN_PASSWORD": ""})
    assert result.returncode == 0, result.stderr[-6000:]


def containerd_digest(cluster: Any, ref: str) -> str | None:
    """The digest of the image ``ref`` in the node's containerd (namespace k8s.io), None when it has none."""
    out = subprocess.run(["ctr", "--address", str(cluster.containerd_socket), "-n", "k8s.io", "images", "ls",
                          f"name=={ref}"], capture_output=True, text=True, check=True).stdout.splitlines()[1:]
    return out[0].split()[2] if out else None


def test_release_pushed_to_a_registry_installs_from_oci_and_finalizes_a_build(  # type: ignore[no-untyped-def]
        cluster, kubectl, namespace, git_repo, registry, tmp_path) -> None:
    if is_kind(cluster):
        pytest.skip("the registry listens on this host's loopback, which kind's nodes do not reach")
    version = f"0.0.0-e2e.{int(time.time())}"
    repo = f"{registry}/longshot-dev"
    dist = tmp_path / "dist"

    # make release + make push, with a cosign key made for the test (no transparency log: the key is the trust)
    cosign = subprocess.run(["bash", str(ROOT / "hack" / "go-tools.sh"), "cosign"], capture_output=True, text=True)
    assert cosign.returncode == 0, cosign.stderr[-3000:]
    keys = subprocess.run([cosign.stdout.strip(), "generate-key-pair"], cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "COSIGN_PASSWORD": ""})
    assert keys.returncode == 0, keys.stderr
    hack_release("release", "--version", version, "--registry", repo, "--dist", str(dist))
    hack_release("push", "--registry", repo, "--version", version, "--dist", str(dist),
                 "--cosign-key", str(tmp_path / "cosign.key"))
    made = json.loads((dist / "release.json").read_text())
    pushed = json.loads((dist / "pushed.json").read_text())
    assert {n: i["digest"] for n, i in pushed["images"].items()} == {n: i["digest"] for n, i in made["images"].items()}
    assert all(i["signed"] for i in pushed["images"].values()) and pushed["chart"]["signed"], pushed
    for name, image in made["images"].items():
        sbom = json.loads((dist / image["sbom"]["cyclonedx"]).read_text())
        names = {c.get("name") for c in sbom.get("components", [])}
        # each image installs its own extra (docs/install.md, "Extras"): kopf in the operator's, httpx in the agent's
        expected = {"python3", "git", "pydantic", "kopf" if name == "operator" else "httpx"}
        assert expected <= names, (name, sorted(names)[:50])
    sums = (dist / "SHA256SUMS").read_text()
    assert f"longshot-{version}.tgz" in sums and "longshot-agent" in sums

    # the node pulls from the registry over plain HTTP, and has never seen these images
    refs = {name: image["ref"] for name, image in made["images"].items()}
    assert refs == {"operator": f"{repo}/longshot-operator:{version}", "agent": f"{repo}/longshot-agent:{version}"}
    assert all(containerd_digest(cluster, ref) is None for ref in refs.values())
    hosts = cluster.trust_plain_http_registry(registry)

    helm = [str(cluster.bin_dir / "helm"), f"--kubeconfig={cluster.kubeconfig}"]
    session_release = subprocess.run([*helm, "status", "longshot", "-n", SYSTEM_NS],
                                     capture_output=True).returncode == 0
    release_ns = f"longshot-reg-{namespace[-6:]}"
    try:
        if session_release:
            subprocess.run([*helm, "uninstall", "longshot", "-n", SYSTEM_NS, "--wait", "--timeout=180s"], check=True,
                           capture_output=True)
        kubectl("create", "namespace", release_ns)
        kubectl("label", "namespace", release_ns, "pod-security.kubernetes.io/enforce=restricted")
        # the one-line install, with the local cluster's network values (no image value: the chart's defaults)
        install_chart(cluster, chart=f"oci://{repo}/charts/longshot", images=(), release="reg", namespace=release_ns,
                      extra=["--version", version, "--plain-http"])
        pods = kget(kubectl, "-n", release_ns, "pods", "-l", "app.kubernetes.io/component=operator") or {}
        statuses = [s for p in pods.get("items", []) for s in p["status"].get("containerStatuses", [])]
        assert statuses and all(s["image"] == refs["operator"] for s in statuses), statuses
        assert all(s["imageID"].endswith(made["images"]["operator"]["digest"]) for s in statuses), statuses
        assert containerd_digest(cluster, refs["operator"]) == made["images"]["operator"]["digest"]

        apply(kubectl, namespace, script_configmap("script", SCRIPT), build_request("hello", git_repo, script="script"))

        def finalized() -> dict[str, Any] | None:
            c = condition(kget(kubectl, "-n", namespace, "br", "hello"), "Finalized")
            return c if c.get("status") in ("True", "False") else None

        final = wait_for(finalized, 600, "BuildRequest hello to be finalized", interval=2)
        br = kget(kubectl, "-n", namespace, "br", "hello")
        assert final["status"] == "True", (final, (br or {}).get("status"))
        # the agent Pods ran the agent image the node pulled from the registry
        assert containerd_digest(cluster, refs["agent"]) == made["images"]["agent"]["digest"]
    finally:
        subprocess.run([*helm, "uninstall", "reg", "-n", release_ns, "--wait", "--timeout=180s"], capture_output=True)
        kubectl("delete", "namespace", release_ns, "--wait=false", check=False)
        for ref in refs.values():
            subprocess.run(["ctr", "--address", str(cluster.containerd_socket), "-n", "k8s.io", "images", "rm", ref],
                           capture_output=True)
        hosts.unlink(missing_ok=True)
        if session_release:
            install_operator(cluster, kubectl)
