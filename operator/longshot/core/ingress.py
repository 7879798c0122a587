"""Doors: what every HTTP route of the gateway and the operator declares, and the counters that bound it.

Pure (no I/O): the aiohttp shell that enforces these declarations is :mod:`longshot.net.ingress`, the one way
both servers register a route (docs/security.md, "One ingress").

A :class:`Route` is data: its path pattern, methods, caller check, largest body, the deadline by which the whole
body must have arrived, the deadline of the whole request and how many requests one caller may have in flight on
it. The shell decides route, method and caller before it reads any byte of a body, and reads the body in chunks
under the route's limit, its deadline and a replica-wide :class:`Budget` of in-flight body bytes.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Literal, get_args

CallerCheck = Literal["none", "agent-token", "reader-token", "sandbox-token", "webhook-signature", "person-token"]
"""Who may call a route, checked before its body is read:

* ``none``: anyone who can reach the port (probes, metrics); such a route reads no body.
* ``agent-token``: an agent Pod's bound ServiceAccount token (the gateway's TokenReview); lanes per attempt.
* ``reader-token``: as ``agent-token``, or the bound token of a warm sandbox not claimed yet whose build's pool
  pre-clones (``spec.agent.warmPool.preClone``): such a caller may only read its own build's repository (the git
  routes of a clone or fetch); lanes per Pod.
* ``sandbox-token``: an agent Pod's bound ServiceAccount token (the gateway's TokenReview) whether or not an attempt
  was bound to it yet: a warm sandbox waiting for its claim (``GET /v1/claim`` only, no body); lanes per Pod.
* ``webhook-signature``: anyone, in lanes per source address under a per-source token bucket; the body (bounded)
  is then checked against the intake's HMAC secret before anything else happens.
* ``person-token``: a person's own Kubernetes bearer token (``Authorization: Bearer``, never a cookie or a query
  parameter), reviewed by the API server (SelfSubjectReview); lanes per token hash. The web console's routes: every
  read and write after it is made with that token, so the person's RBAC decides (docs/console.md).
"""
CALLER_CHECKS: tuple[str, ...] = get_args(CallerCheck)
METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Route:
    """One declared HTTP route."""

    name: str
    """Short name (metrics label, log lines, error messages)."""
    path: str
    """aiohttp path pattern (``/ledger``, ``/intake/{ns}/{name}``)."""
    methods: tuple[str, ...]
    caller: CallerCheck
    max_body_bytes: int
    """Largest request body; 0: the route takes no body (a declared or chunked body is refused 413 unread)."""
    body_seconds: float
    """The whole body must have arrived this many seconds after the request's headers did (not per read)."""
    timeout_seconds: float
    """The whole request, answer included (a streaming answer's upstream has its own, shorter, timeout)."""
    per_caller: int
    """Requests one caller may have in flight on this route's lane; more are answered 429 at once."""
    lane: str = ""
    """Routes with the same lane share the per-caller count (default: the route's own name)."""
    limit_name: str = ""
    """The setting that sets ``max_body_bytes`` (named in the 413 answer, so that the caller knows what to change)."""
    stream: bool = False
    """The handler reads the body as a stream itself (git packs), under ``max_body_bytes``; such a body is not
    counted in the in-flight budget (it goes to disk, ``vcs.packlimit``)."""

    @property
    def lane_name(self) -> str:
        return self.lane or self.name

    def too_large(self) -> str:
        """The message of a body over ``max_body_bytes``."""
        setting = f", {self.limit_name}" if self.limit_name else ""
        return f"the request body is larger than {self.max_body_bytes} bytes (the {self.name} route's limit{setting})"

    def problems(self) -> list[str]:
        """What is missing or inconsistent in this declaration (empty: a complete declaration)."""
        out: list[str] = []
        if not self.name or not self.path.startswith("/"):
            out.append(f"route {self.name!r}: a name and a path starting with / are required")
        if not self.methods or not set(self.methods) <= METHODS:
            out.append(f"route {self.name!r}: methods must be some of {sorted(METHODS)}, not {self.methods}")
        if self.caller not in CALLER_CHECKS:
            out.append(f"route {self.name!r}: caller must be one of {CALLER_CHECKS}, not {self.caller!r}")
        if self.max_body_bytes < 0:
            out.append(f"route {self.name!r}: max_body_bytes must be 0 or more")
        if self.caller == "none" and self.max_body_bytes > 0:
            out.append(f"route {self.name!r}: a route anyone may call reads no body (max_body_bytes 0)")
        if self.timeout_seconds <= 0:
            out.append(f"route {self.name!r}: timeout_seconds must be positive")
        if self.max_body_bytes > 0 and not 0 < self.body_seconds <= self.timeout_seconds:
            out.append(f"route {self.name!r}: body_seconds must be positive and at most timeout_seconds")
        if self.per_caller < 1:
            out.append(f"route {self.name!r}: per_caller must be at least 1")
        return out


@dataclass
class Budget:
    """Bytes of request bodies held at once on this replica: a reservation is taken before the bytes are read."""

    limit: int
    used: int = 0
    peak: int = 0
    """The most bytes ever reserved at once (metrics, tests and benchmarks read it)."""

    def reserve(self, n: int) -> bool:
        """Take ``n`` bytes; False (nothing taken) when that would pass the limit."""
        if n < 0:
            raise ValueError("a reservation is 0 bytes or more")
        if self.used + n > self.limit:
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)


@dataclass
class Lanes:
    """Requests in flight per (lane, caller): entries exist only while a request is in flight, so the table is
    bounded by the server's connection limit."""

    _count: dict[tuple[str, Hashable], int] = field(default_factory=dict)
    most: int = 0
    """The most requests one caller ever had in flight on one lane (tests and benchmarks read it)."""

    def enter(self, lane: str, key: Hashable, limit: int) -> bool:
        """One more request of ``key`` on ``lane``; False (nothing counted) when it already has ``limit``."""
        now = self._count.get((lane, key), 0)
        if now >= limit:
            return False
        self._count[(lane, key)] = now + 1
        self.most = max(self.most, now + 1)
        return True

    def leave(self, lane: str, key: Hashable) -> None:
        left = self._count.get((lane, key), 1) - 1
        if left > 0:
            self._count[(lane, key)] = left
        else:
            self._count.pop((lane, key), None)

    def in_flight(self, lane: str, key: Hashable) -> int:
        return self._count.get((lane, key), 0)

    def __len__(self) -> int:
        return len(self._count)
