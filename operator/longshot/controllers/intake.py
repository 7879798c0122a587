"""Reading where work already lives: the roadmap file at the target tip, and the issue tracker; and commenting on
issues. Blocking (git, HTTP): the build reconciler calls these with ``asyncio.to_thread``.

Every failure becomes an :class:`IntakeError` with a failure class the build decider understands
(``core.builds.IntakeChecked``): ``Configuration`` (the path or the project is wrong, the file is not UTF-8 or too
large, the Secret is missing) and ``Auth`` (the tracker refused the token) wait for a person; ``RateLimited``
(``retry_at``) and ``Infrastructure`` are tried again. Messages name the field and what to do, never the token.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from longshot.api import objects
from longshot.api.handoff import PlannedTask
from longshot.core import roadmap
from longshot.net import guard as gd
from longshot.runtime import kube as kubemod
from longshot.runtime import trackers
from longshot.vcs import speculate
from longshot.vcs import workspace as vws

TRACKER_MAX_WAIT = 5.0
"""Longest rate-limit wait slept through inside a reconcile; a longer one is retried at its reset."""


@dataclass
class IntakeError(Exception):
    failure_class: str
    message: str
    retry_at: dt.datetime | None = None
    done: list[int] = field(default_factory=list)
    """For :func:`comment`: the issues commented on before the failure."""

    def __str__(self) -> str:
        return self.message


def read_roadmap(w: vws.Workspace, base: str, path: str) -> list[PlannedTask]:
    """The plan of the roadmap file ``path`` at the tip of ``base`` (``core.roadmap.plan``)."""
    try:
        head = speculate.head_of(w, base)
        with w.locked():
            text = speculate.read_file(w, head, path)
    except vws.GitError as e:
        raise IntakeError("Infrastructure", f"the roadmap could not be read from branch {base}: {e}") from None
    except ValueError as e:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {e}; keep the roadmap a UTF-8 Markdown "
                                           f"file of at most {speculate.MAX_ROADMAP_BYTES} bytes") from None
    if text is None:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {path} does not exist on branch {base} "
                                           f"(at {head[:12]}); add the file or fix the path")
    try:
        return roadmap.plan(text)
    except roadmap.RoadmapTooLarge as e:
        raise IntakeError("Configuration", f"spec.planner.roadmapPath: {path} on branch {base}: {e}") from None


def _token(k: kubemod.KubeAPI, build: objects.BuildRequest) -> str | None:
    source = build.spec.planner.issues
    assert source is not None
    if not source.credentials_secret:
        return None
    data = k.get_secret(build.namespace, source.credentials_secret)
    if data is None:
        raise IntakeError("Configuration", f"spec.planner.issues.credentialsSecret: Secret "
                                           f"{source.credentials_secret!r} does not exist in namespace "
                                           f"{build.namespace}; create it with a key 'token'")
    token = data.get("token")
    if not token:
        raise IntakeError("Configuration", f"spec.planner.issues.credentialsSecret: Secret "
                                           f"{source.credentials_secret!r} has no key 'token'; add the tracker's "
                                           "token under that key")
    return token


def tracker(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
            **options: Any) -> trackers.Tracker:
    """The client of the build's issue tracker, with the token from its Secret; with ``guard``, held to the egress
    policy (the URL checked here, every connection's addresses in ``net.transport``)."""
    source = build.spec.planner.issues
    if source is None:
        raise IntakeError("Configuration", "spec.planner.issues is required when spec.planner.source is issues")
    options.setdefault("max_wait", TRACKER_MAX_WAIT)
    if guard is not None:
        url = source.url or (trackers.GITHUB_API if source.provider == "github" else trackers.GITLAB_API)
        try:
            guard.check_url(url, "spec.planner.issues.url")
        except gd.Refused as e:
            raise IntakeError("Configuration", str(e)) from None
        options.setdefault("egress", guard)
    return trackers.make_tracker(source, _token(k, build), **options)


def _mapped(e: trackers.TrackerError) -> IntakeError:
    retry_at = None
    if isinstance(e, trackers.RateLimited):
        retry_at = dt.datetime.fromtimestamp(e.retry_at, tz=dt.UTC)
    hint = {"Auth": "; fix the token in the Secret named in spec.planner.issues.credentialsSecret",
            "Configuration": "; fix spec.planner.issues"}.get(e.failure_class, "")
    return IntakeError(e.failure_class, f"{e}{hint}", retry_at)


def read_issues(k: kubemod.KubeAPI, build: objects.BuildRequest, guard: gd.Guard | None = None,
                **options: Any) -> list[PlannedTask]:
    """One task per open issue with the labels (``trackers.issues_to_tasks``)."""
    source = build.spec.planner.issues
    try:
        with tracker(k, build, guard, **options) as t:
            return trackers.issues_to_tasks(t.list_issues(source.labels if source is not None else ()))
    except trackers.TrackerError as e:
        raise _mapped(e) from None


def comment(k: kubemod.KubeAPI, build: objects.BuildRequest, posts: list[tuple[int, str, str]],
            guard: gd.Guard | None = None, **options: Any) -> list[int]:
    """Post ``(issue number, body, marker)`` comments (once per marker); the numbers done, in order. Stops at the
    first failure, which it raises after the ones before it were posted (their numbers are in ``e.done``)."""
    done: list[int] = []
    try:
        with tracker(k, build, guard, **options) as t:
            for number, body, marker in posts:
                t.comment(number, body, marker=marker)
                done.append(number)
    except trackers.TrackerError as e:
        err = _mapped(e)
        err.done = done
        raise err from None
    return done
