"""``skaffold.yaml`` is tested with skaffold itself: v2.16.1, built from the Go module proxy by
``hack/go-tools.sh skaffold`` (the wrapper module ``hack/skaffold`` carries skaffold's own ``replace`` directives).

* ``skaffold render`` (offline, from a build-artifacts file, so nothing is built and no cluster is asked) gives the
  chart's manifests: the CRDs, the operator Deployment and the gateway with the images skaffold built, one operator
  replica and no operator PodDisruptionBudget, as ``skaffold.yaml`` sets; the profiles ``kind`` (activated by a
  ``kind-*`` context) and ``no-registry`` set the pull policies they say.
* ``skaffold build`` builds both images where a Docker engine answers (``docker info``), else it is skipped naming
  why.

skaffold is cached in ``~/.cache/longshot/tools/bin``. A cold build compiles about 2,300 packages (docs/install.md
has the time); the test builds it only when ``LONGSHOT_BUILD_SKAFFOLD=1`` and otherwise skips, saying how to build
it, so a fresh clone's ``make test`` does not spend that time. See docs/install.md#skaffold-dev-on-kind.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from longshot.config import Settings
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
GO_TOOLS = ROOT / "hack" / "go-tools.sh"
BUILD_ENV = "LONGSHOT_BUILD_SKAFFOLD"
OPERATOR = "longshot-operator:0123456789ab"
AGENT = "longshot-agent:ba9876543210"
CRD_NAMES = {"buildrequests.longshot.dev", "agenttasks.longshot.dev", "mergejobs.longshot.dev"}


@pytest.fixture(scope="module")
def skaffold() -> Path:
    cached = subprocess.run(["bash", str(GO_TOOLS), "--check", "skaffold"], capture_output=True, text=True,
                            check=False)
    if cached.returncode != 0 and os.environ.get(BUILD_ENV) != "1":
        pytest.skip("skaffold v2.16.1 is not in the tool cache and its cold build is long (docs/install.md): run "
                    f"`hack/go-tools.sh skaffold` once, or set {BUILD_ENV}=1 to let this test build it")
    built = subprocess.run(["bash", str(GO_TOOLS), "skaffold"], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        why = [line for line in built.stderr.splitlines() if "403" in line or "error" in line.lower()]
        pytest.skip("skaffold cannot be built here (`hack/go-tools.sh skaffold`): "
                    + (why[0] if why else built.stderr.strip()[-300:]))
    return Path(built.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def helm_dir() -> Path:
    result = subprocess.run(["bash", str(ROOT / "hack" / "k8s-binaries.sh")], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 0, result.stderr[-4000:]
    return Path(result.stdout.strip().splitlines()[-1])


def _env(tmp: Path, helm_dir: Path, context: str) -> dict[str, str]:
    """skaffold's environment: helm on PATH, a private HOME (skaffold writes its config there), no update check or
    survey, and a kubeconfig naming ``context`` (profiles activate on it; nothing connects to it)."""
    kubeconfig = tmp / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": context,
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [{"name": "u", "user": {"token": "unused"}}],
        "contexts": [{"name": context, "context": {"cluster": "c", "user": "u"}}]}))
    home = tmp / "home"
    home.mkdir(exist_ok=True)
    return {"PATH": f"{helm_dir}:/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "KUBECONFIG": str(kubeconfig),
            "SKAFFOLD_UPDATE_CHECK": "false", "SKAFFOLD_INTERACTIVE": "false", "SKAFFOLD_DISABLE_SURVEY": "true",
            "HELM_CACHE_HOME": str(home / "helm-cache"), "HELM_CONFIG_HOME": str(home / "helm-config"),
            "HELM_DATA_HOME": str(home / "helm-data")}


def render(skaffold: Path, helm_dir: Path, tmp: Path, *args: str, context: str = "test") -> list[dict[str, Any]]:
    """``skaffold render`` of our skaffold.yaml with the images of a build-artifacts file: the rendered objects."""
    artifacts = tmp / "build.json"
    artifacts.write_text(json.dumps({"builds": [{"imageName": "longshot-operator", "tag": OPERATOR},
                                                {"imageName": "longshot-agent", "tag": AGENT}]}))
    out = tmp / "rendered.yaml"
    result = subprocess.run([str(skaffold), "render", "--filename", str(ROOT / "skaffold.yaml"), "--offline=true",
                             f"--build-artifacts={artifacts}", "--digest-source=none", f"--output={out}", *args],
                            cwd=ROOT, env=_env(tmp, helm_dir, context), capture_output=True, text=True, timeout=300,
                            check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    return [d for d in yaml.safe_load_all(out.read_text()) if d]


def _named(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d.get("kind") == kind}


def _container(deploy: dict[str, Any]) -> dict[str, Any]:
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    return container


def _env_of(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}


def test_skaffold_renders_the_chart_with_our_images(skaffold: Path, helm_dir: Path, tmp_path: Path) -> None:
    docs = render(skaffold, helm_dir, tmp_path)
    assert set(_named(docs, "CustomResourceDefinition")) >= CRD_NAMES
    deployments = _named(docs, "Deployment")
    assert set(deployments) == {"longshot", "longshot-gateway"}, set(deployments)
    operator, gateway = deployments["longshot"], deployments["longshot-gateway"]
    assert all(d["metadata"]["namespace"] == "longshot-system" for d in deployments.values())
    assert _container(operator)["image"] == OPERATOR and _container(gateway)["image"] == OPERATOR
    assert _container(gateway)["args"] == ["gateway"]
    assert operator["spec"]["replicas"] == 1  # skaffold.yaml's setValues
    # podDisruptionBudget.enabled=false drops the operator's PDB; the gateway's follows its own replicas (2)
    assert "longshot" not in _named(docs, "PodDisruptionBudget")
    # the operator hands the agent image to every agent Pod: skaffold's agent image, through the chart
    op_env = _env_of(_container(operator))
    assert op_env["LONGSHOT_AGENT_IMAGE"] == AGENT
    # and what the rendered Deployments set is valid for the settings that read it
    assert Settings.from_env(op_env).agent_image == AGENT
    assert GatewaySettings.from_env(_env_of(_container(gateway))).port == 8080
    assert "longshot-gateway" in _named(docs, "Service")


@pytest.mark.parametrize(("args", "context", "policy"), [
    ((), "test", "IfNotPresent"),  # the chart's default
    ((), "kind-longshot", "IfNotPresent"),  # the kind profile activates on a kind-* context
    (("--profile=no-registry",), "test", "Never"),
])
def test_the_profiles_set_the_pull_policies(skaffold: Path, helm_dir: Path, tmp_path: Path, args: tuple[str, ...],
                                            context: str, policy: str) -> None:
    docs = render(skaffold, helm_dir, tmp_path, *args, context=context)
    operator = _named(docs, "Deployment")["longshot"]
    assert _container(operator)["imagePullPolicy"] == policy
    assert _env_of(_container(operator))["LONGSHOT_IMAGE_PULL_POLICY"] == policy


def _docker_info() -> str | None:
    """None when a Docker engine answers, else why not."""
    try:
        result = subprocess.run(["docker", "info"], capture_output=True, text=True, timeout=30, check=False)
    except FileNotFoundError:
        return "no docker CLI"
    except subprocess.TimeoutExpired:
        return "docker info timed out after 30 s"
    if result.returncode == 0:
        return None
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"docker info exited {result.returncode}"


def test_skaffold_builds_both_images(skaffold: Path, helm_dir: Path, tmp_path: Path) -> None:
    why = _docker_info()
    if why is not None:
        pytest.skip(f"skaffold build needs a Docker engine, and none answers here: {why}")
    # the no-registry profile builds on hack/images.sh's Debian base, loaded from its archive when the engine lacks it
    base = "localhost/longshot-base:bookworm"
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True, check=False).returncode != 0:
        archives = sorted((Path.home() / ".cache" / "longshot" / "images").glob("base-*.tar"))
        if not archives:
            pytest.skip(f"{base} is not in the Docker engine and hack/images.sh has not built it (sudo hack/images.sh "
                        "base)")
        subprocess.run(["docker", "load", "--input", str(archives[-1])], capture_output=True, check=True)
        subprocess.run(["docker", "tag", _loaded_name(archives[-1]), base], capture_output=True, check=False)
    out = tmp_path / "built.json"
    env = {**_env(tmp_path, helm_dir, "test"), "DOCKER_HOST": os.environ.get("DOCKER_HOST", "")}
    result = subprocess.run([str(skaffold), "build", "--filename", str(ROOT / "skaffold.yaml"), "--profile=no-registry",
                             "--push=false", f"--file-output={out}"], cwd=ROOT, env=env, capture_output=True,
                            text=True, timeout=3600, check=False)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    builds = {b["imageName"]: b["tag"] for b in json.loads(out.read_text())["builds"]}
    assert set(builds) == {"longshot-operator", "longshot-agent"}
    for tag in builds.values():
        assert subprocess.run(["docker", "image", "inspect", tag], capture_output=True, check=False).returncode == 0


def _loaded_name(archive: Path) -> str:
    """The reference a docker archive carries (its manifest's first RepoTag)."""
    listed = subprocess.run(["tar", "-xOf", str(archive), "manifest.json"], capture_output=True, check=True).stdout
    tags = json.loads(listed)[0].get("RepoTags") or []
    return str(tags[0]) if tags else ""
