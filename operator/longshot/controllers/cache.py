"""The shell's read-only cache of observed objects, parsed once into typed models, with the indexes the
reconcilers need.

kopf's watch events (``controllers/handlers.py``), the answers of the shell's own writes (``controllers/executor.py``)
and objects the shell reads from the API when the watch lags (a task's Pod: ``Context.observe``) are the only
inputs: :meth:`Cache.observe` parses the body at the edge (``api.objects``), stores it, and returns the work-queue
references that the change concerns (the object itself, its build, its repository's merge queue, the tasks that
depend on it). Whoever observes enqueues those references (but a writer's own object, which its reconcile decided
on): the watch event that follows with the same resourceVersion is ignored as an echo, so a reference dropped here
would wait for the resync. Nothing else writes here.

Memory: a typed model costs far more than its JSON (a pydantic instance per nested part, each with its own
``__dict__`` and set of the fields given: about 15 KiB per AgentTask). :class:`Compactor` holds what is equal
across objects once: the sets of fields given (a few dozen distinct ones), leaf parts that are equal (the same
conditions of 10,000 pending tasks, their owner reference, build reference, dependency policy) and short strings of
labels and annotations. Each kept part is rebuilt attribute by attribute (:meth:`Compactor._rebuild`), so that its
attributes live in CPython's key-sharing instance layout (the field names held once per class) instead of a dict of
its own made by pydantic; equal label and annotation maps are one read-only map (:class:`FrozenDict`), a list of
shared parts (the conditions of pending tasks) is one read-only list (:class:`FrozenList`), every empty list is
:data:`EMPTY`, and the strings of fields that repeat (namespace, phase, a condition's reason) and equal timestamps
are held once (the memory per AgentTask this buys: ``make bench-cache``, docs/benchmarks.md).
Cached models are read-only (they always were: the shell writes through the API and stores the answer); the shared
sets of fields, maps and lists are frozen, so a change to a cached model fails loudly instead of changing other
objects.

``resourceVersion`` is opaque and only compared for equality. After the shell writes an object it stores the
API server's answer (:meth:`Cache.written`) and remembers the version that answer replaced; a watch event that
arrives later with that older version is ignored, so a reconcile never decides on a version older than one it
wrote. (A watch always delivers versions in order, so the watch catches up by itself.)
"""

from __future__ import annotations

import logging
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Final, Literal, TypeVar

import pydantic

from longshot.api import keys, objects, timeutil
from longshot.core import admission, failures, fanout, names, standing, tasks
from longshot.vcs import workspace as vws

log = logging.getLogger("longshot.cache")

Key = tuple[str, str]
"""(namespace, name)."""
Kind = Literal["BuildRequest", "AgentTask", "MergeJob", "Pod", "Queue", "BuildSchedule"]
Ref = tuple[str, str, str]
"""(kind, namespace, name) of a work-queue item; a Queue's name is ``<repository key>|<target branch>``."""

PURPOSE_LABEL: Final = keys.PURPOSE
"""On delivery tasks: ``gate`` (a batch's quality gate), ``review``, ``sweep`` or ``final``."""
BATCH_LABEL: Final = keys.BATCH
POSITION_ANNOTATION: Final = keys.POSITION
FIXES_ANNOTATION: Final = keys.FIXES
"""On a fixer task: the MergeJob (or sweep task) it fixes."""
FIX_DEPTH_LABEL: Final = keys.FIX_DEPTH
QUEUE_ANNOTATION: Final = keys.QUEUE
"""On gate and review tasks: the merge queue (``<repository key>|<target>``) they report to."""
SUPERSEDED_MEMORY: Final = 8
TOMBSTONES: Final = 4096
"""How many deleted objects (their uids) the cache remembers, so that a late answer to one of our own writes, or a
patch's answer that shows the object already gone, cannot bring a deleted object back."""
CUSTOM_KINDS: Final = frozenset({"BuildRequest", "AgentTask", "MergeJob", "BuildSchedule"})
M = TypeVar("M", bound=pydantic.BaseModel)
V = TypeVar("V")


