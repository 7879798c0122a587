"""Drive the operator's controllers by hand, for tests: the same paths the workers take, one turn at a time.

The product runs its controllers with workers (``Controller.run``, ``Dispatcher.run``, ``Manager.run``); a test
that wants to see one turn of everything, in a fixed order, uses these instead. They use only the product's public
methods: a work queue's ``take`` (every due reference, tenants in turn, no cap) and a controller's ``process`` (the
one path a reference takes).

    import driving
    await driving.step(manager)     # housekeeping, then every kind's due references, with dispatches between
    await driving.settle(manager)   # the merge queues' reconciles that step started without waiting
"""

from __future__ import annotations

import asyncio
import weakref

from longshot.controllers import controller as ctl
from longshot.controllers import dispatcher as dsp
from longshot.controllers import manager as mgr

_detached: weakref.WeakKeyDictionary[ctl.Controller, set[asyncio.Task[None]]] = weakref.WeakKeyDictionary()
"""Reconciles :func:`start_due` started without waiting for them, by controller (:func:`settle_controller` waits)."""


async def drain(controller: ctl.Controller) -> int:
    """Process every reference of ``controller`` due now, at most its ``workers`` at a time; how many."""
    refs = controller.queue.take()
    await ctl.bounded(refs, controller.process, controller.workers)
    return len(refs)


def start_due(controller: ctl.Controller) -> int:
    """Start processing every reference due now without waiting for them (a kind whose reconciles do git work that
    takes seconds: the merge queues), as its workers would; :func:`settle_controller` waits for them."""
    refs = controller.queue.take()
    tasks = _detached.setdefault(controller, set())
    for r in refs:
        task = asyncio.create_task(controller.process(r), name=f"reconcile {r[0]} {r[1]}/{r[2]}")
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    return len(refs)


async def settle_controller(controller: ctl.Controller) -> None:
    """Wait for the reconciles :func:`start_due` started."""
    tasks = _detached.get(controller, set())
    while tasks:
        await asyncio.gather(*list(tasks), return_exceptions=True)


async def drain_dispatcher(dispatcher: dsp.Dispatcher) -> int:
    """Dispatch now if the dispatcher's key is due; how many dispatches ran (0 or 1)."""
    if not dispatcher.queue.take():
        return 0
    await dispatcher.process()
    return 1


async def step(manager: mgr.Manager) -> None:
    """Drive every controller by hand, once: housekeeping, then each kind's due references in ``manager.ORDER``
    through the same ``process`` its workers run (the merge queues' started without waiting, as their own workers
    would: :func:`settle` waits for them), with a dispatch after the tasks and one at the end."""
    await manager.tick()
    await drain_dispatcher(manager.dispatcher)  # a slot an ended Pod freed is filled before anything else
    for kind in mgr.ORDER:
        c = manager.controllers[kind]
        if kind in mgr.DETACHED:
            start_due(c)
        else:
            await drain(c)
        if kind == "AgentTask":
            await drain_dispatcher(manager.dispatcher)
    await drain_dispatcher(manager.dispatcher)


async def settle(manager: mgr.Manager) -> None:
    """Wait for the reconciles :func:`step` started without waiting."""
    for kind in mgr.DETACHED:
        await settle_controller(manager.controllers[kind])
