"""The one effect executor: every write the shell makes to the Kubernetes API, as typed actions carried out in order.

(Git pushes of the merge queue and of best-of-N, and issue comments, are made by the reconcilers themselves, in
threads, since their answer decides what comes next; ``docs/controller.md`` says which and why each is safe to
repeat.)

Reconcilers turn a decider's effects into :data:`Action`\\s; :meth:`Executor.run` carries them out against the
Kubernetes API (``runtime.kube.KubeAPI``) from worker threads:

* creates are idempotent (AlreadyExists means an earlier, interrupted reconcile made it: fine), deletes too
  (NotFound is fine); consecutive creations of custom objects (a plan's tasks) run concurrently, and a new
  AgentTask needs no second write (its first status is the CRD's default, ``api.agenttask.initial_status``), so a
  10,000-task plan is taken in with 10,000 writes;
* a status write is fenced on the resourceVersion the decision was made on, and is always the last action of a
  reconcile: a :class:`~longshot.runtime.kube.Conflict` propagates, the reconcile fails, and the work queue
  retries it with backoff. The object is read anew (a GET) before the Conflict propagates, so the retry decides on
  the API server's version even when the watch has not brought it (a late or stalled watch would otherwise have
  every retry lose on the same stale version). Every side effect before it is idempotent, so a retry repeats nothing
  harmful;
* the answer of a write goes into the cache at once (``Cache.written``), so the next reconcile decides on it, and
  the references it concerns (but the written object's own) are enqueued;
* the counters a status write carries (``WriteStatus.counts``: tokens, cost, Pod failures, finalizations, sweeps)
  are counted after it succeeded, so a write that lost and was retried is counted once; the spans it ends
  (``WriteStatus.spans``: attempts, builds) are exported the same way;
* Events are rate-limited per object and reason (a burst, then one per ``EVENT_INTERVAL``), and an Event
  identical to the last one of its object is not repeated within that interval. Routine Events (``budget`` set:
  an attempt started or succeeded, a job merged) also spend their build's budget: ``ROUTINE_EVENT_BURST`` (one
  more per ``ROUTINE_BUILD_INTERVAL``); once it is spent, the builds share the operator's: one per
  ``ROUTINE_EVENT_INTERVAL`` for all of them. A small build's every step is in ``kubectl describe``; a thousand
  agents do not write an Event per step (Events would be a large share of the operator's writes), and neither do
  a hundred builds. What is dropped is counted (``longshot_events_dropped_total``); the status and
  conditions say the same.

Nothing here decides: the executor only does what it is told, and says what it could not do by raising.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Final, assert_never

from longshot import metrics, tracing
from longshot.api import keys
from longshot.controllers import cache as cachemod
from longshot.controllers import workqueue
from longshot.core import names
from longshot.runtime import kube, pods

log = logging.getLogger("longshot.executor")
CLAIM_SLACK_SECONDS: Final = 60
"""Added to a claimed warm Pod's deadline beyond its age plus the attempt's timeout (the Pod's start and the
operator's clock differ)."""

EVENT_BURST: Final = 5
CREATE_CONCURRENCY: Final = 48
"""Creations of one reconcile (a plan's tasks) in flight at once."""
EVENT_INTERVAL: Final = timedelta(seconds=30)
DELETE_COLLECTION_MAX: Final = 100
"""Objects (Pods, ledger entries) one collection delete names (the label selector's ``in`` list: at most ~6.4 KB of
query)."""
ROUTINE_EVENT_BURST: Final = 200
"""Routine Events (``RecordEvent.budget``) a build may write at once: a build of up to ~60 tasks has all of its."""
ROUTINE_BUILD_INTERVAL: Final = timedelta(seconds=60)
"""A build's budget of routine Events grows back by one per this long (up to ``ROUTINE_EVENT_BURST``)."""
ROUTINE_EVENT_INTERVAL: Final = timedelta(seconds=2)
"""Beyond their budgets, the builds together write one routine Event per this long: shared, so that four builds
write no more than one."""


@dataclass(frozen=True)
class WarmCandidate:
    """A warm sandbox an attempt may claim (``core.warmpool.claim_order``), as the cache saw it."""

    name: str
    resource_version: str
    age_seconds: int


@dataclass(frozen=True)
class CreatePod:
    """Create an attempt's Pod; with ``pooled`` (its build keeps a warm pool) claim the first of ``warm`` that no
    other replica claimed first (a hit) instead, else create it cold (a miss)."""

    manifest: Mapping[str, Any]
    warm: tuple[WarmCandidate, ...] = ()
    pooled: bool = False


@dataclass(frozen=True)
class DeletePod:
    namespace: str
    name: str
    grace_seconds: int | None = None


@dataclass(frozen=True)
class DeletePods:
    """Delete finished agent Pods of build ``build``: ``pods`` are (task, attempt, Pod name). Those of one attempt
    number go in one request (a collection delete by the labels every agent Pod carries: build, task, attempt),
    ``DELETE_COLLECTION_MAX`` at a time; a Pod alone with its attempt number, or without a task or attempt (0), is
    deleted by name (``collection_selectors``): a large fleet ends tens of Pods a second, and a request each would
    be as many writes."""

    namespace: str
    build: str
    pods: tuple[tuple[str, int, str], ...]
    grace_seconds: int | None = None


@dataclass(frozen=True)
class CreateObject:
    """Create a custom object (AlreadyExists is fine: an earlier, interrupted reconcile made it)."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class PatchObject:
    """Merge-patch a custom object's spec or metadata (NotFound is fine)."""

    kind: str
    namespace: str
    name: str
    body: Mapping[str, Any]


@dataclass(frozen=True)
class DeleteObject:
    """Delete a custom object, in the background (what it owns goes with it; NotFound is fine)."""

    kind: str
    namespace: str
    name: str


@dataclass(frozen=True)
class PutConfigMap:
    """Create a ConfigMap, or merge its data and annotations into the existing one (a ledger entry's result)."""

    manifest: Mapping[str, Any]


@dataclass(frozen=True)
class WriteStatus:
    """Merge-patch ``status`` fenced on ``resource_version``."""

    kind: str
    namespace: str
    name: str
    resource_version: str
    status: Mapping[str, Any]
    counts: tuple[metrics.Increment, ...] = ()
    """What this write records that a counter counts (tokens, a Pod failure, a finalization): counted once the
    write has succeeded, never when it lost and its reconcile is retried."""
    spans: tuple[tracing.SpanRecord, ...] = ()
    """Spans this write ends (an attempt, a build; ``longshot.tracing``): exported once the write has succeeded,
    like ``counts``."""
    then: tuple[Callable[[], None], ...] = ()
    """Done once the write has succeeded, in the same turn of the event loop as storing its answer in the cache
    (no reconcile runs in between): a planner's plan is handed to its build only together with its Succeeded."""


@dataclass(frozen=True)
class RecordEvent:
    obj: Mapping[str, Any]
    """A minimal object (apiVersion, kind, metadata name/namespace/uid/resourceVersion)."""
    type: str
    reason: str
    message: str
    budget: str | None = None
    """A routine Event's build (``namespace/name``): it also spends that build's budget of routine Events."""


@dataclass(frozen=True)
class Requeue:
    """Reconcile ``ref`` again at ``at`` (timers)."""

    ref: cachemod.Ref
    at: datetime


@dataclass(frozen=True)
class Call:
    """Run a blocking function in a worker thread (git work of the merge queue and similar)."""

    fn: Callable[[], object]
    what: str


Action = (CreatePod | DeletePod | DeletePods | CreateObject | PatchObject | WriteStatus | RecordEvent | Requeue | Call
          | PutConfigMap | DeleteObject)


def split_pod_creates(actions: Sequence[Action]) -> tuple[list[Action], list[Action]]:
    """(the leading Pod creations, the rest): an admission's Pod first, its status write and Event after.

    The dispatcher creates every chosen task's Pod before it writes any of their statuses, so a burst of
    admissions costs the time of the Pod creations, not three API round trips per Pod. What follows a Pod
    creation in a reconcile's actions still runs after it, in order; a failed creation leaves the rest undone
    (the task stays Pending and is dispatched again; a Pod that was made is adopted by the task's reconcile)."""
    i = 0
    while i < len(actions) and isinstance(actions[i], CreatePod):
        i += 1
    return list(actions[:i]), list(actions[i:])


@dataclass
class _EventBucket:
    tokens: float = EVENT_BURST
    updated: datetime | None = None
    last: tuple[str, str] | None = None
    last_time: datetime | None = None

    def refill(self, now: datetime, cap: float, interval: timedelta) -> None:
        """One token more per ``interval`` since the last call, up to ``cap``."""
        if self.updated is not None:
            self.tokens = min(cap, self.tokens + (now - self.updated) / interval)
        self.updated = now


@dataclass
class Executor:
    kube: kube.KubeAPI
    cache: cachemod.Cache
    queue: workqueue.Enqueuer
    clock: Callable[[], datetime]
    writes: int = 0
    events_dropped: int = 0
    _events: dict[tuple[str, str], _EventBucket] = field(default_factory=dict)
    _routine: dict[str, _EventBucket] = field(default_factory=dict)
    """The routine-Event budget of each build (``RecordEvent.budget``)."""
    _shared: _EventBucket = field(default_factory=lambda: _EventBucket(tokens=0.0))
    """The routine Events of builds whose own budget is spent: one per ``ROUTINE_EVENT_INTERVAL`` for all."""
    reads_anew: int = 0
    """Objects read anew after a write fenced on the version held lost (the cache was behind the API server)."""
    _created: dict[tuple[str, str], str] = field(default_factory=dict)
    """UIDs of the Pods this executor created, by (namespace, name), until a status write records them."""
    _found: set[tuple[str, str]] = field(default_factory=set)
    """Pods whose creation found the name taken, by (namespace, name), until the status write that admits them."""

    async def run(self, actions: Sequence[Action]) -> None:
        """Carry out ``actions`` in order, requeues last (even when one fails); raises on the first one that fails.

        Consecutive creations of custom objects (a plan's tasks) and ledger entries are independent and idempotent:
        they run concurrently, at most :data:`CREATE_CONCURRENCY` at a time, and the actions after them wait for all
        of them (the first failure is raised once every one of them has been tried); an ended worker's MergeJob and
        ledger entry are one round trip before its status write, not two. So do consecutive status writes of
        different objects (a merge queue's reconcile writes every MergeJob it moved: one after the other, 60 writes
        of a second each under load held its worker for a minute), each fenced on its own version, with the Events
        between them (a landed batch is an Event and a status write per member: interleaved, they ran one
        at a time).

        Requeues go to the work queue last, once everything else was carried out: controller-runtime's
        ``Result`` applies after the reconcile's writes too. They are queued when one failed as well: the writes
        that went through before it may have been the last change of what a requeue wakes (a queue's reconcile that
        moved three MergeJobs and lost one write is retried on the two that moved: it may not ask again for what
        their move asked for), and a reconcile woken for nothing reads and decides nothing. A requeue first could
        start the reconcile it asks for while this one's writes were still on the way, which then decided on what
        they replaced and had nothing to wake it again (the forge key of a candidate handed to its pull request
        waited a whole resync: 60 s)."""
        requeues = [a for a in actions if isinstance(a, Requeue)]
        try:
            await self._run([a for a in actions if not isinstance(a, Requeue)] if requeues else actions)
        finally:
            for a in requeues:
                self.queue.add_at(a.ref, a.at)

    async def _run(self, actions: Sequence[Action]) -> None:
        i = 0
        while i < len(actions):
            j = i
            while j < len(actions) and isinstance(actions[j], (CreateObject, PutConfigMap)):
                j += 1
            if j == i:
                objs: set[tuple[str, str, str]] = set()
                while j < len(actions):
                    a = actions[j]
                    if isinstance(a, WriteStatus):
                        if (a.kind, a.namespace, a.name) in objs:
                            break  # a second write of one object waits for the first
                        objs.add((a.kind, a.namespace, a.name))
                    elif not isinstance(a, RecordEvent):
                        break
                    j += 1
            if j - i > 1:
                await self._concurrently(actions[i:j])
                i = j
                continue
            await self._one(actions[i])
            i += 1

    async def _fenced(self, kind: str, namespace: str, name: str, write: Callable[..., dict[str, Any] | None],
                      *args: Any) -> dict[str, Any] | None:
        """``write(*args)``, a write fenced on the version the decision read. When it loses (a
        :class:`~longshot.runtime.kube.Conflict`), the object is read anew before the Conflict propagates: the
        version held was older than the API server's, and the retry decides on the newer one even when its watch
        event is late (or lost: a watch that stalls until its client timeout), not on the same stale version again
        and again, each try backing off longer."""
        try:
            return await asyncio.to_thread(write, *args)
        except kube.Conflict:
            await self._read_anew(kind, namespace, name)
            raise

    async def _read_anew(self, kind: str, namespace: str, name: str) -> None:
        held = self.cache.resource_version(kind, (namespace, name))
        try:
            body = await asyncio.to_thread(self.kube.get, kind, namespace, name)
        except Exception as e:  # the retry's backoff still applies; the watch may yet bring it
            log.info("could not read %s %s/%s anew after a write lost: %s", kind, namespace, name, e)
            return
        if body is None or str((body.get("metadata") or {}).get("resourceVersion", "")) == held:
            return  # gone (its watch event says so), or what is held is already the newest
        if self.cache.resource_version(kind, (namespace, name)) != held:
            return  # the watch brought another version while the GET was on its way: it may be newer than the GET's
        self.reads_anew += 1
        metrics.READS_ANEW.labels(kind).inc()
        log.info("%s %s/%s: a write fenced on resourceVersion %s lost; read anew at %s", kind, namespace, name, held,
                 (body.get("metadata") or {}).get("resourceVersion"))
        self._mark(self.cache.read_anew(kind, body, held))

    async def _concurrently(self, actions: Sequence[Action]) -> None:
        """``actions`` by :data:`CREATE_CONCURRENCY` workers taking the next one in turn (a 10,000-task plan holds
        that many coroutines, not 10,000); every one is tried, then the first failure is raised."""
        todo = iter(actions)
        failed: list[BaseException] = []
        builds = [(str(a.manifest.get("metadata", {}).get("namespace", "")), str(b)) for a in actions
                  if isinstance(a, CreateObject) and a.manifest.get("kind") == "AgentTask"
                  and (b := (a.manifest.get("metadata", {}).get("labels") or {}).get(keys.BUILD))]

        async def worker() -> None:
            for a in todo:
                try:
                    await self._one(a)
                except Exception as e:
                    failed.append(e)

        if builds:
            self.cache.ingest_begin(builds)  # dispatch waits for the whole plan (``Cache.ingesting``)
        try:
            await asyncio.gather(*(worker() for _ in range(min(CREATE_CONCURRENCY, len(actions)))))
        finally:
            if builds:
                self.cache.ingest_end(builds)
        if failed:
            raise failed[0]

    async def _one(self, a: Action) -> None:
        match a:
            case CreatePod():
                await self._create_pod(a)
            case DeletePod():
                await asyncio.to_thread(self.kube.delete_pod, a.namespace, a.name, a.grace_seconds)
            case DeletePods():
                await asyncio.to_thread(self._delete_pods, a)
            case CreateObject():
                created = await asyncio.to_thread(self.kube.create, a.manifest)
                if created is not None:
                    self._mark(self.cache.observe(str(created.get("kind")), "ADDED", created))
            case PatchObject():
                patched = await self._fenced(a.kind, a.namespace, a.name, self.kube.patch, a.kind, a.namespace,
                                             a.name, a.body)
                if patched is not None:
                    self._mark(self.cache.observe(a.kind, "MODIFIED", patched))
            case WriteStatus():
                status = self._with_pod_uids(a) if a.kind == "AgentTask" and self._created else a.status
                again = a.kind == "AgentTask" and bool(self._found) and self._admits_found(a)
                written = await self._fenced(a.kind, a.namespace, a.name, functools.partial(
                    self.kube.patch_status, resource_version=a.resource_version), a.kind, a.namespace, a.name, status)
                self.writes += 1
                if written is not None:
                    for c in a.counts:
                        c.count()
                    for sp in a.spans:  # tracing: spans that end with this write, sent once it succeeded
                        tracing.emit(sp)
                    for fn in a.then:
                        fn()
                    refs = self.cache.written(a.kind, written, a.resource_version)
                    own = (a.kind, a.namespace, a.name)
                    self._mark([*(r for r in refs if r != own), *((own,) if again else ())])
            case RecordEvent():
                if self._allow_event(a):
                    await asyncio.to_thread(self.kube.event, a.obj, a.type, a.reason, a.message)
            case Requeue():
                self.queue.add_at(a.ref, a.at)
            case Call():
                await asyncio.to_thread(a.fn)
            case PutConfigMap():
                await asyncio.to_thread(self.kube.put_configmap, a.manifest)
            case DeleteObject():
                await asyncio.to_thread(self.kube.delete, a.kind, a.namespace, a.name)
            case _:
                assert_never(a)  # a new kind of action must be carried out here (mypy --strict says where)

    def _claim(self, a: CreatePod) -> dict[str, Any] | None:
        """The first of the action's warm sandboxes this replica claims (``core.warmpool``: one fenced write each),
        or None: every one was claimed by another, changed, or is gone."""
        meta = a.manifest["metadata"]
        ns = str(meta.get("namespace"))
        timeout = int(a.manifest["spec"].get("activeDeadlineSeconds") or pods.DEFAULT_TIMEOUT_SECONDS)
        for c in a.warm:
            # the attempt gets its whole timeout from now: the Pod's deadline runs from its start
            body = pods.claim_patch(a.manifest, c.resource_version, c.age_seconds + timeout + CLAIM_SLACK_SECONDS)
            try:
                claimed = self.kube.claim_pod(ns, c.name, body)
            except kube.Conflict:
                log.info("warm Pod %s/%s was claimed or changed meanwhile; trying the next", ns, c.name)
                continue
            except Exception as e:
                if not kube.is_api_error(e):
                    raise
                log.warning("claiming warm Pod %s/%s for %s failed (%s); trying the next", ns, c.name, meta["name"],
                            kube.refusal(e))
                continue
            if claimed is not None:
                log.info("attempt Pod %s/%s: claimed warm Pod %s", ns, meta["name"], c.name)
                return claimed
        return None

    async def _create_pod(self, a: CreatePod) -> None:
        made = await asyncio.to_thread(self._claim, a) if a.warm else None
        if made is not None:
            metrics.WARM_CLAIMS.labels(result="hit").inc()
        else:
            made = await asyncio.to_thread(self.kube.create_pod, a.manifest)
            if a.pooled and made is not None:
                metrics.WARM_CLAIMS.labels(result="miss").inc()
        if made is None:
            ns, name = str(a.manifest["metadata"].get("namespace")), str(a.manifest["metadata"]["name"])
            log.info("pod %s/%s exists already: the task's next reconcile adopts it or refuses it", ns, name)
            # that Pod's watch events may all be behind us (it can have ended before the build existed), and the
            # admitting status write is our own echo: the task is reconciled once more after that write, so it
            # looks at the Pod it found instead of waiting for the resync
            self._found.add((ns, name))
            if len(self._found) > 10_000:
                self._found.pop()
        elif made.get("metadata"):
            meta = made["metadata"]
            if meta.get("uid"):
                # recorded on the attempt by the task's status write that follows (no extra write): the gateway
                # serves the Pod only once its UID is there
                self._created[cachemod.pod_key(meta)] = str(meta["uid"])
                if len(self._created) > 10_000:
                    self._created.pop(next(iter(self._created)))
            # the Pod is in the cache at once: the next dispatch counts its task as running even before the
            # task's status says so, and the task's reconcile does not ask the API for a Pod the watch lags on.
            # What it concerns is enqueued but its own task, whose reconcile (or admission) made it
            refs = self.cache.observe("Pod", "ADDED", made)
            pod = self.cache.pods.get(cachemod.pod_key(made["metadata"]))
            self._mark([r for r in refs if pod is None or r != ("AgentTask", pod.namespace, pod.task)])

    def _delete_pods(self, a: DeletePods) -> None:
        base = f"{keys.BUILD}={names.fit(a.build)},{keys.COMPONENT}=agent"
        alone, selectors = collection_selectors(base, a.pods)
        for name in alone:
            self.kube.delete_pod(a.namespace, name, a.grace_seconds)
        for selector in selectors:
            self.kube.delete_pods(a.namespace, selector, a.grace_seconds)

    def _with_pod_uids(self, a: WriteStatus) -> Mapping[str, Any]:
        """``a.status`` with ``podUID`` filled in on the attempts whose Pod this executor created."""
        attempts = a.status.get("attempts")
        if not isinstance(attempts, list):
            return a.status
        out = []
        for record in attempts:
            uid = self._created.get((a.namespace, str(record.get("pod"))))
            if uid is not None and not record.get("podUID"):
                record = {**record, "podUID": uid}
            out.append(record)
        return {**a.status, "attempts": out}

    def _admits_found(self, a: WriteStatus) -> bool:
        """Whether ``a`` records an attempt whose Pod's creation found the name taken (forgotten once seen)."""
        attempts = a.status.get("attempts")
        hit = False
        for record in attempts if isinstance(attempts, list) else ():
            key = (a.namespace, str(record.get("pod")))
            if key in self._found:
                self._found.discard(key)
                hit = True
        return hit

    def _mark(self, refs: Iterable[cachemod.Ref]) -> None:
        self.queue.add_all(refs)

    def _allow_event(self, a: RecordEvent) -> bool:
        meta = a.obj.get("metadata") or {}
        key = (str(meta.get("uid") or f"{meta.get('namespace')}/{meta.get('name')}"), a.reason)
        now = self.clock()
        b = self._events.setdefault(key, _EventBucket(updated=now))
        b.refill(now, EVENT_BURST, EVENT_INTERVAL)
        same = b.last == (a.type, a.message) and b.last_time is not None and now - b.last_time < EVENT_INTERVAL
        routine = None
        if a.budget is not None:
            routine = self._routine.setdefault(a.budget, _EventBucket(tokens=ROUTINE_EVENT_BURST, updated=now))
            routine.refill(now, ROUTINE_EVENT_BURST, ROUTINE_BUILD_INTERVAL)
            self._shared.refill(now, 1.0, ROUTINE_EVENT_INTERVAL)
            if routine.tokens < 1 and self._shared.tokens >= 1:  # its own budget spent: the operator's, shared
                routine = self._shared
        if same or b.tokens < 1 or (routine is not None and routine.tokens < 1):
            self.events_dropped += 1
            metrics.EVENTS_DROPPED.labels(reason="routine" if routine is not None and routine.tokens < 1
                                          else "rate").inc()
            return False
        if routine is not None:
            routine.tokens -= 1
            if len(self._routine) > 10_000:
                for old in list(self._routine)[:1_000]:
                    del self._routine[old]
        b.tokens -= 1
        b.last, b.last_time = (a.type, a.message), now
        if len(self._events) > 50_000:  # forget the oldest buckets; bounded memory
            for k in list(self._events)[:10_000]:
                del self._events[k]
        return True


def collection_selectors(base: str, items: Iterable[tuple[str, int, str]]) -> tuple[list[str], list[str]]:
    """How to delete objects named by (task, attempt, name) that carry the task and attempt labels (agent Pods,
    ledger entries) in few requests: (the names to delete one by one, the label selectors of collection deletes).
    Those of one attempt number go in one selector (``base`` and ``attempt=N`` and ``task in (...)``), at most
    :data:`DELETE_COLLECTION_MAX` tasks each, which matches exactly them (one object per task and attempt); an
    attempt number with one object is deleted by name, and so is an item without a task or attempt."""
    by_attempt: dict[int, list[tuple[str, str]]] = {}
    alone: list[str] = []
    for task, attempt, name in items:
        if task and attempt > 0:
            by_attempt.setdefault(attempt, []).append((task, name))
        else:
            alone.append(name)
    selectors: list[str] = []
    for attempt, group in sorted(by_attempt.items()):
        if len(group) == 1:
            alone.append(group[0][1])
            continue
        for i in range(0, len(group), DELETE_COLLECTION_MAX):
            tasks = sorted({names.fit(t) for t, _ in group[i:i + DELETE_COLLECTION_MAX]})
            selectors.append(f"{base},{keys.ATTEMPT}={attempt},{keys.TASK} in ({','.join(tasks)})")
    return alone, selectors


def stamp_generation(conditions: Iterable[Mapping[str, Any]], generation: int) -> list[dict[str, Any]]:
    """Every condition with ``observedGeneration`` = ``generation``: all of them were computed for it (kubectl
    wait and kstatus compare each condition's generation with the object's)."""
    return [{**dict(c), "observedGeneration": generation} for c in conditions]
