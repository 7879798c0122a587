"""The operator on the real API server, run in-process with kopf's runner: start-up behaviour."""

from __future__ import annotations

from k8s_builders import build, create, merge_job

from longshot import api
from longshot.api import conditions  # noqa: F401  (api.conditions below)
from longshot_testing import wait_for


def conditions_of(custom, namespace, plural, name):
    obj = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, name)
    return obj, {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_new_build_request_gets_its_conditions(operator, custom, namespace):
    create(custom, namespace, build("demo"))

    def initialised():
        obj, conds = conditions_of(custom, namespace, "buildrequests", "demo")
        return (obj, conds) if set(api.conditions.BUILD_REQUEST_TYPES) <= set(conds) else None

    obj, conds = wait_for(initialised, timeout=30, what="the BuildRequest's conditions")
    for c in conds.values():
        assert c["status"] in ("True", "False", "Unknown")
        assert c["reason"] in api.conditions.REASONS
        assert c["observedGeneration"] == obj["metadata"]["generation"]
        assert c["lastTransitionTime"].endswith("Z")
    # nothing is finalized yet
    assert conds["Finalized"]["status"] == "Unknown"
    assert conds["Ready"]["status"] in ("False", "Unknown")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["startTime"]
    # kopf's bookkeeping stays out of the user's status
    assert "kopf" not in obj["status"]


def test_merge_jobs_get_initial_conditions(operator, custom, namespace):
    create(custom, namespace, build("b1"))
    create(custom, namespace, merge_job("m1", commit="a" * 40))
    obj, conds = wait_for(lambda: (lambda r: r if r[1].get("Queued") else None)(
        conditions_of(custom, namespace, "mergejobs", "m1")), timeout=30, what="mergejobs/m1 conditions")
    assert set(api.conditions.MERGE_JOB_TYPES) <= set(conds)
    assert conds["Merged"]["status"] == "False" and conds["Ready"]["status"] == "False"
    assert all(c["observedGeneration"] == obj["metadata"]["generation"] for c in conds.values())
