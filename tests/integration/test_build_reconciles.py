"""How many reconciles and hand-overs one BuildRequest takes to ``Finalized``, on the real manager (in-process,
kopf's watches, a real API server, the process kubelet running the scripted agent, real git).

A *hand-over* is a BuildRequest reconcile that leaves the build's next step to a later reconcile of the build: it
returns a requeue of the build, a create of an object whose answer enqueues the build again (a task, a child), or
a patch of the build's own metadata (the clean-up's finalizer). The figures are counts, not times; how many events
a reconcile in flight coalesces still varies a little with the machine's load. ``pytest -s`` prints them, with
each build reconcile's kinds of action and what enqueued the build (the code that called its work queue, and the
build's own watch events that changed its status only or its spec or metadata).
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sample_repo
from k8s_builders import condition, create, dump
from test_delivery import SCRIPT, delivery_build, finalized, script_configmap

from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot_testing import wait_for

MAX_BUILD_RECONCILES = 28
"""The figure (20 on an idle machine, 2026-11-27), with slack for what varies with the machine's load: the events a
reconcile in flight coalesces and the resync (it marks the build once a minute). The watch events of the build's
own status writes enqueue nothing (``Cache`` skips a status-only change of a build): before, they arrived before
the write's answer and cost 4 to 8 reconciles more (22 to 29 in all)."""
MAX_HANDOVERS = 5
"""The figure (the clean-up's finalizer, the planner, the plan's tasks, the next iteration's planner), with one for
a plan that arrives in two parts."""


class Counter:
    """Wraps the manager's reconcilers (``Manager.reconcilers``, looked up at every reconcile) to count them."""

    def __init__(self, mgr: managermod.Manager, build: tuple[str, str]) -> None:
        self.build = build
        self.reconciles: collections.Counter[str] = collections.Counter()
        self.handovers: collections.Counter[str] = collections.Counter()
        self.trail: list[tuple[Any, ...]] = []
        self.causes: collections.Counter[str] = collections.Counter()
        """Who enqueued the build (the code that called its work queue), for the printout."""
        queue = mgr.controllers["BuildRequest"].queue
        for method in ("add", "add_all", "add_low", "add_at", "add_after"):
            setattr(queue, method, self._noting(method, getattr(queue, method)))
        observe = mgr.observe
        seen: dict[str, Any] = {}

        def observed(kind: str, event_type: str | None, body: Any) -> None:
            meta = body.get("metadata") or {}
            if kind == "BuildRequest" and (meta.get("namespace"), meta.get("name")) == build and seen:
                what = ("status only" if {k: v for k, v in body.items() if k not in ("status", "metadata")} ==
                        {k: v for k, v in seen.items() if k not in ("status", "metadata")}
                        and meta.get("generation") == seen["metadata"].get("generation")
                        and meta.get("finalizers") == seen["metadata"].get("finalizers")
                        and meta.get("annotations") == seen["metadata"].get("annotations") else "spec or metadata")
                if meta.get("resourceVersion") != seen["metadata"].get("resourceVersion"):
                    self.causes[f"watch event of the build: {what} changed"] += 1
            if kind == "BuildRequest" and (meta.get("namespace"), meta.get("name")) == build:
                seen.clear()
                seen.update(body)
            observe(kind, event_type, body)

        mgr.observe = observed  # type: ignore[method-assign]
        inner = dict(mgr.reconcilers)
        mgr.reconcilers = {kind: self._wrap(kind, fn) for kind, fn in inner.items()}

    def _wrap(self, kind: str, fn: Any) -> Any:
        async def counted(ns: str, name: str) -> list[ex.Action]:
            actions: list[ex.Action] = await fn(ns, name)
            if kind == "BuildRequest" and (ns, name) == self.build:
                self.reconciles[kind] += 1
                self.trail.append(tuple(sorted({_kind(a) for a in actions})))
                why = self._handover(actions)
                if why:
                    self.handovers[why] += 1
            elif kind != "BuildRequest":
                self.reconciles[kind] += 1
            return actions

        return counted

    def _noting(self, method: str, fn: Any) -> Any:
        ref = ("BuildRequest", *self.build)

        def noted(first: Any, *args: Any) -> Any:
            if sys._getframe(1).f_code.co_name == "add_at":
                return fn(first, *args)  # (add_at of a time that has come: counted there)
            if first == ref or (method in ("add_all", "add_low") and ref in (first := list(first))):
                self.causes[f"{method} from {_caller()}"] += 1
            return fn(first, *args)

        return noted

    def _handover(self, actions: list[ex.Action]) -> str:
        ref = ("BuildRequest", *self.build)
        if any(isinstance(a, ex.Requeue) and a.ref == ref for a in actions):
            return "requeue"
        if any(isinstance(a, ex.CreateObject) for a in actions):
            return "create"
        if any(isinstance(a, ex.PatchObject) and (a.kind, a.namespace, a.name) == ref for a in actions):
            return "patch"  # its own metadata (the clean-up's finalizer): the patch's answer enqueues it
        return ""


def _caller() -> str:
    """The first two frames outside the work queues and this module: who enqueued."""
    names: list[str] = []
    frame = sys._getframe(2)
    while frame is not None and len(names) < 2:
        file = Path(frame.f_code.co_filename).name
        if file not in ("workqueue.py", Path(__file__).name):
            kind = frame.f_locals.get("kind")
            names.append(f"{file}:{frame.f_code.co_name}" + (f"({kind})" if isinstance(kind, str) else ""))
        frame = frame.f_back
    return " < ".join(names)


def _kind(a: ex.Action) -> str:
    return type(a).__name__ + (f":{a.ref[0]}" if isinstance(a, ex.Requeue) else "")


@pytest.fixture
def managers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[managermod.Manager]]:
    """The managers made while the test runs (the in-process operator's)."""
    made: list[managermod.Manager] = []
    init = managermod.Manager.__init__

    def record(self: managermod.Manager, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(managermod.Manager, "__init__", record)
    yield made


def test_one_build_finalizes_in_a_bounded_number_of_reconciles(managers, operator, kubelet, core_v1, custom,
                                                               namespace, tmp_path):
    mgr = wait_for(lambda: managers[-1] if managers else None, timeout=30, what="the operator's manager")
    counter = Counter(mgr, (namespace, "demo"))
    url = sample_repo.make(tmp_path)
    script_configmap(core_v1, namespace, SCRIPT)
    create(custom, namespace, delivery_build(url))
    b = finalized(custom, namespace, timeout=300)  # counts, not a time: a loaded machine only takes longer
    assert condition(b, "Finalized")["status"] == "True", dump(custom, namespace)
    builds, handovers = counter.reconciles["BuildRequest"], sum(counter.handovers.values())
    report = (f"reconciles to Finalized: {dict(counter.reconciles)}; build hand-overs: {handovers} "
              f"{dict(counter.handovers)}")
    (tmp_path / "reconciles.txt").write_text(report)
    print("\n".join(map(str, counter.trail)), file=sys.__stdout__)
    print("\n".join(f"{n:3d} {c}" for c, n in counter.causes.most_common()), file=sys.__stdout__)
    print(report, file=sys.__stdout__)  # kopf's runner holds sys.stdout
    assert builds > 0, "the build's reconciles were not counted"
    assert builds <= MAX_BUILD_RECONCILES, f"{builds} BuildRequest reconciles: {dict(counter.reconciles)}"
    assert handovers <= MAX_HANDOVERS, f"{handovers} hand-overs: {dict(counter.handovers)}"
