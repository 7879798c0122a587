"""Small builders of test objects, shared by the integration tests."""

from __future__ import annotations

import os

from longshot import api

GROUP, VERSION = api.GROUP, api.VERSION


def default_repository() -> str:
    """A real repository for builds whose test plays the agent: the operator checks that it answers and has
    the base branch before any Pod (``runtime.preflight``). The session fixture ``sample_repository`` sets it."""
    return os.environ.get("LONGSHOT_TEST_REPOSITORY", "https://git.example.com/o/r.git")


def build(name: str = "b1", **spec_patch):
    spec = {"request": "Build a REST API", "repository": {"url": default_repository()}}
    for path, value in spec_patch.items():
        target = spec
        keys = path.split("__")
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
    return {"apiVersion": api.API_VERSION, "kind": "BuildRequest", "metadata": {"name": name}, "spec": spec}


def task(name: str = "t1", **spec):
    base = {"buildRef": {"name": "b1"}, "description": "Do a thing"}
    base.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": "AgentTask", "metadata": {"name": name}, "spec": base}


def merge_job(name: str = "m1", **spec):
    base = {"buildRef": {"name": "b1"}, "taskRef": {"name": "t1"}, "branch": "longshot/b1/t1", "target": "main"}
    base.update(spec)
    return {"apiVersion": api.API_VERSION, "kind": "MergeJob", "metadata": {"name": name}, "spec": base}


def schedule(name: str = "s1", template=None, **spec_patch):
    """A BuildSchedule (every five minutes, UTC) whose children are ``build()``'s (or ``template``'s) spec."""
    spec = {"schedule": "*/5 * * * *", "buildTemplate": {"spec": (template or build())["spec"]}}
    for path, value in spec_patch.items():
        target = spec
        keys = path.split("__")
        for k in keys[:-1]:
            target = target.setdefault(k, {})
        target[keys[-1]] = value
    return {"apiVersion": api.API_VERSION, "kind": "BuildSchedule", "metadata": {"name": name}, "spec": spec}


PLURAL = {"BuildRequest": "buildrequests", "AgentTask": "agenttasks", "MergeJob": "mergejobs",
          "BuildSchedule": "buildschedules"}


def create(custom, namespace, obj):
    return custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL[obj["kind"]], obj)


def get(custom, namespace, plural, name):
    return custom.get_namespaced_custom_object(GROUP, VERSION, namespace, plural, name)


def list_of(custom, namespace, plural):
    return custom.list_namespaced_custom_object(GROUP, VERSION, namespace, plural)["items"]


def condition(obj, type_):
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return c
    return None


def dump(custom, namespace) -> str:
    """The namespace's Longshot objects in a few lines, for failure messages."""
    out = []
    for plural in ("buildrequests", "agenttasks", "mergejobs", "buildschedules"):
        for o in list_of(custom, namespace, plural):
            st = o.get("status") or {}
            conds = " ".join(f"{c['type']}={c['status']}/{c.get('reason')}" for c in st.get("conditions") or [])
            extra = ""
            if plural == "agenttasks":
                atts = [(a.get("number"), a.get("failureClass"), (a.get("exitReason") or "")[:80])
                        for a in st.get("attempts") or []]
                extra = f" attempts={atts} verdict={(st.get('handoff') or {}).get('verdict')}"
            if plural == "mergejobs":
                tries = [(a.get("result"), (a.get("message") or "")[:120]) for a in st.get("attempts") or []]
                extra = f" attempts={tries}"
            out.append(f"{plural}/{o['metadata']['name']}: phase={st.get('phase')} {conds}{extra}")
    return "\n".join(out)
