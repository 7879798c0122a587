"""Who is calling: a Pod-bound ServiceAccount token, checked by a TokenReview, mapped to an agent attempt.

Agent Pods mount a projected token with audience ``longshot-gateway`` (``runtime.pods``) and send it as
``Authorization: Bearer <token>`` (git's ``http.extraHeader``, the OpenAI convention) or ``x-api-key``
(the Anthropic convention). The gateway

1. asks the API server (TokenReview, audiences ``[longshot-gateway]``) whether the token is valid and which
   Pod (name and UID) it is bound to; successful reviews are reused for ``token_cache_seconds`` and never past
   the token's own expiry (its ``exp`` claim), keyed by the token's SHA-256 (the token itself is not kept). A
   refused token is refused again without a review for ``denied_cache_seconds`` (10 s by default; same key, same
   bound of :data:`CACHE_SIZE`), so a caller that repeats a bogus token costs the API server one TokenReview per
   window, not one per request;
2. reads that Pod: it must exist with that UID, be Pending or Running and not being deleted, and have an
   AgentTask as its controller (owner reference with ``controller: true``);
3. reads that AgentTask (same UID as the owner reference): the Pod must be its **current** attempt's, the one
   whose ``status.attempts[-1].podUID`` the operator recorded when it created (or adopted) the Pod, and that
   attempt must not have ended (:func:`bound_attempt`);
4. reads the task's BuildRequest. Role, branch and build come from the AgentTask's spec and the BuildRequest
   (``runtime.pods.task_input``, the operator's own builder), never from the Pod's labels or task input
   annotation: anyone who may create Pods in the namespace writes those.

Steps 2-4 read the gateway's watch cache (:mod:`~longshot.gateway.watchcache`) when it runs: a caller it accepts
is accepted; a refusal it would give is read again from the API server first (:meth:`Authenticator._confirmed_caller`).
Their outcome is cached for ``identity_cache_seconds`` (2 s by default), keyed by the Pod's UID, in a bounded LRU:
an attempt that ended, a Pod deleted or a task cancelled loses access at most that long (plus the watch's lag)
after the API server knows it. Every request then takes a token from its attempt's bucket (``requests_per_second``,
``request_burst``): an attempt that sends more is answered 429 with ``Retry-After``.

No token, or one the API server rejects: 401. A valid token whose Pod is finished, not an agent attempt, or not
its task's current attempt, or a token the API server rejects because the Pod it is bound to was deleted: 403.
The Pod of the current attempt before the operator recorded its UID (the agent started faster than the status
write): 503 with ``Retry-After: 1``; the agent's git and model clients retry it.

Requests that miss a cache at the same time share one look-up (:class:`Flights`): an agent's first clone, its
heartbeat and its model call, which start together, cost one TokenReview and one read of Pod, task and build, not
one each.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import pydantic

from longshot.api import boundedjson, common, handoff, keys
from longshot.core import names
from longshot.gateway import cluster as gcluster
from longshot.gateway import metrics
from longshot.gateway.flights import Flights
from longshot.runtime import pods

MAX_TOKEN_BYTES = 16 * 1024
CLAIMS_BUDGET = boundedjson.Budget(max_bytes=MAX_TOKEN_BYTES, max_values=1000, max_depth=8)
"""What parsing the claims of an unverified token may cost (``api.boundedjson``; a ServiceAccount token has ~30)."""
CACHE_SIZE = 4096
DENIED_CACHE_SECONDS = 10.0
"""How long a refused token is refused from the cache (chart: ``LONGSHOT_GATEWAY_TOKEN_DENIED_CACHE_SECONDS``)."""


class Denied(Exception):
    """The request is refused: ``status`` is 401, 403, 429 or 503, ``message`` says why (no secret in it);
    ``retry_after`` (seconds) for the two that are worth retrying."""

    def __init__(self, status: int, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        return {} if self.retry_after is None else {"Retry-After": str(max(1, math.ceil(self.retry_after)))}


@dataclass(frozen=True)
class Caller:
    """One running agent attempt, as the API server knows it."""

    namespace: str
    pod: str
    pod_uid: str
    task: str
    attempt: int
    role: str
    build: str
    task_input: handoff.TaskInput
    task_obj: Mapping[str, Any]
    build_obj: Mapping[str, Any]

    @property
    def build_spec(self) -> Mapping[str, Any]:
        return self.build_obj.get("spec") or {}


@dataclass(frozen=True)
class Reader:
    """A warm sandbox not claimed yet, of a build whose pool pre-clones (``spec.agent.warmPool.preClone``): it may
    read its own build's repository through the git routes of a clone or a fetch, and nothing else (the
    ``reader-token`` caller check; docs/warm-pools.md, "Pre-clone")."""

    namespace: str
    pod: str
    pod_uid: str
    build: str
    build_obj: Mapping[str, Any]

    @property
    def build_spec(self) -> Mapping[str, Any]:
        return self.build_obj.get("spec") or {}


def warm_build(pod: Mapping[str, Any], uid: str) -> tuple[str, str] | None:
    """The name and UID of the BuildRequest whose unclaimed warm sandbox ``pod`` is: a Pod of UID ``uid``, Pending
    or Running and not being deleted, labelled ``longshot.dev/warm-template``, whose controller is a BuildRequest
    (no AgentTask: a claimed sandbox is its attempt's). None for any other Pod. Pure."""
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    if meta.get("uid") != uid or meta.get("deletionTimestamp") or status.get("phase") not in (None, "Pending",
                                                                                             "Running"):
        return None
    if keys.WARM_TEMPLATE not in (meta.get("labels") or {}):
        return None
    controllers = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
    if len(controllers) != 1 or controllers[0].get("kind") != "BuildRequest" \
            or controllers[0].get("apiVersion") != common.API_VERSION:
        return None
    name, owner_uid = controllers[0].get("name"), controllers[0].get("uid")
    return (str(name), str(owner_uid)) if name and owner_uid else None


def pre_clones(build: Mapping[str, Any]) -> bool:
    """The build's warm pool pre-clones its repository (``spec.agent.warmPool.preClone``). Pure."""
    pool = ((build.get("spec") or {}).get("agent") or {}).get("warmPool") or {}
    return pool.get("preClone") is True and int(pool.get("size") or 0) > 0


def token_from(headers: Mapping[str, str]) -> str | None:
    """The bearer token of a request: ``Authorization: Bearer``, ``x-api-key``, or the password of Basic."""
    auth = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, value = auth.strip().partition(" ")
    token: str | None = None
    if scheme.lower() == "bearer":
        token = value.strip()
    elif scheme.lower() == "basic":
        try:
            token = base64.b64decode(value.strip(), validate=True).decode().partition(":")[2]
        except (ValueError, UnicodeDecodeError):
            token = None
    if not token:
        token = (headers.get("x-api-key") or headers.get("X-Api-Key") or "").strip()
    if not token or len(token) > MAX_TOKEN_BYTES:
        return None
    return token


def _claims(token: str) -> Any:
    """The claims of a JWT, not verified (bounded: :data:`CLAIMS_BUDGET`); raises ValueError when it has none."""
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError("not a JWT")
    return boundedjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)), CLAIMS_BUDGET)


