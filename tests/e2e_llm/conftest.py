"""The real-model tier (``make e2e-llm``, marker ``e2e_llm``; not part of ``make test``).

The e2e tier's cluster, chart and fixtures (``tests/e2e/conftest.py``) plus a model server in the cluster:
``examples/model-server.yaml`` (``hack/model_server.py`` on llama.cpp prebuilt in the cyllama wheel, with Gemma 3
270M from PyPI, grammar-constrained tool calls) with the image ``hack/images.sh build model-server`` makes (wheels
from PyPI, nothing compiled; cached like the other images).

The model server's URL is a parameter: ``LONGSHOT_E2E_LLM_BASE_URL`` (an OpenAI-compatible base URL with
``/v1`` that agent Pods reach; with ``LONGSHOT_E2E_LLM_MODEL``) skips the in-cluster server, e.g. to go
through the gateway. Otherwise the local cluster, which has no kube-proxy, uses the server Pod's address,
and a kind cluster the Service's name.

Hold the cluster lock: ``flock /tmp/longshot-cluster.lock make e2e-llm``.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.conftest import (  # the e2e tier's fixtures, shared (pytest registers them for this directory too)
    ROOT,
    _run,
    cluster,
    git_allow,
    git_repo,
    install_operator,
    is_kind,
    kget,
    kubectl,
    namespace,
    pytest_runtest_makereport,
    wait_for,
)

__all__ = ["cluster", "git_repo", "kubectl", "namespace", "operator", "pytest_runtest_makereport"]

MODEL_NS = "longshot-llm"
PRICES = {"*": {"input": 1.0, "output": 4.0}}
"""The gateway's price table in this tier (per million tokens, any model): the real server's usage is priced, and
the cost reaches the attempts and the build."""


@pytest.fixture(scope="session")
def operator(cluster: Any, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> str:
    """The e2e tier's chart installation, with a price for every model (``PRICES``)."""
    # the model server is a Pod of this cluster (its Service or Pod address, port 8000): listed in the egress
    # policy for model, with the forge on the bridge for git and forge, as an installation lists an in-cluster
    # model server (10.244.0.0/16 and 10.96.0.0/12: the local cluster's and kind's Pod and Service ranges)
    allow = [*git_allow(cluster), *({"cidr": c, "purposes": ["model"], "ports": [8000]}
                                    for c in ("10.244.0.0/16", "10.96.0.0/12"))]
    return install_operator(cluster, kubectl, ("--set-json", f"gateway.prices.models={json.dumps(PRICES)}",
                                               "--set-json", f"egress.allow={json.dumps(allow)}"))
MANIFEST = ROOT / "examples" / "model-server.yaml"


@dataclass(frozen=True)
class ModelServer:
    base_url: str
    """OpenAI-compatible base URL (with ``/v1``) as agent Pods reach it."""
    model: str
    pod: str | None
    """The server's Pod in ``longshot-llm`` (None when ``LONGSHOT_E2E_LLM_BASE_URL`` points elsewhere)."""

    def logs(self, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> str:
        if self.pod is None:
            return ""
        return kubectl("-n", MODEL_NS, "logs", self.pod, "--tail=60", check=False).stdout


def load_image(cluster: Any, archive: Path) -> None:
    if is_kind(cluster):
        _run("kind", "load", "image-archive", "--name", cluster.name, str(archive))
    else:
        cluster.import_images([archive])


@pytest.fixture(scope="session")
def model_server(cluster: Any, kubectl: Callable[..., subprocess.CompletedProcess[str]]) -> Iterator[ModelServer]:
    """The model server, Ready; deleted at the end of the session."""
    external = os.environ.get("LONGSHOT_E2E_LLM_BASE_URL")
    if external:
        yield ModelServer(external.rstrip("/"), os.environ.get("LONGSHOT_E2E_LLM_MODEL", "gemma-3-270m"), None)
        return
    archive = Path(_run("bash", str(ROOT / "hack" / "images.sh"), "path", "model-server"))
    load_image(cluster, archive)
    kubectl("create", "namespace", MODEL_NS, check=False)
    kubectl("label", "--overwrite", "namespace", MODEL_NS, "pod-security.kubernetes.io/enforce=restricted")
    objects = list(yaml.safe_load_all(MANIFEST.read_text()))
    kubectl("-n", MODEL_NS, "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List",
                                                                    "items": objects}))
    # the image tag is reused across builds: restart so the Pod runs the image just imported
    kubectl("-n", MODEL_NS, "rollout", "restart", "deployment/model-server")
    kubectl("-n", MODEL_NS, "rollout", "status", "deployment/model-server", "--timeout=300s", timeout=320)

    def ready_pod() -> dict[str, Any] | None:
        pods = kget(kubectl, "-n", MODEL_NS, "pods", "-l", "app.kubernetes.io/name=model-server") or {}
        for p in pods.get("items", []):
            conditions = {c["type"]: c["status"] for c in (p.get("status") or {}).get("conditions") or []}
            if not p["metadata"].get("deletionTimestamp") and conditions.get("Ready") == "True":
                return dict(p)
        return None

    pod = wait_for(ready_pod, 300, "the model server Pod to be Ready", interval=2)
    if is_kind(cluster):
        base_url = f"http://model-server.{MODEL_NS}.svc:8000/v1"
    else:  # no kube-proxy on the local cluster: the Pod's address on the bridge
        base_url = f"http://{pod['status']['podIP']}:8000/v1"
    try:
        yield ModelServer(base_url, "gemma-3-270m", pod["metadata"]["name"])
    finally:
        kubectl("delete", "namespace", MODEL_NS, "--wait=false", check=False)