@dataclass(frozen=True, slots=True)
class PodView:
    """What the operator keeps of an agent Pod."""

    namespace: str
    name: str
    task: str | None
    uid: str
    resource_version: str
    created: datetime | None
    deleting: bool
    status: Mapping[str, Any]
    """A minimal ``status``: phase, reason, message, startTime and the agent container's state."""
    owner_uid: str = ""
    """UID of the AgentTask that is the Pod's controller (owner reference with ``controller: true``), or ""."""
    node: str = ""
    """``spec.nodeName``: the node it is bound to ("" until the kube-scheduler binds it)."""
    requests: admission.Resources = admission.NOTHING
    """What its containers request (cpu, memory): the room it holds (``core.admission``)."""
    unschedulable_since: datetime | None = None
    """When the kube-scheduler last found no node for it (condition ``PodScheduled=False/Unschedulable``), while it
    is not bound; None otherwise."""
    build: str = ""
    """Its ``longshot.dev/build`` label."""
    warm_template: str = ""
    """A warm sandbox's template hash (label ``longshot.dev/warm-template``; ``core.warmpool``), else ""."""
    claimed_as: str = ""
    """A claimed warm sandbox: the name its attempt's Pod would have had cold (label ``longshot.dev/warm-claim``).
    The cache keeps it under that name, so the task finds its attempt's Pod where it looks for a cold one; ``name``
    stays the Pod's own (deletes, reads)."""
    deadline: int | None = None
    """A warm sandbox's ``spec.activeDeadlineSeconds`` (a claim may only lower it); None for any other Pod."""

    @property
    def key(self) -> Key:
        return self.namespace, self.claimed_as or self.name

    @property
    def warm(self) -> bool:
        """An unclaimed warm sandbox (no AgentTask controls it yet)."""
        return bool(self.warm_template) and not self.owner_uid

    @property
    def phase(self) -> str:
        return str(self.status.get("phase") or "Pending")

    @property
    def ended(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    def termination_message(self) -> str | None:
        cs = failures.agent_container_status(self.status)
        if cs is None:
            return None
        term = (cs.get("state") or {}).get("terminated") or (cs.get("lastState") or {}).get("terminated")
        return None if term is None else term.get("message")

    @classmethod
    def from_body(cls, body: Mapping[str, Any]) -> PodView:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        owner = next((r.get("name") for r in meta.get("ownerReferences") or [] if r.get("kind") == "AgentTask"),
                     None)
        keep: dict[str, Any] = {k: status[k] for k in ("phase", "reason", "message", "startTime") if k in status}
        for group in ("initContainerStatuses", "containerStatuses"):
            items = [{k: cs[k] for k in ("name", "state", "lastState") if k in cs}
                     for cs in status.get(group) or []]
            if items:
                keep[group] = items
        controller = next((str(r.get("uid") or "") for r in meta.get("ownerReferences") or []
                           if r.get("kind") == "AgentTask" and r.get("controller")), "")
        spec = body.get("spec") or {}
        node = str(spec.get("nodeName") or "")
        unschedulable = None
        if not node:
            for c in status.get("conditions") or []:
                if isinstance(c, Mapping) and c.get("type") == "PodScheduled" and c.get("status") == "False" \
                        and c.get("reason") == "Unschedulable":
                    unschedulable = timeutil.parse(c.get("lastTransitionTime")) or timeutil.parse(
                        meta.get("creationTimestamp"))
        labels = meta.get("labels") or {}
        warm = str(labels.get(keys.WARM_TEMPLATE) or "")
        # only a claimed warm Pod (an AgentTask controls it) is aliased: a label alone, which anyone who may create
        # Pods writes, never puts a Pod under an attempt's name (adoption still checks the controller's UID)
        claimed_as = str(labels.get(keys.WARM_CLAIM) or "") if warm and controller else ""
        return cls(namespace=meta.get("namespace", ""), name=meta["name"], task=owner, uid=meta.get("uid", ""),
                   resource_version=str(meta.get("resourceVersion", "")),
                   created=timeutil.parse(meta.get("creationTimestamp")),
                   deleting=meta.get("deletionTimestamp") is not None, status=keep, owner_uid=controller,
                   node=node, requests=admission.pod_requests(spec), unschedulable_since=unschedulable,
                   build=str(labels.get(keys.BUILD) or ""), warm_template=warm, claimed_as=claimed_as,
                   deadline=_deadline(spec) if warm and not controller else None)


def _deadline(spec: Mapping[str, Any]) -> int | None:
    value = spec.get("activeDeadlineSeconds")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


class _Shared:
    """What the shared read-only containers of cached objects have in common: every change raises, and a copy
    (shallow or deep) is the container itself."""

    __slots__ = ()
    WHAT: ClassVar[str] = "container"

    def _read_only(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(f"a cached object's {self.WHAT} is shared and read-only; copy it to change it")

    def __copy__(self) -> Any:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> Any:
        return self


class FrozenDict(_Shared, dict[str, str]):
    """A read-only map of strings, shared by every cached object whose map is equal to it."""

    __slots__ = ()
    WHAT = "map"
    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = __ior__ = _Shared._read_only

    def __hash__(self) -> int:  # type: ignore[override]  # read-only: hashable like a frozenset of its items
        return hash(frozenset(self.items()))

    def __reduce__(self) -> tuple[Any, ...]:
        return FrozenDict, (dict(self),)


class FrozenList(_Shared, list[Any]):
    """A read-only list (the one shared empty list of cached objects, lists of shared parts)."""

    __slots__ = ()
    WHAT = "list"
    __setitem__ = __delitem__ = append = extend = insert = pop = remove = clear = sort = reverse = _Shared._read_only
    __iadd__ = __imul__ = _Shared._read_only

    def __reduce__(self) -> tuple[Any, ...]:
        return FrozenList, (list(self),)


EMPTY: Final = FrozenList()
"""Every empty list of a cached object."""


class Compactor:
    """Makes parsed models share what is equal (see the module's docstring); :meth:`model` compacts one in place
    and returns it (or an equal instance already held, for a leaf part)."""

    RECENT: Final = 4096
    """Distinct leaf parts remembered (least recently seen forgotten first): a plan's tasks arrive together."""
    STRINGS: Final = 20_000
    SHORT: Final = 64

    SHARED_FIELDS: Final = frozenset({"namespace", "api_version", "kind", "phase", "role", "parent_task", "type",
                                      "status", "reason", "message", "exit_reason", "failure_class"})
    """Fields whose strings repeat across objects (a namespace, a phase, a condition's reason): held once."""

    def __init__(self) -> None:
        self._sets: dict[frozenset[str], frozenset[str]] = {}
        self._leaves: OrderedDict[tuple[Any, ...], pydantic.BaseModel] = OrderedDict()
        self._held: set[int] = set()
        """``id`` of each leaf part in ``_leaves`` (alive: ``_leaves`` holds it)."""
        self._lists: OrderedDict[tuple[int, ...], FrozenList] = OrderedDict()
        self._maps: OrderedDict[FrozenDict, FrozenDict] = OrderedDict()
        self._strings: dict[Any, Any] = {}

    def model(self, m: M) -> M:
        values = {k: self._string(v) if k in self.SHARED_FIELDS and isinstance(v, str)
                  else self._atom(v) if isinstance(v, datetime) else self._value(v)
                  for k, v in m.__dict__.items()}
        leaf = not any(isinstance(v, pydantic.BaseModel | list | dict | tuple | set) for v in values.values())
        fields = frozenset(m.__pydantic_fields_set__)
        fields = self._sets.setdefault(fields, fields)
        if not leaf or m.__pydantic_extra__ or m.__pydantic_private__:
            return self._rebuild(m, values, fields)
        key = (type(m), *values.values())
        try:
            held = self._leaves.get(key)
        except TypeError:  # an unhashable value: not shared
            return self._rebuild(m, values, fields)
        if held is not None:
            self._leaves.move_to_end(key)
            return held  # type: ignore[return-value]  # same type: it is part of the key
        m = self._rebuild(m, values, fields)
        self._leaves[key] = m
        self._held.add(id(m))
        if len(self._leaves) > self.RECENT:
            self._held.discard(id(self._leaves.popitem(last=False)[1]))
        return m

    @staticmethod
    def _rebuild(m: M, values: dict[str, Any], fields: frozenset[str]) -> M:
        """An equal model whose attributes are set one by one on a bare instance: CPython then keeps them in the
        class's key-sharing layout (about half the memory of the dict pydantic makes for each instance)."""
        if m.__pydantic_extra__ or m.__pydantic_private__:  # not made by the models of this package: keep it
            m.__dict__.update(values)
            object.__setattr__(m, "__pydantic_fields_set__", fields)
            return m
        cls = type(m)
        new = cls.__new__(cls)
        for k, v in values.items():
            object.__setattr__(new, k, v)
        object.__setattr__(new, "__pydantic_fields_set__", fields)
        object.__setattr__(new, "__pydantic_extra__", None)
        object.__setattr__(new, "__pydantic_private__", None)
        return new

    def _value(self, v: Any) -> Any:
        if isinstance(v, pydantic.BaseModel):
            return self.model(v)
        if isinstance(v, list):
            return self._list([self._value(x) for x in v]) if v else EMPTY
        if isinstance(v, dict):
            if all(isinstance(x, str) for x in v.values()):
                return self._map(v)
            return {self._string(k): self._string(x) if isinstance(x, str) else self._value(x) for k, x in v.items()}
        return v

    def _list(self, items: list[Any]) -> list[Any]:
        """One read-only list for all lists of the same shared parts (the conditions of pending tasks, their owner
        reference); any other list as it is."""
        if not all(id(x) in self._held for x in items):
            return items
        key = tuple(id(x) for x in items)  # alive while the list below holds them: no id is reused meanwhile
        return self._recent(self._lists, key, lambda: FrozenList(items))

    def _map(self, d: dict[str, str]) -> FrozenDict:
        """One read-only map for all equal maps of strings (labels, annotations) seen recently."""
        fd = FrozenDict({self._string(k): self._string(x) for k, x in d.items()})
        return self._recent(self._maps, fd, lambda: fd)

    def _recent(self, table: OrderedDict[Any, V], key: Any, make: Callable[[], V]) -> V:
        """The value ``table`` holds for ``key``, else ``make()``'s, remembered; the ``RECENT`` last used are kept."""
        held = table.get(key)
        if held is not None:
            table.move_to_end(key)
            return held
        value = table[key] = make()
        if len(table) > self.RECENT:
            table.popitem(last=False)
        return value

    def _string(self, s: str) -> str:
        return s if len(s) > self.SHORT else self._intern(s, s)

    def _atom(self, d: datetime) -> datetime:
        """Equal timestamps (a plan's tasks are created in the same second) held once."""
        return self._intern((d, d.utcoffset()), d)

    def _intern(self, key: Any, value: V) -> V:
        """The value held for ``key`` (equal strings, timestamps), else ``value``; at most ``STRINGS`` of them."""
        if len(self._strings) > self.STRINGS:
            self._strings.clear()
        return self._strings.setdefault(key, value)  # type: ignore[no-any-return]  # held under its own key


def shard_key(build: objects.BuildRequest) -> str:
    """The shard (and merge-queue prefix) of a build: its tenant's use of its repository
    (``workspace.tenant_key``: namespace, credentials Secret, URL)."""
    repo = build.spec.repository
    return vws.tenant_key(build.namespace, repo.credentials_secret, repo.url)


def schedule_shard(schedule: objects.BuildSchedule) -> str:
    """The shard of a BuildSchedule: its children's (the repository of its template), so the replica that acts on
    them makes them."""
    repo = schedule.spec.build_template.spec.repository
    return vws.tenant_key(schedule.namespace, repo.credentials_secret, repo.url)


def queue_name(build: objects.BuildRequest, target: str) -> str:
    """The work-queue name of the merge queue of ``target`` for the build's tenant and repository:
    ``<shard_key(build)>|<target>``. Two namespaces (or two credentials Secrets) on one repository and target
    have two queues, each fetching and pushing with its own credential."""
    return f"{shard_key(build)}|{target}"


def _affected_by_spec(task: objects.AgentTask | None) -> bool:
    """Whether an edit of its build's spec may change what a task's reconcile decides: any task but a pending or
    finished one (a pending task's start is decided by dispatch, which reads the build)."""
    return task is not None and task.status.phase not in (None, "", tasks.PENDING, tasks.SUCCEEDED, tasks.CANCELLED)


def _dispatch_facts(build: objects.BuildRequest) -> tuple[object, ...]:
    """What a dispatch plan reads of a build besides its tasks (``controllers.dispatch._build_view``): its spec, its
    deletion, whether the operator has decided on its spec, and whether the spec failed its configuration check."""
    stalled = next((c.reason for c in build.status.conditions if c.type == "Stalled" and c.status == "True"), None)
    return (build.generation, build.metadata.deleting, build.status.observed_generation, stalled)


@dataclass
class Cache:
    builds: dict[Key, objects.BuildRequest] = field(default_factory=dict)
    tasks: dict[Key, objects.AgentTask] = field(default_factory=dict)
    jobs: dict[Key, objects.MergeJob] = field(default_factory=dict)
    pods: dict[Key, PodView] = field(default_factory=dict)
    schedules: dict[Key, objects.BuildSchedule] = field(default_factory=dict)
    tasks_by_build: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    live_by_build: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    """build -> its tasks that are pending or running (no phase yet counts as pending): what a dispatch plan walks.
    Without it a plan walks every task of the build, the thousands that have ended too, on every replica."""
    task_phases: Counter[str] = field(default_factory=Counter)
    """How many tasks the cache holds in each phase (no phase yet: ``Pending``): the tasks-by-state gauge."""
    jobs_by_build: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    pods_by_task: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    tasks_by_batch: dict[tuple[str, str, str], set[str]] = field(default_factory=lambda: defaultdict(set))
    """(namespace, build, batch id) -> the gate tasks of that batch (label ``longshot.dev/batch``): a queue reconcile
    reads its batches' verdicts without walking the build's 10,000 tasks once per job under test."""
    fixers_by_build: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    """build -> its fixer tasks (a MergeJob's reconcile reads how many fixers its build may still make)."""
    dependents: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    """(namespace, task) -> tasks whose dependsOn names it."""
    _superseded: dict[tuple[str, Key], tuple[str, ...]] = field(default_factory=dict)
    """Versions our writes replaced, the last ``SUPERSEDED_MEMORY`` (a tuple: 10,000 deques cost 6 MiB)."""
    changes: dict[Key, int] = field(default_factory=lambda: defaultdict(int))
    """build -> a counter bumped whenever the build, one of its tasks or one of its MergeJobs is stored or
    forgotten (whether from a watch event or from the shell's own write): derived views of the build are stale
    when it moved."""
    changed_tasks: dict[Key, set[str]] = field(default_factory=lambda: defaultdict(set))
    """build -> the tasks whose object, or whose MergeJob's, was stored or forgotten since the build's derived views
    last read them (``Context.views`` takes the set): the views are brought up to date task by task, not made
    again from the build's 10,000 tasks on every change."""
    version: int = 0
    """Bumped by every change a dispatch plan reads (an object or Pod stored or forgotten; not the gateway's
    heartbeats that change no metering): a plan of the same version would choose the same tasks."""
    freeing: int = 0
    """Bumped by every change that may let a dispatch start something where the last plan could not (a worker slot
    or an operator-wide slot came free, a build's spec or status changed, a running task stopped, a task's spec
    changed, a Pod ended or went): a plan that found every build full is not made again until it moves
    (``controllers.dispatcher``). A new task, or a status write of a running one, does not move it."""
    ingesting: Counter[Key] = field(default_factory=Counter)
    """Builds whose plan's tasks are being created (``Executor``, a batch of creates): dispatch starts none of their
    pending tasks until the whole batch is in, so that priorities order the whole plan, not the first tasks created
    (``ingest_begin``/``ingest_end``; a replica that dies mid-batch forgets it with everything else)."""
    parse_errors: int = 0
    on_delivery_task: Callable[[], None] | None = None
    """Called when a new delivery task (gate, review, sweep, final: ``purpose``) is stored with its first status, which
    makes it a candidate for dispatch (its create and that write are two answers): the manager has dispatch plan at
    once for it (``Dispatcher.hurry``)."""
    compactor: Compactor = field(default_factory=Compactor)
    _tombstones: OrderedDict[str, None] = field(default_factory=OrderedDict)
    """uids of custom objects deleted (a watch's DELETED, or an answer showing deletionTimestamp and no finalizers),
    the last :data:`TOMBSTONES`. An answer to our own write can arrive after the watch said the object was deleted
    (the cleanup finalizer's removal: the API server deletes the build, its watch event is handled, then the patch's
    answer comes back): stored, it was a ghost build that kept its shard in this replica's view for ever, so that two
    replicas computed different shard assignments and neither campaigned for a new repository's shard."""

    def ingest_begin(self, builds: Iterable[Key]) -> None:
        self.ingesting.update(builds)

    def ingest_end(self, builds: Iterable[Key]) -> None:
        """The batch is in: its builds' tasks may start, so the next plan is made even where the last one read the
        same version or found every slot full."""
        self.ingesting.subtract(builds)
        self.ingesting = +self.ingesting  # drops the builds at zero
        self.version += 1
        self.freeing += 1

    # --- observing ---------------------------------------------------------------------------------

    def observe(self, kind: str, event_type: str | None, body: Mapping[str, Any]) -> list[Ref]:
        """Store what a watch event says; return the references to reconcile."""
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        if kind == "Pod":
            key = pod_key(meta)
        uid = str(meta.get("uid") or "")
        if kind in CUSTOM_KINDS:
            if uid and uid in self._tombstones:
                return []  # an answer to our write, late: the object was deleted since
            if event_type == "DELETED" or (meta.get("deletionTimestamp") and not meta.get("finalizers")):
                # a custom object marked for deletion with no finalizer left is gone: the API server deleted it
                # when the last finalizer went (that patch's answer says so before the watch does)
                self._bury(uid)
                return self._forget(kind, key)
        elif event_type == "DELETED":
            return self._forget(kind, key)
        rv = str(meta.get("resourceVersion", ""))
        old = self._superseded.get((kind, key))
        if old is not None and rv in old:
            return []  # a version older than one we wrote
        if rv and self.resource_version(kind, key) == rv:
            return []  # the version we hold already (our own write's answer, then its watch event): nothing new
        if kind == "Pod":
            return self._store_pod(PodView.from_body(body))
        try:
            obj = self.compactor.model(objects.parse(dict(body), objects.MODELS[kind]))
        except pydantic.ValidationError as e:
            self.parse_errors += 1
            log.error("cannot read %s %s/%s: %s", kind, key[0], key[1], e.errors()[:1])
            return []
        return self._store(obj)

    def resource_version(self, kind: str, key: Key) -> str | None:
        """The resourceVersion of the object held (None: none is held)."""
        if kind == "Pod":
            pod = self.pods.get(key)
            return pod.resource_version if pod is not None else None
        obj: objects.Resource | None = (self.builds.get(key) if kind == "BuildRequest" else self.tasks.get(key)
                                        if kind == "AgentTask" else self.jobs.get(key) if kind == "MergeJob"
                                        else self.schedules.get(key) if kind == "BuildSchedule" else None)
        return obj.metadata.resource_version if obj is not None else None

    def written(self, kind: str, body: Mapping[str, Any], based_on: str) -> list[Ref]:
        """Our own write returned ``body``; ``based_on`` is the version it replaced."""
        return self._newer(kind, body, based_on)

    def read_anew(self, kind: str, body: Mapping[str, Any], held: str | None) -> list[Ref]:
        """A GET returned ``body``, asked for while this cache held version ``held`` (a write fenced on it lost: it
        is older than the API server's, its watch event late). ``held`` is stored as superseded, so that its event
        arriving late does not bring it back. When the cache holds another version by now (the watch brought one
        while the GET was on its way, maybe newer than the GET's), the GET's answer is dropped."""
        meta = body.get("metadata") or {}
        if self.resource_version(kind, (meta.get("namespace", ""), meta.get("name", ""))) != held:
            return []
        return self._newer(kind, body, held or "")

    def _newer(self, kind: str, body: Mapping[str, Any], replaced: str) -> list[Ref]:
        meta = body.get("metadata") or {}
        key: Key = (meta.get("namespace", ""), meta.get("name", ""))
        if replaced and replaced != str(meta.get("resourceVersion", "")):
            memory = self._superseded.get((kind, key), ())
            self._superseded[(kind, key)] = (*memory[1 - SUPERSEDED_MEMORY:], replaced)
        return self.observe(kind, "MODIFIED", body)

    def _bury(self, uid: str) -> None:
        if not uid:
            return
        self._tombstones[uid] = None
        self._tombstones.move_to_end(uid)
        while len(self._tombstones) > TOMBSTONES:
            self._tombstones.popitem(last=False)

    def _forget(self, kind: str, key: Key) -> list[Ref]:
        self._superseded.pop((kind, key), None)
        self.version += 1
        self.freeing += 1
        if kind == "BuildRequest":
            gone = self.builds.pop(key, None)
            self.changes[key] += 1
            return [("BuildRequest", *key), *(schedule_refs(gone) + intake_refs(gone) if gone is not None else ())]
        if kind == "BuildSchedule":
            self.schedules.pop(key, None)
            return [("BuildSchedule", *key)]
        if kind == "AgentTask":
            task = self.tasks.pop(key, None)
            if task is None:
                return []
            self._task_changed((key[0], task.build_name), key[1])
            self.tasks_by_build[(key[0], task.build_name)].discard(key[1])
            self._index_phase(key[1], task, None)
            self.fixers_by_build[(key[0], task.build_name)].discard(key[1])
            batch = task.metadata.labels.get(BATCH_LABEL)
            if batch:
                gates = self.tasks_by_batch.get((key[0], task.build_name, batch))
                if gates is not None:
                    gates.discard(key[1])
                    if not gates:
                        del self.tasks_by_batch[(key[0], task.build_name, batch)]
            for dep in task.spec.depends_on:
                self.dependents[(key[0], dep)].discard(key[1])
            queue = task.metadata.annotations.get(QUEUE_ANNOTATION)  # a gate or review task gone: its queue acts
            return [("BuildRequest", key[0], task.build_name), *([("Queue", "", queue)] if queue else [])]
        if kind == "MergeJob":
            job = self.jobs.pop(key, None)
            if job is None:
                return []
            self._job_changed(job)
            self.jobs_by_build[(key[0], job.build_name)].discard(key[1])
            return [("BuildRequest", key[0], job.build_name), *self._queue_refs(job)]
        if kind == "Pod":
            pod = self.pods.pop(key, None)
            if pod is None or pod.task is None:
                return []
            self.pods_by_task[(key[0], pod.task)].discard(key[1])
            return [("AgentTask", key[0], pod.task)]
        return []

    def _store_pod(self, pod: PodView) -> list[Ref]:
        self.version += 1
        if pod.key[1] != pod.name:
            self.pods.pop((pod.namespace, pod.name), None)  # a warm Pod claimed: now kept under its attempt's name
        old = self.pods.get(pod.key)
        if old is None or pod.ended != old.ended or pod.deleting != old.deleting:
            self.freeing += 1
        self.pods[pod.key] = pod
        if pod.task is None:
            return []
        self.pods_by_task[(pod.namespace, pod.task)].add(pod.key[1])
        return [("AgentTask", pod.namespace, pod.task)]

    def _store(self, obj: objects.Resource) -> list[Ref]:
        if isinstance(obj, objects.BuildRequest):
            return [*self._store_build(obj), *schedule_refs(obj), *intake_refs(obj)]
        if isinstance(obj, objects.BuildSchedule):
            self.schedules[obj.key] = obj
            return [("BuildSchedule", *obj.key)]
        if isinstance(obj, objects.AgentTask):
            return self._store_task(obj)
        assert isinstance(obj, objects.MergeJob)
        return self._store_job(obj)

    def _store_build(self, obj: objects.BuildRequest) -> list[Ref]:
        ns, name = obj.key
        self.version += 1
        self.changes[obj.key] += 1
        old_build = self.builds.get(obj.key)
        if old_build is None or _dispatch_facts(old_build) != _dispatch_facts(obj):
            self.freeing += 1
        self.builds[obj.key] = obj
        if old_build is not None and status_only(old_build, obj) and not _has_build_owner(obj) \
                and _dispatch_facts(old_build) == _dispatch_facts(obj):
            # the build reconciler is its status's one writer (the decision that wrote it asked for whatever
            # comes next: a requeue, a timer, a child's change), so its own write wakes nothing; a standing
            # intake's child still wakes its parent (manager.observe), and dispatch hears of what it reads
            return []
        if old_build is not None and old_build.generation != obj.generation:
            # a spec edit may resume stopped tasks (Configuration, Auth, a budget) or change what running ones
            # do; a pending task's start is dispatch's to decide, which reads the build anew (and the resync
            # reconciles every task): raising workers.max of a 10,000-task build is not 10,000 reconciles
            return [("BuildRequest", ns, name),
                    *(("AgentTask", ns, t) for t in self.tasks_by_build.get(obj.key, ())
                      if _affected_by_spec(self.tasks.get((ns, t))))]
        return [("BuildRequest", ns, name)]

    def _store_task(self, obj: objects.AgentTask) -> list[Ref]:
        ns, name = obj.key
        old = self.tasks.get(obj.key)
        if old is not None and progress_only(old, obj):
            # the gateway's live figures of a running attempt: a heartbeat or a progress message changes no
            # decision (the heartbeat bound's timer reads the newest one when it fires); tokens and cost
            # change the build's usage and budget
            self.tasks[obj.key] = obj
            if _metered(old) == _metered(obj):
                return []
            self.version += 1
            self._task_changed((ns, obj.build_name), name)
            if _ended_attempt_metered(obj):
                # a call charged after its attempt was recorded: the task raises the attempt's figures
                return [("BuildRequest", ns, obj.build_name), ("AgentTask", ns, name)]
            return [("BuildRequest", ns, obj.build_name)]
        self.version += 1
        if old is not None and ((old.status.phase == tasks.RUNNING and obj.status.phase != tasks.RUNNING)
                                or old.generation != obj.generation
                                or old.metadata.deleting != obj.metadata.deleting):
            self.freeing += 1  # a slot may be free (a running task stopped), or the task's spec changed
        self._index_task(old, obj)
        first = obj.status.conditions and (old is None or not old.status.conditions)
        if first and self.on_delivery_task is not None and obj.status.phase in (None, tasks.PENDING) \
                and purpose(obj) is not None:
            self.on_delivery_task()  # a new delivery task with its first status: a candidate for dispatch now
        return self._task_refs(old, obj)

    def _index_task(self, old: objects.AgentTask | None, obj: objects.AgentTask) -> None:
        """Store ``obj`` (which replaces ``old``) and keep the indexes: by build, phase, fixers, batch, dependents."""
        ns, name = obj.key
        self._task_changed((ns, obj.build_name), name)
        if old is not None and old.build_name != obj.build_name:  # (its spec.buildRef rewritten)
            self._task_changed((ns, old.build_name), name)
            self.tasks_by_build[(ns, old.build_name)].discard(name)
        self.tasks[obj.key] = obj
        self.tasks_by_build[(ns, obj.build_name)].add(name)
        self._index_phase(name, old, obj)
        if obj.spec.role == "fixer":
            self.fixers_by_build[(ns, obj.build_name)].add(name)
        batch = obj.metadata.labels.get(BATCH_LABEL)
        was = old.metadata.labels.get(BATCH_LABEL) if old is not None else None
        if was and was != batch:  # (relabelled by hand: the index follows the label)
            self.tasks_by_batch.get((ns, obj.build_name, was), set()).discard(name)
        if batch:
            self.tasks_by_batch[(ns, obj.build_name, batch)].add(name)
        for dep in obj.spec.depends_on:
            self.dependents[(ns, dep)].add(name)

    def _task_refs(self, old: objects.AgentTask | None, obj: objects.AgentTask) -> list[Ref]:
        """The references a stored task concerns: itself, its build, and what waits on it."""
        ns, name = obj.key
        refs: list[Ref] = [("AgentTask", ns, name), ("BuildRequest", ns, obj.build_name)]
        if old is None or old.status.phase != obj.status.phase:
            refs += self._phase_refs(obj)
        queue = obj.metadata.annotations.get(QUEUE_ANNOTATION)
        if queue:
            refs.append(("Queue", "", queue))
        fixes = obj.metadata.annotations.get(FIXES_ANNOTATION)
        if fixes and (ns, fixes) in self.jobs:
            refs.append(("MergeJob", ns, fixes))
        fanned = obj.metadata.labels.get(fanout.FANOUT_LABEL)
        if fanned:  # a candidate, its gate or the judge of a best-of-N task: the task decides on it
            refs.append(("AgentTask", ns, fanned))
        return refs

    def _phase_refs(self, obj: objects.AgentTask) -> list[Ref]:
        """What waits on a task whose phase changed: its dependents, their MergeJobs' queues (a stacked dependent's
        MergeJob waits on this task, and fails when it does), and a delegating parent's MergeJob's queue."""
        ns, name = obj.key
        dependents = self.dependents.get((ns, name), ())
        refs: list[Ref] = [("AgentTask", ns, d) for d in dependents]
        for d in dependents:
            job = self.jobs.get((ns, d))
            if job is not None:
                refs += self._queue_refs(job)
        parent = obj.metadata.labels.get(keys.PARENT)  # a delegating task's MergeJob waits on its children
        job = self.jobs.get((ns, parent)) if parent else None
        if job is not None:
            refs += self._queue_refs(job)
        return refs

    def _store_job(self, obj: objects.MergeJob) -> list[Ref]:
        ns, name = obj.key
        self.version += 1
        old_job = self.jobs.get(obj.key)
        if old_job is not None and old_job.task_name != obj.task_name:
            self._job_changed(old_job)
        self._job_changed(obj)
        self.jobs[obj.key] = obj
        self.jobs_by_build[(ns, obj.build_name)].add(name)
        refs = [("MergeJob", ns, name), ("BuildRequest", ns, obj.build_name), *self._queue_refs(obj)]
        refs += [("AgentTask", ns, d) for d in self.dependents.get((ns, obj.task_name), ())]
        task = self.tasks.get((ns, obj.task_name))
        fixes = task.metadata.annotations.get(FIXES_ANNOTATION) if task is not None else None
        if fixes:
            refs.append(("MergeJob", ns, fixes))
        return refs

    def _index_phase(self, name: str, old: objects.AgentTask | None, new: objects.AgentTask | None) -> None:
        """Keep ``live_by_build`` and ``task_phases`` as the task moved from ``old`` to ``new`` (None: absent)."""
        if old is not None:
            self.task_phases[old.status.phase or tasks.PENDING] -= 1
            self.live_by_build[(old.namespace, old.build_name)].discard(name)
        if new is not None:
            phase = new.status.phase or tasks.PENDING
            self.task_phases[phase] += 1
            if phase in (tasks.PENDING, tasks.RUNNING):
                self.live_by_build[(new.namespace, new.build_name)].add(name)

    def _task_changed(self, build: Key, task: str) -> None:
        self.changes[build] += 1
        self.changed_tasks[build].add(task)

    def _job_changed(self, job: objects.MergeJob) -> None:
        """A MergeJob was stored or forgotten: the views of the task it belongs to, and of a task named like it
        (``job_of_task``'s fallback), are stale."""
        build = (job.namespace, job.build_name)
        self._task_changed(build, job.task_name)
        self.changed_tasks[build].add(job.name)

    def _queue_refs(self, job: objects.MergeJob) -> list[Ref]:
        build = self.builds.get((job.namespace, job.build_name))
        if build is None:
            return []
        return [("Queue", "", queue_name(build, job.spec.target))]

    # --- reading -----------------------------------------------------------------------------------

    def build_of(self, obj: objects.AgentTask | objects.MergeJob) -> objects.BuildRequest | None:
        return self.builds.get((obj.namespace, obj.build_name))

    def tasks_of(self, build: Key) -> Iterator[objects.AgentTask]:
        for name in list(self.tasks_by_build.get(build, ())):
            t = self.tasks.get((build[0], name))
            if t is not None:
                yield t

    def tasks_of_batch(self, build: Key, batch: str) -> Iterator[objects.AgentTask]:
        """The gate tasks of one batch of the build's queue (label ``longshot.dev/batch``)."""
        for name in list(self.tasks_by_batch.get((build[0], build[1], batch), ())):
            t = self.tasks.get((build[0], name))
            if t is not None:
                yield t

    def jobs_of(self, build: Key) -> Iterator[objects.MergeJob]:
        """The build's current MergeJobs: every one but those a relaunched task replaced with a newer one (its
        ``status.mergeJob`` names another), which are history."""
        for name in list(self.jobs_by_build.get(build, ())):
            j = self.jobs.get((build[0], name))
            if j is not None and not self.replaced(j):
                yield j

    def replaced(self, job: objects.MergeJob) -> bool:
        """A relaunch of the job's task made a newer MergeJob (the task's ``status.mergeJob`` names it)."""
        task = self.tasks.get((job.namespace, job.task_name))
        current = task.status.merge_job if task is not None else None
        return current is not None and current != job.name

    def pods_of(self, task: Key) -> Iterator[PodView]:
        for name in list(self.pods_by_task.get(task, ())):
            p = self.pods.get((task[0], name))
            if p is not None:
                yield p

    def delivery_task(self, key: Key) -> bool:
        """The task is a gate, review, sweep or final task (``purpose``): the merge queue or a build's finalization
        waits for its end."""
        task = self.tasks.get(key)
        return task is not None and purpose(task) is not None

    def job_of_task(self, task: objects.AgentTask) -> objects.MergeJob | None:
        """The MergeJob of a task's latest successful handoff: ``status.mergeJob``, else the one named like the task
        (its first)."""
        return self.jobs.get((task.namespace, task.status.merge_job or task.name))

    def shard_of(self, build: objects.BuildRequest) -> str:
        """The shard a build belongs to: its tenant's use of its repository (:func:`shard_key`)."""
        return shard_key(build)

    def shards(self) -> set[str]:
        return {*(self.shard_of(b) for b in self.builds.values()), *map(schedule_shard, self.schedules.values())}

    def all_refs(self) -> Iterable[Ref]:
        """Everything, for the periodic resync."""
        for b in list(self.builds):
            yield ("BuildRequest", *b)
        for t in list(self.tasks):
            yield ("AgentTask", *t)
        for j in list(self.jobs):
            yield ("MergeJob", *j)
        for s in list(self.schedules):
            yield ("BuildSchedule", *s)
        seen: set[str] = set()
        for (ns, _), job in list(self.jobs.items()):
            build = self.builds.get((ns, job.build_name))
            if build is not None:
                q = queue_name(build, job.spec.target)
                if q not in seen:
                    seen.add(q)
                    yield ("Queue", "", q)


def purpose(task: objects.AgentTask) -> str | None:
    """``gate``, ``review``, ``sweep``, ``final`` for delivery tasks; None for planned tasks and fixers."""
    return task.metadata.labels.get(PURPOSE_LABEL)


def merged_count(task: objects.AgentTask) -> int:
    """A sweep task's ``longshot.dev/merged-count`` annotation: the branches merged when it was created (0 when a
    person made it something else than a count: the next sweep is then due by time alone, and nothing fails)."""
    try:
        return max(0, int(task.metadata.annotations.get(keys.MERGED_COUNT, "0") or 0))
    except ValueError:
        return 0


def fix_depth(task: objects.AgentTask | None) -> int:
    if task is None:
        return 0
    try:
        return int(task.metadata.labels.get(FIX_DEPTH_LABEL, "0"))
    except ValueError:
        return 0


def pod_name(task: str, attempt: int) -> str:
    return names.pod_name(task, attempt)


def pod_key(meta: Mapping[str, Any]) -> Key:
    """The cache's key of a Pod with metadata ``meta``: a claimed warm sandbox's under its attempt's name
    (:attr:`PodView.claimed_as`), any other under its own."""
    labels = meta.get("labels") or {}
    claimed = labels.get(keys.WARM_CLAIM) if labels.get(keys.WARM_TEMPLATE) and any(
        r.get("kind") == "AgentTask" and r.get("controller") for r in meta.get("ownerReferences") or []) else None
    return str(meta.get("namespace", "")), str(claimed or meta.get("name", ""))


_META_COMPARED: Final = ("generation", "labels", "annotations", "deletion_timestamp", "owner_references")


def schedule_refs(build: objects.BuildRequest) -> list[Ref]:
    """The BuildSchedule that made ``build`` (its controller owner), as a reference: any change of a child, its status
    included, and its deletion wake its schedule (a finished child frees a Forbid schedule, counts in its history)."""
    return [("BuildSchedule", build.namespace, o.name) for o in build.metadata.owner_references
            if o.kind == "BuildSchedule" and o.controller]


def intake_refs(build: objects.BuildRequest) -> list[Ref]:
    """The standing intake that started ``build`` (its controller owner; the build has the intake label), as a
    reference: any change of a child, its status included, and its deletion wake its intake (it comments on the
    issue and closes it). Here, not in the watch's path alone: the child's own status write (the executor's,
    :meth:`Cache.written`) makes its watch event no news, and the intake waited for the resync (60 s)."""
    if standing.PARENT_LABEL not in build.metadata.labels:
        return []
    return [("BuildRequest", build.namespace, o.name) for o in build.metadata.owner_references
            if o.kind == "BuildRequest" and o.controller]


def _has_build_owner(build: objects.BuildRequest) -> bool:
    return any(o.kind == "BuildRequest" and o.controller for o in build.metadata.owner_references)


def status_only(old: objects.BuildRequest, new: objects.BuildRequest) -> bool:
    """Whether ``new`` differs from ``old`` in its status only (and the resourceVersion): the build's own write."""
    return old.spec == new.spec and old.metadata.uid == new.metadata.uid and \
        old.metadata.finalizers == new.metadata.finalizers and all(
            getattr(old.metadata, f) == getattr(new.metadata, f) for f in _META_COMPARED)


def progress_only(old: objects.AgentTask, new: objects.AgentTask) -> bool:
    """Whether ``new`` differs from ``old`` in ``status.progress`` only (and the resourceVersion)."""
    if old.spec != new.spec or old.metadata.uid != new.metadata.uid:
        return False
    if any(getattr(old.metadata, f) != getattr(new.metadata, f) for f in _META_COMPARED):
        return False
    a, b = old.status, new.status
    return all(getattr(a, f) == getattr(b, f) for f in type(b).model_fields if f != "progress")


def _ended_attempt_metered(task: objects.AgentTask) -> bool:
    """Whether the progress meters an attempt the task already recorded as ended (``tasks.late_usage``), or keeps
    an earlier attempt's late charge (``progress.earlier``) its record does not show yet."""
    p = task.status.progress
    if p is None:
        return False
    if p.attempt is not None and any(a.number == p.attempt and a.end_time is not None for a in task.status.attempts):
        return True
    for e in p.earlier:
        record = next((a for a in task.status.attempts if a.number == e.attempt), None)
        if record is not None and (e.tokens > record.tokens or e.cost > record.cost):
            return True
    return False


def _metered(task: objects.AgentTask) -> tuple[object, ...]:
    """What of a task's progress the build reads: its usage (``controllers.context``: usage and budget)."""
    p = task.status.progress
    late = tuple((e.attempt, e.tokens, e.cost) for e in p.earlier) if p is not None else ()
    if p is None or not (p.tokens or p.cost):
        return (0, 0.0, late)  # an attempt's first heartbeat starts its figures at zero: no usage either way
    return (p.attempt, p.tokens, p.cost, late)
