"""The clean-up of a deleted build's refs (``spec.cleanup``, docs/cleanup.md) on the real API server, with the
operator, the process kubelet running the real agent runner (scripted backend) and a real git repository."""

from __future__ import annotations

import subprocess
import time

import kubernetes
import sample_repo
from k8s_builders import condition, create, dump, get
from test_delivery import SCRIPT, delivery_build, finalized, script_configmap

from longshot_testing import controlplane, wait_for

FINALIZER = "longshot.dev/cleanup"


def refs(url: str, namespace: str) -> dict[str, str]:
    """Every ref Longshot could have written for builds of ``namespace`` (``git ls-remote`` on the server)."""
    out = subprocess.run(["git", "ls-remote", url], check=True, capture_output=True, text=True).stdout
    found = {}
    for line in out.splitlines():
        sha, _, ref = line.partition("\t")
        if ref.startswith((f"refs/heads/longshot/{namespace}/", f"refs/longshot/handoffs/{namespace}/")):
            found[ref] = sha
    return found


def with_finalizer(custom, namespace: str) -> dict:
    return wait_for(lambda: (lambda b: b if FINALIZER in (b["metadata"].get("finalizers") or []) else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=30, what="the clean-up finalizer on the build")


def delete_and_wait_gone(custom, namespace: str) -> None:
    custom.delete_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo")

    def gone() -> bool:
        try:
            get(custom, namespace, "buildrequests", "demo")
        except kubernetes.client.ApiException as e:
            return e.status == 404
        return False

    wait_for(gone, timeout=60, what="the build deleted (its finalizer removed)")


def cleanup_events(core_v1, namespace: str, reason: str) -> list[str]:
    """The clean-up's Events of that reason on the build (recorded before its finalizer is removed)."""
    def found():
        items = core_v1.list_namespaced_event(namespace, field_selector="involvedObject.name=demo").items
        return [f"{e.reason}: {e.message}" for e in items if e.reason == reason] or None

    return wait_for(found, timeout=10, what=f"a {reason} Event on the build")


def test_a_finished_build_deleted_leaves_no_longshot_ref_in_the_repository(operator, kubelet, core_v1, custom,
                                                                          namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    create(custom, namespace, delivery_build(url))
    with_finalizer(custom, namespace)
    b = finalized(custom, namespace)
    assert (condition(b, "Finalized")["status"], b["status"]["phase"]) == ("True", "Succeeded"), dump(custom,
                                                                                                       namespace)
    before = refs(url, namespace)
    assert f"refs/heads/longshot/{namespace}/demo/demo-add" in before  # the work's branches are there to clean
    main = sample_repo.log(url)

    delete_and_wait_gone(custom, namespace)
    assert refs(url, namespace) == {}
    assert sample_repo.log(url) == main  # the target is untouched
    (event,) = cleanup_events(core_v1, namespace, "CleanedUp")
    assert event.startswith("CleanedUp: deleted ") and "kept" not in event


def test_a_failed_task_branch_is_kept_on_success_policy(operator, kubelet, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, {
        "roles": {"planner": [{"finish": {"summary": "one", "tasks": [{"name": "w", "description": "work"}]}}]},
        "tasks": {"w": [{"fail": {"class": "AgentError", "message": "gave up half-way"}}]}})
    create(custom, namespace, delivery_build(url, retry={"maxAttempts": 1}))
    with_finalizer(custom, namespace)
    # work a person may still need on the failed task's branch, and a queue branch (Longshot's scratch)
    branch = f"longshot/{namespace}/demo/demo-w"
    kept = sample_repo.push_branch(url, branch, {"half.txt": "half done\n"}, tmp_path)
    sample_repo.push_branch(url, f"longshot/{namespace}/demo/_queue/b1/1", {"q.txt": "q\n"}, tmp_path)
    b = finalized(custom, namespace, timeout=120)
    assert condition(b, "Finalized")["status"] == "False", dump(custom, namespace)

    delete_and_wait_gone(custom, namespace)
    assert refs(url, namespace) == {f"refs/heads/{branch}": kept}
    (event,) = cleanup_events(core_v1, namespace, "CleanedUp")
    assert "deleted 1 ref" in event and "kept 1" in event and "the build did not succeed" in event


def test_never_keeps_every_ref(operator, core_v1, custom, namespace, tmp_path):
    url = sample_repo.make(tmp_path)
    create(custom, namespace, delivery_build(url, cleanup={"branches": "Never"}))
    with_finalizer(custom, namespace)
    queue = sample_repo.push_branch(url, f"longshot/{namespace}/demo/_queue/b1/1", {"q.txt": "q\n"}, tmp_path)
    delete_and_wait_gone(custom, namespace)
    assert refs(url, namespace) == {f"refs/heads/longshot/{namespace}/demo/_queue/b1/1": queue}
    assert cleanup_events(core_v1, namespace, "CleanupSkipped")


def test_an_unreachable_repository_does_not_hold_the_deletion_for_ever(operator, core_v1, custom, namespace,
                                                                       tmp_path):
    url = sample_repo.make(tmp_path)
    create(custom, namespace, delivery_build(url))
    with_finalizer(custom, namespace)
    # the repository goes away; the last allowed attempt is near (annotations as a previous attempt left them)
    subprocess.run(["rm", "-rf", url.removeprefix("file://")], check=True)
    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo", {
        "metadata": {"annotations": {"longshot.dev/cleanup-attempts": "5"}}})
    delete_and_wait_gone(custom, namespace)
    (event,) = cleanup_events(core_v1, namespace, "CleanupAbandoned")
    assert "after 6 attempt(s)" in event and f"refs/heads/longshot/{namespace}/demo/" in event


