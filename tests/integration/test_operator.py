"""The operator skeleton on the real API server, run in-process with kopf's runner."""

from __future__ import annotations

from longshot import api
from longshot.testing import wait_for

from .test_crds import build, create, merge_job, task


def conditions_of(custom, namespace, plural, name):
    obj = custom.get_namespaced_custom_object(api.GROUP, api.VERSION, namespace, plural, name)
    return obj, {c["type"]: c for c in obj.get("status", {}).get("conditions", [])}


def test_new_build_request_gets_initial_conditions(operator, custom, namespace):
    create(custom, namespace, build("demo"))

    def initialised():
        obj, conds = conditions_of(custom, namespace, "buildrequests", "demo")
        return (obj, conds) if len(conds) == 5 and obj["status"].get("observedGeneration") else None

    obj, conds = wait_for(initialised, timeout=30, what="the BuildRequest's initial conditions")
    assert set(conds) == {"Planned", "Progressing", "Merged", "Finalized", "Ready"}
    for c in conds.values():
        assert (c["status"], c["reason"]) == ("Unknown", "Initializing")
        assert c["observedGeneration"] == obj["metadata"]["generation"]
        assert c["lastTransitionTime"].endswith("Z")
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert obj["status"]["phase"] == "Pending"
    # kopf's bookkeeping stays out of the user's status
    assert "kopf" not in obj["status"]


def test_all_three_resources_are_registered(operator, custom, namespace):
    create(custom, namespace, task("t1"))
    create(custom, namespace, merge_job("m1"))
    for plural, name in (("agenttasks", "t1"), ("mergejobs", "m1")):
        wait_for(lambda p=plural, n=name: conditions_of(custom, namespace, p, n)[1].get("Ready"),
                 timeout=30, what=f"{plural}/{name} initial conditions")
