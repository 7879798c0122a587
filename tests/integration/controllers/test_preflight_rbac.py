"""The configuration check tells "RBAC hides it" from "it does not exist" (found on the local cluster: the
operator, which may not read ConfigMaps there, stopped every build with "ConfigMap 'script' does not exist")."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from fake_kube import FakeKube
from longshot.api import objects
from longshot.runtime import kube as kubemod
from longshot.runtime import preflight

pytestmark = pytest.mark.integration


def kube(*, configmaps: dict[str, Any] | None = None, hidden: tuple[str, ...] = ()) -> FakeKube:
    """The fake API with these ConfigMaps in team-a; ``hidden`` methods ("get_secret", "get_configmap") answer
    Forbidden, as the real client does for a 403."""
    k = FakeKube()
    k.configmaps = {("team-a", n): d for n, d in (configmaps or {}).items()}
    for method in hidden:
        k.fail_next[method] = [kubemod.Forbidden(method)]
    return k


def a_build(url: str, **spec: Any) -> objects.BuildRequest:
    body = {"apiVersion": "longshot.dev/v1alpha1", "kind": "BuildRequest",
            "metadata": {"name": "demo", "namespace": "team-a", "generation": 1},
            "spec": {"request": "r", "repository": {"url": url, "baseBranch": "main", **spec.pop("repository", {})},
                     **spec}}
    return objects.parse(body, objects.BuildRequest)


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> str:
    root = tmp_path_factory.mktemp("preflight")
    work, bare = root / "work", root / "app.git"
    env = {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "HOME": str(root), "PATH": "/usr/bin:/bin"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README").write_text("x\n")
    subprocess.run(["git", "-C", str(work), "add", "."], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-qm", "init"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True, env=env)
    return Path(bare).as_uri()


def test_a_script_configmap_the_operator_may_not_read_is_not_reported_missing(repository: str) -> None:
    build = a_build(repository, agent={"backend": "scripted", "script": {"name": "script"}})
    assert preflight.check(kube(hidden=("get_configmap",)), build) is None


def test_a_script_configmap_that_does_not_exist_is_named(repository: str) -> None:
    build = a_build(repository, agent={"backend": "scripted", "script": {"name": "script"}})
    problem = preflight.check(kube(), build)
    assert problem is not None and problem.startswith("spec.agent.script: ConfigMap 'script' does not exist")
    assert preflight.check(kube(configmaps={"script": {"script.yaml": "steps: []"}}), build) is None


def test_a_secret_the_operator_may_not_read_names_the_missing_binding(repository: str) -> None:
    build = a_build(repository, repository={"credentialsSecret": "git-token"})
    problem = preflight.check(kube(hidden=("get_secret",)), build)
    assert problem is not None
    assert problem.startswith("spec.repository.credentialsSecret: the operator may not read Secret 'git-token'")
    assert "does not exist" not in problem and "rbac.secrets.namespaces" in problem
