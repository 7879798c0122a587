"""A failed reconcile is retried, never dropped (issue 9), on a real API server: a ValidatingAdmissionPolicy
refuses the operator's status write after `spec.suspend: true`; the policy is then removed, which makes no event
on the BuildRequest, and the retry still lands."""

from __future__ import annotations

import yaml
from k8s_builders import build, condition, create, get
from test_orchestration import PLANNER, wait_pod

from longshot_testing import wait_for


def refuse_suspended_status(kubectl, namespace: str, name: str) -> None:
    docs = [
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
         "metadata": {"name": name},
         "spec": {"failurePolicy": "Fail",
                  "matchConstraints": {"resourceRules": [{"apiGroups": ["longshot.dev"], "apiVersions": ["v1alpha1"],
                                                          "operations": ["UPDATE"],
                                                          "resources": ["buildrequests/status"]}]},
                  "validations": [{"expression": "!has(object.status.phase) || object.status.phase != 'Suspended'",
                                   "message": "refused once by the test"}]}},
        {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
         "metadata": {"name": name},
         "spec": {"policyName": name, "validationActions": ["Deny"],
                  "matchResources": {"namespaceSelector": {"matchLabels": {
                      "kubernetes.io/metadata.name": namespace}}}}},
    ]
    kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))


def test_a_refused_status_write_is_retried_and_lands_without_any_new_event(operator, core_v1, custom, namespace,
                                                                          kubectl):
    create(custom, namespace, build("demo"))
    wait_pod(core_v1, namespace, f"{PLANNER}-a1")
    policy = f"refuse-{namespace}"[:63]
    refuse_suspended_status(kubectl, namespace, policy)
    # the policy takes a moment to load: probe it with a server-side dry run (admission runs, nothing is stored)
    def refusing() -> bool:
        out = kubectl("patch", "buildrequests.longshot.dev", "demo", "-n", namespace, "--subresource=status",
                      "--dry-run=server", "--type=merge", "-p", '{"status":{"phase":"Suspended"}}', check=False)
        return out.returncode != 0 and "refused once by the test" in out.stderr
    wait_for(refusing, timeout=30, what="the policy to refuse status writes")

    custom.patch_namespaced_custom_object("longshot.dev", "v1alpha1", namespace, "buildrequests", "demo",
                                          {"spec": {"suspend": True}})
    # the operator tries and is refused: the build cannot show Suspended while the policy stands
    events = wait_for(lambda: [e for e in core_v1.list_namespaced_event(
        namespace, field_selector="involvedObject.name=demo").items if e.reason == "Suspended"] or None,
        timeout=30, what="the operator to act on suspend (its Event)")
    assert events
    assert get(custom, namespace, "buildrequests", "demo")["status"]["phase"] != "Suspended"
    # remove the policy: no event on the BuildRequest follows, only the operator's own retry can land it
    kubectl("delete", "validatingadmissionpolicybinding", policy)
    kubectl("delete", "validatingadmissionpolicy", policy)
    b = wait_for(lambda: (lambda o: o if o["status"].get("phase") == "Suspended" else None)(
        get(custom, namespace, "buildrequests", "demo")), timeout=60, what="the retried status write")
    assert condition(b, "Suspended")["status"] == "True"
    assert condition(b, "Reconciling")["reason"] == "Suspended"
    assert b["status"]["observedGeneration"] == b["metadata"]["generation"]
