"""``pip install 'longshot-operator[plugin]'`` stays small and is enough for kubectl longshot: the plugin's lock
(requirements/plugin.txt, with hashes) and the package itself go into a fresh virtualenv, whose ``kubectl-longshot
version`` talks to the tier's real API server; none of the operator's, gateway's or agent's packages is there, and
``python -m longshot operator`` in it names the extra it lacks. From PyPI, or pip's cache when it holds them."""

from __future__ import annotations

import json
import os
import subprocess
import venv
from collections.abc import Iterator
from pathlib import Path

import kubernetes
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]
MAX_PACKAGES = 32
"""The plugin's install, the package itself included (29 when this was written; the single package was 74)."""
OPERATOR_ONLY = {"kopf", "gitpython", "httpx", "httpcore", "prometheus-client", "pydantic-settings", "jinja2", "mcp",
                 "anyio", "opentelemetry-api", "opentelemetry-sdk", "uvicorn", "starlette"}


def _pip(python: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if k != "PIP_REQUIRE_VIRTUALENV"}
    done = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args], capture_output=True,
                          text=True, timeout=600, env=env, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def plugin_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    where = tmp_path_factory.mktemp("plugin-venv") / "venv"
    venv.EnvBuilder(with_pip=True).create(where)
    python = where / "bin" / "python"
    _pip(python, "install", "--quiet", "--require-hashes", "-r", str(ROOT / "requirements" / "plugin.txt"))
    _pip(python, "install", "--quiet", "--no-deps", str(ROOT))
    yield where


def _packages(where: Path) -> set[str]:
    listed = json.loads(_pip(where / "bin" / "python", "list", "--format", "json"))
    return {p["name"].lower().replace("_", "-") for p in listed} - {"pip", "setuptools", "wheel"}


def test_the_plugin_install_is_small_and_holds_none_of_the_operators_packages(plugin_venv: Path) -> None:
    packages = _packages(plugin_venv)
    assert "longshot-operator" in packages and "kubernetes" in packages
    assert len(packages) <= MAX_PACKAGES, sorted(packages)
    assert not packages & OPERATOR_ONLY
    done = subprocess.run([str(plugin_venv / "bin" / "python"), "-m", "longshot", "operator"], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "it comes with the extra 'operator': pip install 'longshot-operator[operator]'" in done.stderr


def test_kubectl_longshot_version_runs_from_the_plugin_install(plugin_venv: Path, api_client, another_namespace,
                                                               control_plane) -> None:
    system = another_namespace("plugin-system")
    labels = {"app.kubernetes.io/part-of": "longshot", "app.kubernetes.io/component": "operator",
              "app.kubernetes.io/version": "0.2.0"}
    kubernetes.client.AppsV1Api(api_client).create_namespaced_deployment(system, {
        "metadata": {"name": "longshot", "labels": labels},
        "spec": {"selector": {"matchLabels": {"app.kubernetes.io/component": "operator"}},
                 "template": {"metadata": {"labels": labels}, "spec": {"containers": [
                     {"name": "operator", "image": "ghcr.io/example/longshot-operator:0.2.0"}]}}}})
    done = subprocess.run([str(plugin_venv / "bin" / "kubectl-longshot"), "version", "--kubeconfig",
                           str(control_plane.kubeconfig), "--operator-namespace", system], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["plugin: 0.1.0", f"operator: 0.2.0 (deployment {system}/longshot, image "
                                                         "ghcr.io/example/longshot-operator:0.2.0)"]
