"""A local forge speaking the subset of GitHub's pull-request API that Longshot's delivery through pull requests
uses, over real git: each project is a bare repository on disk (``sample_repo.make``), a pull request's head is
whatever its branch points at there, and a merge really merges (``git merge-tree``, ``commit-tree``,
``update-ref``) the head into the base branch.

Served under ``/github`` (the API base a client is given), token in ``Authorization: Bearer``:

* ``GET /repos/{o}/{r}/pulls`` (``state``, ``head`` = ``owner:branch``, ``base``), ``POST /repos/{o}/{r}/pulls``;
* ``GET /repos/{o}/{r}/pulls/{n}`` (``state``, ``merged``, ``merge_commit_sha``, ``head.sha``, ``mergeable``,
  ``mergeable_state``);
* ``GET /repos/{o}/{r}/pulls/{n}/reviews``, ``GET .../reviews/{id}/comments``;
* ``PUT /repos/{o}/{r}/pulls/{n}/merge`` (``merge_method``, ``sha``): with branch protection on (the default), 405
  until an approving review is the latest word of some reviewer and no changes-requested review stands; 409 when
  ``sha`` is not the head; 405 when the head does not merge cleanly;
* ``POST /repos/{o}/{r}/statuses/{sha}``, ``GET /repos/{o}/{r}/commits/{sha}/statuses``,
  ``GET /repos/{o}/{r}/commits/{ref}/status`` (the latest of each context);
* ``POST /repos/{o}/{r}/check-runs`` (a CI posting its verdict, as GitHub Actions does),
  ``GET /repos/{o}/{r}/commits/{ref}/check-runs`` (the latest run of each name, newest first; ``per_page`` and
  ``Link: rel=next`` pagination);
* ``POST /repos/{o}/{r}/issues/{n}/labels``;
* ``POST /graphql``: GitHub's GraphQL endpoint, for the one mutation GitHub offers auto-merge by,
  ``enablePullRequestAutoMerge`` (``pullRequestId`` the pull request's ``node_id``, ``mergeMethod``,
  ``expectedHeadOid``). Each request is first checked against GitHub's published schema
  (``github_graphql``; a refused one is recorded in :attr:`ForgeServer.graphql_problems` and fails the contract
  check), then executed on it with graphql-core. The pull request's ``auto_merge`` shows it.

Auto-merge (GitHub's mutation, GitLab's ``PUT .../merge`` with ``merge_when_pipeline_succeeds``): the forge merges
the pull request as soon as its head's :attr:`ForgeServer.required_checks` are all green (at once when there are
none) and branch protection is satisfied; it is looked at before each answer. GitLab cancels it when a required
check fails (``merge_when_pipeline_succeeds`` false again), as it does when the pipeline fails; on GitHub a person
turns it off (:meth:`ForgeServer.disable_auto_merge`).

and of GitLab's merge-request API under ``/gitlab/api/v4`` (token in ``PRIVATE-TOKEN``; ``{id}`` the URL-encoded
path): ``GET``/``POST /projects/{id}/merge_requests`` (``state=opened``, ``source_branch``, ``target_branch``),
``GET /projects/{id}/merge_requests/{iid}`` (``state`` opened/closed/merged, ``sha``, ``merge_commit_sha``,
``detailed_merge_status``), ``GET .../approvals`` (``approved_by``), ``PUT .../merge`` (``sha``, ``squash``; 405
until approved, 409 on a moved head, 406 on a conflict), ``POST /projects/{id}/statuses/{sha}`` (``state``,
``name``), ``GET .../discussions`` (``notes`` with ``resolvable``, ``resolved``, ``position.head_sha``,
``new_path``, ``new_line``), ``GET /projects/{id}/repository/commits/{sha}/statuses`` (the latest of each name)
and ``GET /projects/{id}/pipelines?sha=`` (the commit's one external pipeline, as GitLab makes for statuses posted
without a pipeline: failed if a status failed, running while one runs, success when all succeeded). An approval
is :meth:`ForgeServer.review` with ``APPROVED``; a diff discussion :meth:`ForgeServer.discuss`, resolved by
:meth:`ForgeServer.resolve`.

Who may decide, as the real forges say it: each GitHub review carries ``author_association`` (``OWNER``,
``MEMBER``, ``COLLABORATOR`` for the accounts in :attr:`ForgeServer.access` with Developer (30) or more, else
``NONE``), each GitLab user an ``id``, and ``GET /projects/{id}/members/all/{user_id}`` answers the member's
``access_level`` (404 for a stranger). Branch protection, like GitHub's and GitLab's, counts only approvals of
accounts with write access.

The test drives the rest: :meth:`ForgeServer.review` (an approval or a changes-requested review, with inline
comments), :meth:`ForgeServer.merge_as_human`, :meth:`ForgeServer.close`. Every request is recorded
(``tracker_server.JsonApiServer``, the tracker's HTTP scaffolding). The issue API stays in ``tracker_server.py``.
"""

