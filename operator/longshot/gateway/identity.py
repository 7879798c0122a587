"""Who is calling: a Pod-bound ServiceAccount token, checked by a TokenReview, mapped to an agent attempt.

Agent Pods mount a projected token with audience ``longshot-gateway`` (``runtime.pods``) and send it as
``Authorization: Bearer <token>`` (git's ``http.extraHeader``, the OpenAI convention) or ``x-api-key``
(the Anthropic convention). The gateway

1. asks the API server (TokenReview, audiences ``[longshot-gateway]``) whether the token is valid and which
   Pod (name and UID) it is bound to; successful reviews are reused for ``token_cache_seconds``, keyed by
   the token's SHA-256 (the token itself is not kept);
2. reads that Pod on every request: it must exist with that UID, be Pending or Running and not being
   deleted, and be a Longshot agent Pod (labels ``longshot.dev/task`` and ``longshot.dev/attempt``, its
   controller an AgentTask, its task input annotation naming the same task and attempt);
3. reads the AgentTask (same UID as the owner reference) and its BuildRequest.

No token, or one the API server rejects: 401. A valid token whose Pod is finished or not an agent attempt,
or a token the API server rejects because the Pod it is bound to was deleted: 403.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from longshot.api import handoff
from longshot.core import names
from longshot.gateway import cluster as gcluster
from longshot.runtime import pods

MAX_TOKEN_BYTES = 16 * 1024
CACHE_SIZE = 4096


class Denied(Exception):
    """The request is refused: ``status`` is 401 or 403, ``message`` says why (no secret in it)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


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


def claimed_pod(token: str, audience: str) -> tuple[str, str, str] | None:
    """The Pod ``(namespace, name, uid)`` a (not verified!) ServiceAccount JWT claims to be bound to, when it
    is for ``audience``; only used to tell a refused token of a deleted Pod (403) from a bad one (401)."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
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
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.cluster = cluster
        self.audience = audience
        self.cache_seconds = cache_seconds
        self.clock = clock
        self._reviews: OrderedDict[str, tuple[float, gcluster.Review]] = OrderedDict()

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        token = token_from(headers)
        if token is None:
            raise Denied(401, "no gateway token: send the Pod's projected token (audience longshot-gateway) as "
                              "'Authorization: Bearer <token>'")
        review = await self._review(token)
        return await asyncio.to_thread(self._caller, review)

    async def _review(self, token: str) -> gcluster.Review:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = self.clock()
        cached = self._reviews.get(key)
        if cached and cached[0] > now:
            return cached[1]
        review = await asyncio.to_thread(self.cluster.review, token, self.audience)
        if review is None:
            claimed = claimed_pod(token, self.audience)
            if claimed is not None and not await asyncio.to_thread(self._pod_exists, *claimed):
                # bound to a Pod that is gone: the API server invalidates such tokens; say why
                raise Denied(403, f"the Pod {claimed[0]}/{claimed[1]} of this token no longer exists")
            raise Denied(401, "the gateway token was not accepted (expired, revoked, not bound to a Pod, or "
                              f"not for audience {self.audience})")
        self._reviews[key] = (now + self.cache_seconds, review)
        self._reviews.move_to_end(key)
        while len(self._reviews) > CACHE_SIZE:
            self._reviews.popitem(last=False)
        return review

    def _pod_exists(self, namespace: str, name: str, uid: str) -> bool:
        pod = self.cluster.get_pod(namespace, name)
        return pod is not None and (pod.get("metadata") or {}).get("uid") == uid

    def _caller(self, review: gcluster.Review) -> Caller:
        ns = review.namespace
        pod = self.cluster.get_pod(ns, review.pod_name)
        if pod is None or (pod.get("metadata") or {}).get("uid") != review.pod_uid:
            raise Denied(403, f"the Pod {ns}/{review.pod_name} of this token no longer exists")
        meta, status = pod["metadata"], pod.get("status") or {}
        if meta.get("deletionTimestamp") or status.get("phase") not in (None, "Pending", "Running"):
            raise Denied(403, f"the Pod {ns}/{review.pod_name} is {status.get('phase') or 'terminating'}; only a "
                              "running agent attempt may use the gateway")
        labels = meta.get("labels") or {}
        owner = next((o for o in meta.get("ownerReferences") or []
                      if o.get("kind") == "AgentTask" and o.get("controller")), None)
        if owner is None or pods.TASK_LABEL not in labels or pods.ATTEMPT_LABEL not in labels:
            raise Denied(403, f"the Pod {ns}/{review.pod_name} is not a Longshot agent Pod")
        task_name = str(owner.get("name"))
        if labels[pods.TASK_LABEL] != names.fit(task_name):
            raise Denied(403, f"the Pod {ns}/{review.pod_name} is not a Longshot agent Pod")
        try:
            attempt = int(labels[pods.ATTEMPT_LABEL])
            task_input = handoff.TaskInput.model_validate_json(
                (meta.get("annotations") or {})[handoff.TASK_INPUT_ANNOTATION])
        except (KeyError, ValueError, pydantic.ValidationError):
            raise Denied(403, f"the Pod {ns}/{review.pod_name} has no valid task input") from None
        if task_input.task != task_name or task_input.attempt != attempt:
            raise Denied(403, f"the Pod {ns}/{review.pod_name} has a task input of another task or attempt")
        task = self.cluster.get_task(ns, task_name)
        if task is None or task["metadata"].get("uid") != owner.get("uid"):
            raise Denied(403, f"the AgentTask {ns}/{task_name} of this Pod no longer exists")
        build_name = ((task.get("spec") or {}).get("buildRef") or {}).get("name")
        if not build_name or build_name != task_input.build:
            raise Denied(403, f"the AgentTask {ns}/{task_name} belongs to no build or to another one")
        build = self.cluster.get_build(ns, build_name)
        if build is None:
            raise Denied(403, f"the BuildRequest {ns}/{build_name} no longer exists")
        return Caller(namespace=ns, pod=review.pod_name, pod_uid=review.pod_uid, task=task_name, attempt=attempt,
                      role=task_input.role, build=build_name, task_input=task_input, task_obj=task,
                      build_obj=build)