def token_expiry(token: str) -> float | None:
    """The ``exp`` claim of a ServiceAccount JWT (seconds since the epoch), or None. Not verified: read only after
    the API server accepted the token, to keep its review no longer than the token lives. Pure."""
    try:
        exp = _claims(token).get("exp")
    except (ValueError, AttributeError, TypeError):
        return None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


def claimed_pod(token: str, audience: str) -> tuple[str, str, str] | None:
    """The Pod ``(namespace, name, uid)`` a (not verified!) ServiceAccount JWT claims to be bound to, when it
    is for ``audience``; only used to tell a refused token of a deleted Pod (403) from a bad one (401)."""
    try:
        claims = _claims(token)
        aud = claims.get("aud")
        k8s = claims["kubernetes.io"]
        pod = k8s["pod"]
        if audience not in (aud if isinstance(aud, list) else [aud]):
            return None
        return str(k8s["namespace"]), str(pod["name"]), str(pod["uid"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


class Authenticator:
    def __init__(self, cluster: gcluster.Cluster, *, audience: str, cache_seconds: float,
                 identity_cache_seconds: float = 0.0, rate: float = 0.0, burst: float = 1.0,
                 denied_cache_seconds: float = DENIED_CACHE_SECONDS,
                 clock: Callable[[], float] = time.monotonic, wall: Callable[[], float] = time.time) -> None:
        self.cluster = cluster
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.denied_cache_seconds = denied_cache_seconds
        self.identity_cache_seconds = identity_cache_seconds
        self.clock = clock
        self.wall = wall
        """Seconds since the epoch (a token's ``exp`` claim is on that clock)."""
        self.limiter = RateLimiter(rate, burst, clock)
        self._reviews: OrderedDict[str, tuple[float, gcluster.Review]] = OrderedDict()
        self._denied: OrderedDict[str, tuple[float, int, str]] = OrderedDict()
        """Refused tokens by SHA-256: until when, status and message (plain data: a stored exception's traceback
        would keep the frame, and the token in it, alive)."""
        self._callers: OrderedDict[str, tuple[float, Caller | Denied]] = OrderedDict()
        self._readers: OrderedDict[str, tuple[float, Reader | None]] = OrderedDict()
        """Warm sandboxes that may pre-clone (or not), by Pod UID, for ``identity_cache_seconds``."""
        self._review_flights: Flights[gcluster.Review] = Flights()
        """TokenReviews under way, by the token's SHA-256."""
        self._caller_flights: Flights[Caller] = Flights()
        """Look-ups of a caller (Pod, task, build) under way, by Pod UID."""

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """The ``agent-token`` check: the attempt bound to the token's Pod."""
        review = await self._review(self._token(headers))
        caller = await self._lookup(review)
        self._limit(review, f"attempt {caller.attempt} of {caller.namespace}/{caller.task}")
        return caller

    async def authenticate_reader(self, headers: Mapping[str, str]) -> Caller | Reader:
        """The ``reader-token`` check: the attempt bound to the token's Pod, else, for a Pod no attempt is bound to,
        a warm sandbox of a build whose pool pre-clones (:meth:`reader`); the attempt's refusal otherwise."""
        review = await self._review(self._token(headers))
        try:
            caller: Caller | Reader = await self._lookup(review)
        except Denied as e:
            if e.status != 403:
                raise
            reader = await self.reader(review)
            if reader is None:
                raise
            caller = reader
        self._limit(review, f"the Pod {review.namespace}/{review.pod_name}")
        return caller

    @staticmethod
    def _token(headers: Mapping[str, str]) -> str:
        token = token_from(headers)
        if token is None:
            raise Denied(401, "no gateway token: send the Pod's projected token (audience longshot-gateway) as "
                              "'Authorization: Bearer <token>'")
        return token

    def _limit(self, review: gcluster.Review, who: str) -> None:
        wait = self.limiter.take(review.pod_uid)
        if wait > 0:
            raise Denied(429, f"{who} sends more than {self.limiter.rate:g} requests a second (bursts of "
                              f"{self.limiter.burst:g}); slow down", retry_after=wait)

    async def _review(self, token: str) -> gcluster.Review:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._reviews.get(key)
        if cached and cached[0] > now:
            return cached[1]
        refused = self._denied.get(key)
        if refused is not None and refused[0] > now:
            raise Denied(refused[1], refused[2])
        return await self._review_flights.run(key, lambda: self._reviewed(key, token))

    async def _reviewed(self, key: str, token: str) -> gcluster.Review:
        """A TokenReview of ``token`` (SHA-256 ``key``), cached as accepted or refused."""
        review = await asyncio.to_thread(self.cluster.review, token, self.audience)
        now = self.clock()
        metrics.TOKEN_REVIEWS.labels(result="refused" if review is None else "accepted").inc()
        if review is None:
            claimed = claimed_pod(token, self.audience)
            if claimed is not None and not await asyncio.to_thread(self._pod_exists, *claimed):
                # bound to a Pod that is gone: the API server invalidates such tokens; say why
                denied = Denied(403, f"the Pod {claimed[0]}/{claimed[1]} of this token no longer exists")
            else:
                denied = Denied(401, "the gateway token was not accepted (expired, revoked, not bound to a Pod, or "
                                     f"not for audience {self.audience})")
            if self.denied_cache_seconds > 0:
                self._denied[key] = (now + self.denied_cache_seconds, denied.status, denied.message)
                self._denied.move_to_end(key)
                while len(self._denied) > CACHE_SIZE:
                    self._denied.popitem(last=False)
            raise denied
        self._denied.pop(key, None)
        until = now + self.cache_seconds
        expires = token_expiry(token)
        if expires is not None:  # never past the token's own expiry
            until = min(until, now + expires - self.wall())
        if until <= now:
            return review
        self._reviews[key] = (until, review)
        self._reviews.move_to_end(key)
        while len(self._reviews) > CACHE_SIZE:
            self._reviews.popitem(last=False)
        return review

    def _pod_exists(self, namespace: str, name: str, uid: str) -> bool:
        pod = self.cluster.get_pod(namespace, name, fresh=True)  # a refusal's wording: from the API server
        return pod is not None and (pod.get("metadata") or {}).get("uid") == uid

    async def _lookup(self, review: gcluster.Review) -> Caller:
        """The caller of ``review``, from the identity cache when it was looked up less than
        ``identity_cache_seconds`` ago (keyed by the Pod's UID), else from the API server (in a thread; the cache
        itself is only touched from the event loop)."""
        now = self.clock()
        cached = self._callers.get(review.pod_uid)
        if cached is not None and cached[0] > now:
            self._callers.move_to_end(review.pod_uid)
            if isinstance(cached[1], Denied):
                raise cached[1]
            return cached[1]
        return await self._caller_flights.run(review.pod_uid, lambda: self._looked_up(review))

    async def _looked_up(self, review: gcluster.Review) -> Caller:
        """The caller of ``review`` read (watch cache, else API server) and cached, refused or not."""
        try:
            caller: Caller | Denied = await asyncio.to_thread(self._confirmed_caller, review)
        except Denied as e:
            if e.status != 403:
                raise  # a 503 (the UID is about to be recorded) is read again at the next request
            caller = e  # a refused Pod is refused from the cache too: its requests cost no API reads
        now = self.clock()
        self._callers[review.pod_uid] = (now + self.identity_cache_seconds, caller)
        self._callers.move_to_end(review.pod_uid)
        while len(self._callers) > CACHE_SIZE:
            self._callers.popitem(last=False)
        if isinstance(caller, Denied):
            raise caller
        return caller

    def _confirmed_caller(self, review: gcluster.Review) -> Caller:
        """The caller of ``review`` from the gateway's watch cache (``watchcache``), when there is one; a refusal
        from the cache is read again from the API server before it is final: a watch that lags may let an ended
        attempt in for as long as it lags, never keep a caller out that the API server would let in."""
        if getattr(self.cluster, "cache", None) is None:
            return self._caller(review, fresh=True)
        try:
            return self._caller(review, fresh=False)
        except Denied:
            return self._caller(review, fresh=True)

    def _caller(self, review: gcluster.Review, *, fresh: bool = True) -> Caller:
        """The caller of ``review`` (steps 2-4); ``fresh``: read from the API server, not the watch cache."""
        ns = review.namespace
        pod = self.cluster.get_pod(ns, review.pod_name, fresh=fresh)
        if pod is None or (pod.get("metadata") or {}).get("uid") != review.pod_uid:
            raise Denied(403, f"the Pod {ns}/{review.pod_name} of this token no longer exists")
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") not in (None, "Pending", "Running"):
            raise Denied(403, f"the Pod {ns}/{review.pod_name} is {status.get('phase') or 'terminating'}; only a "
                              "running agent attempt may use the gateway")
        owner = next((o for o in meta.get("ownerReferences") or []
                      if o.get("kind") == "AgentTask" and o.get("controller")), None)
        if owner is None or not owner.get("name") or not owner.get("uid"):
            raise Denied(403, f"the Pod {ns}/{review.pod_name} is not a Longshot agent Pod")
        task_name = str(owner["name"])
        task = self.cluster.get_task(ns, task_name, fresh=fresh)
        if task is None or task["metadata"].get("uid") != owner.get("uid"):
            raise Denied(403, f"the AgentTask {ns}/{task_name} of this Pod no longer exists")
        # who the caller is comes from the AgentTask and the Pod UID the operator recorded for its current
        # attempt, never from the Pod's own labels or task input annotation (anyone who may create Pods writes those)
        attempt = bound_attempt(task, attempt_pod_name(meta), review.pod_uid)
        build_name = ((task.get("spec") or {}).get("buildRef") or {}).get("name")
        if not build_name:
            raise Denied(403, f"the AgentTask {ns}/{task_name} belongs to no build")
        build = self.cluster.get_build(ns, str(build_name), fresh=fresh)
        if build is None:
            raise Denied(403, f"the BuildRequest {ns}/{build_name} no longer exists")
        try:
            task_input = pods.task_input(task, build, attempt)
        except (KeyError, ValueError, TypeError, pydantic.ValidationError):
            raise Denied(403, f"the AgentTask {ns}/{task_name} or its BuildRequest cannot describe an attempt") \
                from None
        # a claimed warm sandbox is its attempt's Pod by the attempt's name (its ledger entry, logs and spans)
        return Caller(namespace=ns, pod=attempt_pod_name(meta), pod_uid=review.pod_uid, task=task_name, attempt=attempt,
                      role=task_input.role, build=str(build_name), task_input=task_input, task_obj=task,
                      build_obj=build)


    # --- warm sandboxes (core.warmpool) -----------------------------------------------------------------

    async def sandbox(self, headers: Mapping[str, str]) -> gcluster.Review:
        """The ``sandbox-token`` check of ``GET /v1/claim``: a valid Pod-bound token (step 1), nothing more; what
        the Pod may have is decided by :meth:`claimed`."""
        return await self._review(self._token(headers))

    async def reader(self, review: gcluster.Review) -> Reader | None:
        """The warm sandbox of ``review`` as a reader of its build's repository: its Pod is an unclaimed warm
        sandbox (:func:`warm_build`) of a BuildRequest of the same UID whose pool pre-clones (:func:`pre_clones`);
        None otherwise. Read from the watch cache, a refusal confirmed from the API server (as a caller's); kept
        for ``identity_cache_seconds`` by Pod UID."""
        now = self.clock()
        cached = self._readers.get(review.pod_uid)
        if cached is not None and cached[0] > now:
            return cached[1]
        found = await asyncio.to_thread(self._reader, review, False)
        if found is None and getattr(self.cluster, "cache", None) is not None:
            found = await asyncio.to_thread(self._reader, review, True)
        self._readers[review.pod_uid] = (now + self.identity_cache_seconds, found)
        self._readers.move_to_end(review.pod_uid)
        while len(self._readers) > CACHE_SIZE:
            self._readers.popitem(last=False)
        return found

    def _reader(self, review: gcluster.Review, fresh: bool) -> Reader | None:
        ns = review.namespace
        pod = self.cluster.get_pod(ns, review.pod_name, fresh=fresh)
        owner = warm_build(pod, review.pod_uid) if pod is not None else None
        if owner is None:
            return None
        build = self.cluster.get_build(ns, owner[0], fresh=fresh)
        if build is None or (build.get("metadata") or {}).get("uid") != owner[1] or not pre_clones(build):
            return None
        return Reader(namespace=ns, pod=review.pod_name, pod_uid=review.pod_uid, build=owner[0], build_obj=build)

    async def claimed(self, review: gcluster.Review, *, wait: float, poll: float,
                      sleep: Callable[[float], Any] = asyncio.sleep) -> tuple[Caller, Mapping[str, Any]] | None:
        """The attempt a warm sandbox was claimed for, and its Pod, once the claim is complete: its controller is an
        AgentTask whose current attempt recorded this Pod's UID (steps 2-4, read afresh, not from the cache); None
        when that did not happen within ``wait`` seconds (the Pod is read every ``poll`` seconds meanwhile).

        Raises :class:`Denied` 403 for a Pod that is gone, ended, being deleted, or neither a warm sandbox nor an
        attempt's Pod. A claimed Pod's caller replaces whatever the identity cache held for its UID (a refusal
        from before the claim)."""
        ns, name = review.namespace, review.pod_name
        end = self.clock() + wait
        while True:
            pod = await asyncio.to_thread(self.cluster.get_pod, ns, name)
            if pod is None or (pod.get("metadata") or {}).get("uid") != review.pod_uid:
                raise Denied(403, f"the Pod {ns}/{name} of this token no longer exists")
            meta, status = pod["metadata"], pod.get("status") or {}
            if meta.get("deletionTimestamp") or status.get("phase") not in (None, "Pending", "Running"):
                raise Denied(403, f"the Pod {ns}/{name} is {status.get('phase') or 'terminating'}")
            bound = any(o.get("kind") == "AgentTask" and o.get("controller") for o in meta.get("ownerReferences") or [])
            if not bound and keys.WARM_TEMPLATE not in (meta.get("labels") or {}):
                raise Denied(403, f"the Pod {ns}/{name} is neither a warm sandbox nor an agent attempt's Pod")
            if bound:
                try:
                    caller = await asyncio.to_thread(self._confirmed_caller, review)
                except Denied as e:
                    if e.status != 503:
                        raise
                else:
                    self._callers[review.pod_uid] = (self.clock() + self.identity_cache_seconds, caller)
                    self._callers.move_to_end(review.pod_uid)
                    return caller, pod
            if self.clock() >= end:
                return None
            await sleep(poll)


def attempt_pod_name(meta: Mapping[str, Any]) -> str:
    """The name an attempt's record gives the Pod with metadata ``meta``: a claimed warm sandbox's attempt name
    (label ``longshot.dev/warm-claim``: what its Pod would have been called cold, ``core.warmpool``), else its own.
    Only a name: the binding is the Pod UID the operator recorded on that attempt (:func:`bound_attempt`)."""
    labels = meta.get("labels") or {}
    claimed = labels.get(keys.WARM_CLAIM) if keys.WARM_TEMPLATE in labels else None
    return str(claimed) if claimed else str(meta.get("name", ""))


RETRY_AFTER_UNRECORDED: Final = 1.0
"""``Retry-After`` (seconds) of the 503 answered to an attempt's Pod whose UID the operator has not recorded yet."""


def bound_attempt(task: Mapping[str, Any], pod_name: str, pod_uid: str) -> int:
    """The number of the attempt of ``task`` (an AgentTask dict) that runs in the Pod ``pod_name``/``pod_uid``:
    the task's current attempt (``status.attempts``' last), when the operator recorded this Pod's UID on it
    (``podUID``) and the attempt has not ended. Pure.

    Raises :class:`Denied`: 503 with ``retry_after`` when the Pod is the current (or next) attempt's by name but
    its UID is not recorded yet (the operator writes it right after it creates the Pod, and the agent may call
    first); 403 for a Pod of an older attempt, an ended attempt, or a Pod whose UID is not the recorded one."""
    meta = task.get("metadata") or {}
    ns, name = meta.get("namespace", ""), meta.get("name", "")
    attempts = [a for a in (task.get("status") or {}).get("attempts") or [] if isinstance(a, Mapping)]
    last = max(attempts, key=lambda a: int(a.get("number") or 0)) if attempts else None
    number = int(last.get("number") or 0) if last else 0
    recorded = str(last.get("podUID") or "") if last else ""
    if last is not None and recorded and last.get("pod") == pod_name:
        if recorded != pod_uid:
            raise Denied(403, f"the Pod {ns}/{pod_name} is not the one the operator created for attempt {number} "
                              f"of AgentTask {ns}/{name} (its UID is not the recorded one)")
        if last.get("endTime"):
            raise Denied(403, f"attempt {number} of AgentTask {ns}/{name} has ended; only a running attempt may "
                              "use the gateway")
        return number
    if last is not None and not recorded and last.get("pod") == pod_name and not last.get("endTime"):
        raise Denied(503, f"the operator has not recorded the Pod {ns}/{pod_name} as attempt {number} of "
                          f"AgentTask {ns}/{name} yet; retry", retry_after=RETRY_AFTER_UNRECORDED)
    if pod_name == names.pod_name(str(name), number + 1):
        raise Denied(503, f"the operator has not recorded the Pod {ns}/{pod_name} as attempt {number + 1} of "
                          f"AgentTask {ns}/{name} yet; retry", retry_after=RETRY_AFTER_UNRECORDED)
    raise Denied(403, f"the Pod {ns}/{pod_name} is not the current attempt of AgentTask {ns}/{name}")


class RateLimiter:
    """A token bucket per attempt (Pod UID): ``rate`` requests a second on average, bursts of ``burst``.
    Bounded: the least recently used buckets are forgotten beyond :data:`CACHE_SIZE`."""

    def __init__(self, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self.clock = clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()

    def take(self, key: str) -> float:
        """0 when a request of ``key`` may go ahead now (and counts it), else the seconds until one may."""
        if self.rate <= 0:
            return 0.0
        now = self.clock()
        tokens, then = self._buckets.get(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - then) * self.rate)
        if tokens < 1:
            self._buckets[key] = (tokens, now)
            self._buckets.move_to_end(key)
            return (1 - tokens) / self.rate
        self._buckets[key] = (tokens - 1, now)
        self._buckets.move_to_end(key)
        while len(self._buckets) > CACHE_SIZE:
            self._buckets.popitem(last=False)
        return 0.0