from __future__ import annotations

import json
import subprocess
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import graphql
from tracker_server import JsonApiServer

import github_graphql
import github_wire as gw

GIT_ENV = {"GIT_AUTHOR_NAME": "forge", "GIT_AUTHOR_EMAIL": "forge@example.com", "GIT_COMMITTER_NAME": "forge",
           "GIT_COMMITTER_EMAIL": "forge@example.com", "PATH": "/usr/bin:/bin"}


@dataclass
class Pull:
    number: int
    head: str
    base: str
    title: str
    body: str = ""
    state: str = "open"
    merged: bool = False
    merge_commit: str | None = None
    merged_by: str | None = None
    last_head: str | None = None
    """The head commit when the pull request was merged (GitHub's ``head.sha`` stays that commit after a merge)."""
    labels: list[str] = field(default_factory=list)
    reviews: list[dict[str, Any]] = field(default_factory=list)
    comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    discussions: list[dict[str, Any]] = field(default_factory=list)
    auto_merge: str | None = None
    """The merge method auto-merge is on with; None when off."""
    auto_merge_off: str = ""
    """Why the forge turned auto-merge off (GitLab's ``detailed_merge_status`` then)."""
    auto_merge_by: str = ""
    """The forge auto-merge was turned on through: ``github`` or ``gitlab`` (which cancels it on a failed check)."""


