"""How many reconciles and hand-overs one BuildRequest takes to ``Finalized``, on the real manager (in-process,
kopf's watches, a real API server, the process kubelet running the scripted agent, real git).

A *hand-over* is a BuildRequest reconcile that leaves the build's next step to a later reconcile of the build: it
returns a requeue of the build, a create of an object whose answer enqueues the build again (a task, a child), or
a patch of the build's own metadata (the clean-up's finalizer). The figures are counts, not times; how many events
a reconcile in flight coalesces still varies a little with the machine's load. ``pytest -s`` prints them, with
each build reconcile's kinds of action.
"""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sample_repo
from k8s_builders import condition, create, dump
from test_delivery import SCRIPT, delivery_build, finalized, script_configmap

from longshot.controllers import executor as ex
from longshot.controllers import manager as managermod
from longshot.testing import wait_for

MAX_BUILD_RECONCILES = 30
"""The figure, with slack for the events that a reconcile in flight does or does not coalesce."""
MAX_HANDOVERS = 6
"""The figure, with slack for a plan that arrives in two parts."""


class Counter:
    """Wraps the manager's reconcilers (``Manager.reconcilers``, looked up at every reconcile) to count them."""

    def __init__(self, mgr: managermod.Manager, build: tuple[str, str]) -> None:
        self.build = build
        self.reconciles: collections.Counter[str] = collections.Counter()
        self.handovers: collections.Counter[str] = collections.Counter()
        self.trail: list[tuple[Any, ...]] = []
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

    def _handover(self, actions: list[ex.Action]) -> str:
        ref = ("BuildRequest", *self.build)
        if any(isinstance(a, ex.Requeue) and a.ref == ref for a in actions):
            return "requeue"
        if any(isinstance(a, ex.CreateObject) for a in actions):
            return "create"
        if any(isinstance(a, ex.PatchObject) and (a.kind, a.namespace, a.name) == ref for a in actions):
            return "patch"  # its own metadata (the clean-up's finalizer): the patch's answer enqueues it
        return ""


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
    print(report, file=sys.__stdout__)  # kopf's runner holds sys.stdout
    assert builds > 0, "the build's reconciles were not counted"
    assert builds <= MAX_BUILD_RECONCILES, f"{builds} BuildRequest reconciles: {dict(counter.reconciles)}"
    assert handovers <= MAX_HANDOVERS, f"{handovers} hand-overs: {dict(counter.handovers)}"