def test_a_build_whose_credentials_secret_is_gone_is_deleted_at_once(operator, core_v1, custom, namespace, tmp_path):
    """As in a namespace being deleted: the Secret may go before the build, and no wait would bring it back."""
    url = sample_repo.make(tmp_path)
    core_v1.create_namespaced_secret(namespace, {"metadata": {"name": "git-token"},
                                                 "stringData": {"username": "bot", "token": "t0ken-for-the-test"}})
    create(custom, namespace, delivery_build(url, repository={"url": url, "credentialsSecret": "git-token"}))
    with_finalizer(custom, namespace)
    queue = sample_repo.push_branch(url, f"longshot/{namespace}/demo/_queue/b1/1", {"q.txt": "q\n"}, tmp_path)
    core_v1.delete_namespaced_secret("git-token", namespace)
    delete_and_wait_gone(custom, namespace)
    (event,) = cleanup_events(core_v1, namespace, "CleanupAbandoned")
    assert "credentials Secret git-token is gone" in event and "t0ken-for-the-test" not in event
    assert refs(url, namespace) == {f"refs/heads/longshot/{namespace}/demo/_queue/b1/1": queue}


def test_a_namespace_with_a_build_goes_as_fast_as_its_contents_under_the_charts_rbac(
        control_plane, operator_watching, operator_env, kubectl, core_v1, custom, namespace, another_namespace,
        tmp_path, monkeypatch):
    """Issue 55: the operator runs as the chart's ServiceAccount (cluster-wide mode: Secrets readable only where
    bound), a team namespace has the documented ``secret-reader`` RoleBinding and a credentialed build. Deleting the
    namespace deletes the RoleBinding with the Secret, so the clean-up reads the Secret as Forbidden; it must let
    its finalizer go at once, and the namespace be gone within 30 s (not minutes of backoff)."""
    import yaml
    from chart_render import of_kinds, render

    release = f"ns-{namespace[-6:]}"
    docs = of_kinds(render(control_plane, namespace, release=release),
                    "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding")
    # kopf resolves `--namespace` by listing Namespaces, a right the chart grants only with watchNamespaces: added
    # here, because this operator must watch the team's namespace alone (the tier's API server is shared)
    docs += [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
              "metadata": {"name": f"{release}-kopf-namespaces"},
              "rules": [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]}]},
             {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
              "metadata": {"name": f"{release}-kopf-namespaces"},
              "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                          "name": f"{release}-kopf-namespaces"},
              "subjects": [{"kind": "ServiceAccount", "name": f"{release}-longshot", "namespace": namespace}]}]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
    team = another_namespace("team")
    try:
        url = sample_repo.make(tmp_path)
        core_v1.create_namespaced_secret(team, {"metadata": {"name": "git-token"},
                                                "stringData": {"username": "bot", "token": "t0ken-for-the-test"}})
        # the documented opt-in of a namespace (docs/install.md)
        kubectl("-n", team, "create", "rolebinding", "longshot-secret-reader",
                f"--clusterrole={release}-longshot-secret-reader",
                f"--serviceaccount={namespace}:{release}-longshot",
                f"--serviceaccount={namespace}:{release}-longshot-gateway")
        token = kubectl("-n", namespace, "create", "token", f"{release}-longshot", "--duration=1h").stdout.strip()
        kubeconfig = controlplane.write_kubeconfig(tmp_path / "operator.kubeconfig", control_plane.server,
                                                   control_plane.pki / "ca.crt", token, user=f"{release}-longshot")
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        operator_watching(team)
        create(custom, team, delivery_build(url, repository={"url": url, "credentialsSecret": "git-token"}))
        with_finalizer(custom, team)
        asked = time.monotonic()
        core_v1.delete_namespace(team)

        def gone() -> bool:
            try:
                core_v1.read_namespace(team)
            except kubernetes.client.ApiException as e:
                return e.status == 404
            return False

        wait_for(gone, timeout=30, what=f"namespace {team} gone with its build (the clean-up not backing off)")
        print(f"namespace {team} gone {time.monotonic() - asked:.1f}s after its deletion was asked for")
    finally:
        kubectl("delete", "-f", "-", "--wait=false", "--ignore-not-found", input=yaml.safe_dump_all(
            [d for d in docs if d["kind"] in ("ClusterRole", "ClusterRoleBinding")]), check=False)