@dataclass
class Repo:
    path: str
    git_dir: Path
    pulls: dict[int, Pull] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    check_runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class ForgeServer(JsonApiServer):
    def __init__(self, token: str) -> None:
        super().__init__()
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.protected = True
        """Branch protection: approvals required, no changes requested standing."""
        self.required_approvals = 1
        self._next = 1
        self._check_ids = 0
        self.next_link: str | None = None
        """The ``Link: rel=next`` of the answer being made (a paginated listing)."""
        self.access: dict[str, int] = {"alice": 50, "bob": 40, "carol": 30, "dave": 30}
        """GitLab access level per account (50 Owner, 40 Maintainer, 30 Developer, 20 Reporter); anyone else is a
        stranger (GitHub ``author_association: NONE``, not a GitLab member)."""
        self.user_ids: dict[str, int] = {}
        self.required_checks: list[str] = []
        """Status contexts (or check run names) that must be green on the head before auto-merge merges."""
        self.graphql_problems: list[str] = []
        """Every GraphQL request GitHub's published schema refuses (the contract check fails on any)."""

    def association(self, user: str) -> str:
        level = self.access.get(user, 0)
        return "OWNER" if level >= 50 else "MEMBER" if level >= 40 else "COLLABORATOR" if level >= 30 else (
            "CONTRIBUTOR" if level else "NONE")

    def user_id(self, user: str) -> int:
        return self.user_ids.setdefault(user, 9000 + len(self.user_ids))

    # --- set-up and the test's hand ----------------------------------------------------------------

    @property
    def github_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/github"

    @property
    def gitlab_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/gitlab/api/v4"

    def repo(self, path: str, url: str) -> Repo:
        """Serve the bare repository at ``url`` (``file://...``) as project ``path`` (``owner/name``)."""
        repo = Repo(path, Path(url.removeprefix("file://")))
        self.repos[path] = repo
        return repo

    def pulls(self, path: str) -> list[Pull]:
        with self.lock:
            return list(self.repos[path].pulls.values())

    def head_of(self, path: str, ref: str) -> str | None:
        r = self._git(self.repos[path], "rev-parse", "--verify", "-q", f"refs/heads/{ref}^{{commit}}", check=False)
        return r.stdout.strip() or None

    def review(self, path: str, number: int, state: str, body: str = "", *, user: str = "alice",
               comments: list[dict[str, Any]] | None = None) -> None:
        """Submit a review on the pull request's current head (``APPROVED``, ``CHANGES_REQUESTED``, ``COMMENTED``)."""
        with self.lock:
            repo = self.repos[path]
            pull = repo.pulls[number]
            rid = 100 + sum(len(p.reviews) for p in repo.pulls.values()) + 1
            pull.reviews.append({"id": rid, "user": {"login": user, "id": self.user_id(user)}, "state": state,
                                 "body": body, "commit_id": self.head_of(path, pull.head),
                                 "author_association": self.association(user)})
            pull.comments[rid] = [gw.review_comment(path, number, 900 + 10 * rid + n, review_id=rid,
                                                    body=str(c.get("body") or ""), file=str(c.get("path") or ""),
                                                    line=c.get("line"), commit_id=pull.reviews[-1]["commit_id"] or "",
                                                    login=user, association=self.association(user))
                                  for n, c in enumerate(comments or [])]

    def discuss(self, path: str, number: int, body: str, *, user: str = "alice", file: str = "", line: int = 1
                ) -> str:
        """A GitLab diff discussion (resolvable, unresolved) on the merge request's current head; its id."""
        with self.lock:
            repo = self.repos[path]
            pull = repo.pulls[number]
            did = f"d{len(pull.discussions) + 1}"
            position = {"head_sha": self.head_of(path, pull.head), "new_path": file or None,
                        "new_line": line if file else None, "position_type": "text"}
            pull.discussions.append({"id": did, "individual_note": False, "notes": [
                {"id": 500 + len(pull.discussions), "body": body,
                 "author": {"username": user, "id": self.user_id(user)}, "system": False,
                 "resolvable": True, "resolved": False, "position": position}]})
            return did

    def resolve(self, path: str, number: int, discussion: str) -> None:
        with self.lock:
            for d in self.repos[path].pulls[number].discussions:
                if d["id"] == discussion:
                    for n in d["notes"]:
                        n["resolved"] = True

    def merge_as_human(self, path: str, number: int) -> str:
        """A person presses the merge button (branch protection binds Longshot's token, not an admin)."""
        with self.lock:
            status, payload = self._merge(self.repos[path], number, "merge", None, admin=True)
            assert status == 200, payload
            return str(payload["sha"])

    def close(self, path: str, number: int) -> None:
        with self.lock:
            self.repos[path].pulls[number].state = "closed"

    def ci_status(self, path: str, sha: str, context: str, state: str) -> None:
        """The repository's CI reports ``state`` under ``context`` on ``sha`` (a commit status)."""
        with self.lock:
            self.repos[path].statuses.setdefault(sha, []).append({"context": context, "state": state})

    def disable_auto_merge(self, path: str, number: int) -> None:
        """A person turns auto-merge off on the pull request."""
        with self.lock:
            pull = self.repos[path].pulls[number]
            pull.auto_merge, pull.auto_merge_off = None, "auto-merge disabled by a person"

    def check_contract(self) -> None:
        """AssertionError unless every GitHub REST exchange keeps GitHub's published OpenAPI description and every
        GraphQL request its published GraphQL schema."""
        assert not self.graphql_problems, f"GraphQL requests GitHub's schema refuses: {self.graphql_problems[:10]}"
        super().check_contract()

    def github_exchanges(self) -> list[Any]:
        """The REST exchanges (``/github/graphql`` is checked against the GraphQL schema instead)."""
        return [x for x in super().github_exchanges() if x.path != "/graphql"]

    def statuses_of(self, path: str, sha: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.repos[path].statuses.get(sha, []))

    # --- serving ----------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict[str, str], headers: Any,
                body: Any) -> tuple[int, Any, dict[str, str]]:
        self.next_link = None
        for repo in self.repos.values():  # the forge's own merges: auto-merge whose conditions hold now
            for pull in repo.pulls.values():
                self._auto(repo, pull)
        status, payload = self._route(method, path, query, headers, body)
        return status, payload, ({"Link": f'<{self.next_link}>; rel="next"'} if self.next_link else {})

    def _route(self, method: str, path: str, query: dict[str, str], headers: Any, body: Any) -> tuple[int, Any]:
        if path.startswith("/gitlab/api/v4/"):
            return self._gitlab(method, path.removeprefix("/gitlab/api/v4/"), query, headers, body)
        if not path.startswith("/github/"):
            return 404, gw.error("Not Found", status=404)
        if (headers.get("authorization") or "").removeprefix("Bearer ") != self.token:
            return 401, gw.error("Bad credentials", status=401)
        if path == "/github/graphql" and method == "POST":
            return self._graphql(body)
        p = path.removeprefix("/github/").strip("/").split("/")
        if len(p) < 4 or p[0] != "repos" or f"{p[1]}/{p[2]}" not in self.repos:
            return 404, gw.error("Not Found", status=404)
        repo = self.repos[f"{p[1]}/{p[2]}"]
        rest = p[3:]
        if rest == ["pulls"] and method == "GET":
            state = query.get("state", "open")
            head = query.get("head", "")
            owner, _, branch = head.partition(":")
            found = [self._github_pull(repo, x, full=False) for x in repo.pulls.values()
                     if (state == "all" or x.state == state) and (not head or (owner == p[1] and x.head == branch))
                     and (not query.get("base") or x.base == query["base"])]
            return 200, found
        if rest == ["pulls"] and method == "POST":
            if not isinstance(body, dict) or not body.get("head") or not body.get("base") or not body.get("title"):
                return 422, gw.error("Validation Failed", status=422)
            if self.head_of(repo.path, body["head"]) is None:
                return 422, gw.error("Validation Failed: head does not exist", status=422)
            if any(x.head == body["head"] and x.base == body["base"] and x.state == "open"
                   for x in repo.pulls.values()):
                return 422, gw.error(f"A pull request already exists for {p[1]}:{body['head']}.", status=422)
            number = self._next
            self._next += 1
            repo.pulls[number] = Pull(number, body["head"], body["base"], body["title"], body.get("body") or "")
            return 201, self._github_pull(repo, repo.pulls[number])
        if len(rest) >= 2 and rest[0] == "pulls" and rest[1].isdigit():
            pull = repo.pulls.get(int(rest[1]))
            if pull is None:
                return 404, gw.error("Not Found", status=404)
            if rest[2:] == [] and method == "GET":
                return 200, self._github_pull(repo, pull)
            if rest[2:] == ["reviews"] and method == "GET":
                return 200, [gw.review(repo.path, pull.number, r["id"], login=r["user"]["login"],
                                       uid=r["user"]["id"], state=r["state"], body=r["body"],
                                       commit_id=r["commit_id"], association=r["author_association"])
                             for r in pull.reviews]
            if len(rest) == 5 and rest[2] == "reviews" and rest[4] == "comments" and rest[3].isdigit():
                return 200, list(pull.comments.get(int(rest[3]), []))
            if rest[2:] == ["merge"] and method == "PUT":
                body = body if isinstance(body, dict) else {}
                return self._merge(repo, pull.number, body.get("merge_method", "merge"), body.get("sha"))
        if len(rest) == 2 and rest[0] == "statuses" and method == "POST":
            if not isinstance(body, dict) or body.get("state") not in ("success", "failure", "error", "pending"):
                return 422, gw.error("Validation Failed", status=422)
            sid = sum(len(v) for v in repo.statuses.values()) + 1
            posted = gw.status(repo.path, rest[1], sid, state=body["state"], context=body.get("context") or "default",
                               description=body.get("description"), target_url=body.get("target_url"))
            repo.statuses.setdefault(rest[1], []).append(posted)
            return 201, posted
        if len(rest) == 3 and rest[0] == "commits" and rest[2] == "statuses" and method == "GET":
            return 200, list(reversed(repo.statuses.get(rest[1], [])))
        if len(rest) == 3 and rest[0] == "commits" and rest[2] == "status" and method == "GET":
            latest: dict[str, dict[str, Any]] = {}
            for x in reversed(repo.statuses.get(rest[1], [])):
                latest.setdefault(x["context"], x)
            return 200, gw.combined_status(repo.path, rest[1], list(latest.values()))
        if rest == ["check-runs"] and method == "POST":
            if not isinstance(body, dict) or not body.get("name") or not body.get("head_sha"):
                return 422, gw.error("Validation Failed", status=422)
            cid = self._check_ids = self._check_ids + 1  # answered under ``self.lock``
            conclusion = body.get("conclusion")
            run = gw.check_run(repo.path, body["head_sha"], cid, name=body["name"],
                               status="completed" if conclusion else body.get("status", "queued"),
                               conclusion=conclusion, details_url=body.get("details_url"),
                               title=(body.get("output") or {}).get("title"),
                               summary=(body.get("output") or {}).get("summary"),
                               external_id=body.get("external_id", ""))
            repo.check_runs.setdefault(body["head_sha"], []).append(run)
            return 201, run
        if len(rest) == 3 and rest[0] == "commits" and rest[2] == "check-runs" and method == "GET":
            runs: dict[str, dict[str, Any]] = {}
            for x in reversed(repo.check_runs.get(rest[1], [])):
                runs.setdefault(x["name"], x)
            listed = list(runs.values())
            per_page = max(1, min(100, int(query.get("per_page", "30"))))
            page = max(1, int(query.get("page", "1")))
            chunk = listed[(page - 1) * per_page: page * per_page]
            self.next_link = (f"{self.github_url}/repos/{repo.path}/commits/{rest[1]}/check-runs?per_page={per_page}"
                              f"&page={page + 1}") if page * per_page < len(listed) else None
            return 200, {"total_count": len(listed), "check_runs": chunk}
        if len(rest) == 3 and rest[0] == "issues" and rest[2] == "labels" and method == "POST" and rest[1].isdigit():
            pull = repo.pulls.get(int(rest[1]))
            if pull is None:
                return 404, gw.error("Not Found", status=404)
            pull.labels += [str(x) for x in (body or {}).get("labels", [])]
            return 200, [gw.label(repo.path, x) for x in pull.labels]
        return 404, gw.error("Not Found", status=404)

    def _gitlab(self, method: str, path: str, query: dict[str, str], headers: Any, body: Any) -> tuple[int, Any]:
        if (headers.get("private-token") or "") != self.token:
            return 401, {"message": "401 Unauthorized"}
        p = path.strip("/").split("/")
        repo = self.repos.get(urllib.parse.unquote(p[1])) if len(p) >= 3 and p[0] == "projects" else None
        if repo is None:
            return 404, {"message": "404 Project Not Found"}
        rest = p[2:]
        if len(rest) == 3 and rest[:2] == ["members", "all"] and rest[2].isdigit() and method == "GET":
            user = next((u for u, i in self.user_ids.items() if i == int(rest[2])), None)
            if user is None or user not in self.access:
                return 404, {"message": "404 Not found"}
            return 200, {"id": int(rest[2]), "username": user, "access_level": self.access[user], "state": "active"}
        if rest == ["merge_requests"] and method == "GET":
            state = {"opened": "open", "closed": "closed"}.get(query.get("state", "opened"), "open")
            return 200, [self._gitlab_wire(repo, x) for x in repo.pulls.values()
                         if x.state == state and not x.merged
                         and x.head == query.get("source_branch", x.head) and x.base == query.get("target_branch",
                                                                                                  x.base)]
        if rest == ["merge_requests"] and method == "POST":
            if not isinstance(body, dict) or not body.get("source_branch") or not body.get("target_branch"):
                return 400, {"message": "source_branch is missing"}
            if any(x.head == body["source_branch"] and x.state == "open" for x in repo.pulls.values()):
                return 409, {"message": ["Another open merge request already exists for this source branch"]}
            number = self._next
            self._next += 1
            pull = Pull(number, body["source_branch"], body["target_branch"], body.get("title") or "",
                        body.get("description") or "",
                        labels=[x for x in str(body.get("labels") or "").split(",") if x])
            repo.pulls[number] = pull
            return 201, self._gitlab_wire(repo, pull)
        if len(rest) >= 2 and rest[0] == "merge_requests" and rest[1].isdigit():
            pull = repo.pulls.get(int(rest[1]))
            if pull is None:
                return 404, {"message": "404 Not found"}
            if rest[2:] == [] and method == "GET":
                return 200, self._gitlab_wire(repo, pull)
            if rest[2:] == ["approvals"] and method == "GET":
                return 200, {"approved": self._approved(pull), "approved_by": [
                    {"user": {"username": r["user"]["login"], "id": r["user"]["id"]}} for r in pull.reviews
                    if r["state"] == "APPROVED"]}
            if rest[2:] == ["discussions"] and method == "GET":
                return 200, list(pull.discussions)
            if rest[2:] == ["merge"] and method == "PUT":
                body = body if isinstance(body, dict) else {}
                how = "squash" if body.get("squash") else "merge"
                if body.get("merge_when_pipeline_succeeds") is True or body.get("auto_merge") is True:
                    return self._gitlab_auto_merge(repo, pull, how, body.get("sha"))
                status, payload = self._merge(repo, pull.number, how, body.get("sha"))
                if status == 200:
                    return 200, self._gitlab_wire(repo, pull)
                if status == 405 and "not mergeable" in str(payload):
                    return 406, {"message": "Branch cannot be merged"}
                return status, {"message": f"{status} {payload['message']}"}
        if len(rest) == 2 and rest[0] == "statuses" and method == "POST":
            if not isinstance(body, dict) or body.get("state") not in ("pending", "running", "success", "failed",
                                                                        "canceled"):
                return 400, {"message": "state is invalid"}
            repo.statuses.setdefault(rest[1], []).append({**body, "context": body.get("name")})
            return 201, {"id": len(repo.statuses[rest[1]]), **body}
        if len(rest) == 4 and rest[:2] == ["repository", "commits"] and rest[3] == "statuses" and method == "GET":
            latest: dict[str, dict[str, Any]] = {}
            for x in reversed(repo.statuses.get(rest[2], [])):
                latest.setdefault(x["context"], x)
            return 200, [{"id": i + 1, "sha": rest[2], "name": x["context"], "status": x["state"],
                          "target_url": x.get("target_url"), "description": x.get("description"),
                          "allow_failure": False} for i, x in enumerate(latest.values())]
        if rest == ["pipelines"] and method == "GET":
            sha = query.get("sha", "")
            posted = repo.statuses.get(sha, [])
            if not posted:
                return 200, []
            latest = {}
            for x in reversed(posted):
                latest.setdefault(x["context"], x)
            states = {x["state"] for x in latest.values()}
            status = ("failed" if states & {"failed", "canceled"} else "running" if states - {"success"}
                      else "success")
            return 200, [{"id": 700, "iid": 1, "project_id": 1, "sha": sha, "ref": None, "status": status,
                          "source": "external", "web_url": f"https://gitlab.example/{repo.path}/-/pipelines/700"}]
        return 404, {"message": "404 Not found"}

    def _gitlab_wire(self, repo: Repo, pull: Pull) -> dict[str, Any]:
        wire = self._wire(repo, pull)
        state = "merged" if pull.merged else "opened" if pull.state == "open" else "closed"
        detailed = {"dirty": "conflict", "blocked": "not_approved", "clean": "mergeable"}.get(
            wire["mergeable_state"], "unchecked")
        return {"iid": pull.number, "id": 1000 + pull.number, "title": pull.title, "description": pull.body,
                "state": state, "source_branch": pull.head, "target_branch": pull.base,
                "web_url": f"https://gitlab.example/{repo.path}/-/merge_requests/{pull.number}",
                "sha": wire["head"]["sha"], "merge_commit_sha": pull.merge_commit,
                "detailed_merge_status": (pull.auto_merge_off or detailed) if pull.state == "open" else "not_open",
                "labels": pull.labels, "merge_when_pipeline_succeeds": pull.auto_merge is not None}

    # --- auto-merge --------------------------------------------------------------------------------

    def _checks(self, repo: Repo, sha: str | None) -> str:
        """``success`` when every required check is green on ``sha``, ``failure`` when one failed, else
        ``pending``."""
        latest: dict[str, str] = {}
        for x in repo.statuses.get(sha or "", []):
            latest[x["context"]] = x["state"]
        for run in repo.check_runs.get(sha or "", []):
            latest[run["name"]] = run.get("conclusion") or "pending"
        verdicts = [latest.get(name, "pending") for name in self.required_checks]
        if any(v in ("failure", "failed", "error", "canceled", "cancelled", "timed_out") for v in verdicts):
            return "failure"
        return "success" if all(v == "success" for v in verdicts) else "pending"

    def _auto(self, repo: Repo, pull: Pull) -> None:
        """Merge ``pull`` when auto-merge is on and its head's required checks and branch protection pass (GitLab
        cancels it on a failed check)."""
        if pull.auto_merge is None or pull.state != "open":
            return
        verdict = self._checks(repo, self.head_of(repo.path, pull.head))
        if verdict == "failure" and pull.auto_merge_by == "gitlab":
            pull.auto_merge, pull.auto_merge_off = None, "ci_must_pass"
            return
        if verdict != "success" or (self.protected and not self._approved(pull)):
            return
        status, _ = self._merge(repo, pull.number, pull.auto_merge, None, admin=True)
        if status == 200:
            pull.merged_by, pull.auto_merge = "auto-merge", None

    def _gitlab_auto_merge(self, repo: Repo, pull: Pull, how: str, sha: str | None) -> tuple[int, Any]:
        if pull.state != "open":
            return 405, {"message": "405 Method Not Allowed"}
        if sha and sha != self.head_of(repo.path, pull.head):
            return 409, {"message": "SHA does not match HEAD of source branch"}
        pull.auto_merge, pull.auto_merge_off, pull.auto_merge_by = how, "", "gitlab"
        self._auto(repo, pull)  # nothing pending: merged at once
        wire = self._gitlab_wire(repo, pull)
        return 200, {**wire, "detailed_merge_status": "mergeable" if pull.state == "open" else "not_open"}

    def _graphql(self, body: Any) -> tuple[int, Any]:
        raw = json.dumps(body).encode()
        problems = github_graphql.request_problems(raw)
        if problems:
            self.graphql_problems += problems
            return 200, {"errors": [{"message": p} for p in problems]}
        result = graphql.graphql_sync(github_graphql.schema(), body["query"], root_value=_Mutations(self),
                                      variable_values=body.get("variables"))
        return 200, result.formatted

    def _enable_auto_merge(self, node: str, method: str, head: str | None) -> dict[str, Any]:
        for repo in self.repos.values():
            for pull in repo.pulls.values():
                if gw.node_id("PR", pull.number) == node:
                    if pull.state != "open":
                        raise ValueError("Pull request is closed")
                    if head and head != self.head_of(repo.path, pull.head):
                        raise ValueError("Head sha didn't match expected head sha")
                    pull.auto_merge, pull.auto_merge_off, pull.auto_merge_by = method.lower(), "", "github"
                    self._auto(repo, pull)
                    return {"number": pull.number, "merged": pull.merged,
                            "state": "MERGED" if pull.merged else "OPEN",
                            "autoMergeRequest": None if pull.auto_merge is None else {
                                "enabledAt": "2026-01-01T00:00:00Z", "mergeMethod": method}}
        raise ValueError(f"Could not resolve to a node with the global id of '{node}'")

    # --- the pull requests over git ---------------------------------------------------------------

    def _git(self, repo: Repo, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "--git-dir", str(repo.git_dir), *args], env=GIT_ENV, capture_output=True,
                              text=True, check=check)

    def _tree(self, repo: Repo, base: str, head: str) -> str | None:
        r = self._git(repo, "merge-tree", "--write-tree", base, head, check=False)
        return r.stdout.split("\n", 1)[0].strip() if r.returncode == 0 else None

    def _approved(self, pull: Pull) -> bool:
        latest: dict[str, str] = {}
        for r in pull.reviews:
            if r["state"] in ("APPROVED", "CHANGES_REQUESTED", "DISMISSED") and \
                    self.access.get(r["user"]["login"], 0) >= 30:  # protection counts writers only
                latest[r["user"]["login"]] = r["state"]
        return (sum(v == "APPROVED" for v in latest.values()) >= self.required_approvals
                and "CHANGES_REQUESTED" not in latest.values())

    def _github_pull(self, repo: Repo, pull: Pull, *, full: bool = True) -> dict[str, Any]:
        """GitHub's ``pull-request`` (``full``) or ``pull-request-simple`` (in a listing)."""
        wire = self._wire(repo, pull)
        return gw.pull_request(repo.path, pull.number, title=pull.title, body=pull.body or None, state=pull.state,
                               head_ref=pull.head, head_sha=wire["head"]["sha"] or "0" * 40, base_ref=pull.base,
                               base_sha=wire["base"]["sha"] or "0" * 40, merged=pull.merged,
                               merge_commit_sha=pull.merge_commit,
                               merged_by=pull.merged_by.replace(" ", "-") if pull.merged_by else None,
                               mergeable=wire["mergeable"], mergeable_state=wire["mergeable_state"],
                               labels=pull.labels, full=full, auto_merge=pull.auto_merge)

    def _wire(self, repo: Repo, pull: Pull) -> dict[str, Any]:
        head = self.head_of(repo.path, pull.head) if not pull.merged else pull.last_head
        base = self.head_of(repo.path, pull.base)
        clean = bool(head and base and self._tree(repo, base, head))
        state = ("dirty" if not clean else "blocked" if self.protected and not self._approved(pull) else "clean")
        return {"number": pull.number, "title": pull.title, "body": pull.body, "state": pull.state,
                "html_url": f"https://github.example/{repo.path}/pull/{pull.number}",
                "merged": pull.merged, "merged_at": "2026-01-01T00:00:00Z" if pull.merged else None,
                "merge_commit_sha": pull.merge_commit, "merged_by": pull.merged_by,
                "head": {"ref": pull.head, "sha": head}, "base": {"ref": pull.base, "sha": base},
                "mergeable": None if pull.merged or pull.state != "open" else clean,
                "mergeable_state": state if pull.state == "open" else "unknown",
                "labels": [{"name": x} for x in pull.labels]}

    def _merge(self, repo: Repo, number: int, method: str, sha: str | None, *, admin: bool = False
               ) -> tuple[int, Any]:
        pull = repo.pulls[number]
        if pull.state != "open":
            return 405, {"message": "Pull Request is not mergeable"}
        head = self.head_of(repo.path, pull.head)
        base = self.head_of(repo.path, pull.base)
        if head is None or base is None:
            return 422, {"message": "Validation Failed"}
        if sha and sha != head:
            return 409, {"message": "Head branch was modified. Review and try the merge again."}
        if self.protected and not admin and not self._approved(pull):
            return 405, {"message": f"At least {self.required_approvals} approving review"
                                    f"{'s are' if self.required_approvals > 1 else ' is'} required by reviewers with "
                                    "write access."}
        tree = self._tree(repo, base, head)
        if tree is None:
            return 405, {"message": "Pull Request is not mergeable"}
        message = f"Merge pull request #{number} from {pull.head}\n\n{pull.title}"
        parents = ["-p", base] if method == "squash" else ["-p", base, "-p", head]
        commit = self._git(repo, "commit-tree", tree, *parents, "-m", message).stdout.strip()
        self._git(repo, "update-ref", f"refs/heads/{pull.base}", commit, base)
        pull.state, pull.merged, pull.merge_commit, pull.last_head = "closed", True, commit, head
        pull.merged_by = "a person" if admin else "longshot"
        return 200, gw.merge_result(commit)


class _Mutations:
    """The root of GitHub's mutations as the stand-in executes them (graphql-core's default resolver calls these
    with the field's arguments)."""

    def __init__(self, server: ForgeServer) -> None:
        self.server = server

    def enablePullRequestAutoMerge(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        return {"clientMutationId": input.get("clientMutationId"), "pullRequest": self.server._enable_auto_merge(
            input["pullRequestId"], input.get("mergeMethod") or "MERGE", input.get("expectedHeadOid"))}


@contextmanager
def forge_server(token: str, *, contract: bool = True) -> Iterator[ForgeServer]:
    """The forge, serving until the block ends; then (``contract``, unless the block failed) every GitHub exchange
    it had is checked against GitHub's published description (:meth:`JsonApiServer.check_contract`)."""
    server = ForgeServer(token)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    if contract:
        server.check_contract()
