"""A local issue tracker speaking the subset of GitHub's and GitLab's REST APIs that Longshot uses.

One HTTP server on 127.0.0.1 serves both:

* GitHub under ``/github`` (the API base a client is given): ``GET /repos/{owner}/{name}/issues``
  (``state``, ``labels`` = all of them, ``per_page``, ``page``; pull requests are listed too, with a
  ``pull_request`` key, as GitHub does; ``Link`` rel=next/last), ``GET``/``POST
  /repos/{owner}/{name}/issues/{number}/comments``, ``PATCH /repos/{owner}/{name}/issues/{number}`` (``state``);
  issues carry ``assignees``, ``milestone``, ``user`` (``login``, ``id``) and ``author_association`` (``OWNER``,
  ``MEMBER``, ``COLLABORATOR`` for the project's members with Developer access or more, else ``NONE``); token in
  ``Authorization: Bearer``.
* GitLab under ``/gitlab/api/v4``: ``GET /projects/{id}/issues`` (``state=opened``, ``labels``,
  ``per_page``, ``page``; ``X-Next-Page``/``X-Page``/``X-Total-Pages``, and ``Link`` unless turned off),
  ``GET``/``POST /projects/{id}/issues/{iid}/notes``,
  ``PUT /projects/{id}/issues/{iid}`` (``state_event``), ``GET /projects/{id}/members/all/{user_id}``
  (``access_level``; 404 for a stranger); issues carry ``author`` (``username``, ``id``); ``{id}`` is the
  numeric id or the URL-encoded path; token in ``PRIVATE-TOKEN``.

* Jira under ``/jira`` (REST API v2): ``GET /rest/api/2/search/jql`` (Cloud: ``nextPageToken``) and
  ``GET /rest/api/2/search`` (Data Center: ``startAt``), with ``jql`` read for the project, ``statusCategory != Done``
  and ``labels = "..."``; ``GET``/``POST /rest/api/2/issue/{key}/comment``; ``GET /rest/api/2/issue/{key}``
  (``fields=status``, ``expand=transitions``); ``POST /rest/api/2/issue/{key}/transitions``;
  ``GET /rest/api/2/user/permission/search`` (``EDIT_ISSUES``: members with Developer access or more). Accounts
  are named by their account id (the member names). Basic auth (any address, the token) or a bearer token.
* Linear at ``/linear/graphql``: every request is executed by graphql-core on Linear's schema as vendored
  (tests/fixtures/contracts/linear-schema.graphql), so a query the schema does not have is refused as Linear would
  refuse it, and every answer has the schema's shape. ``issues`` (the filter's team key, state types and label
  names), ``issue(id: "KEY-n")``, ``workflowStates``, ``commentCreate``, ``issueUpdate``. The API key in
  ``Authorization`` as it is.

Rate limits as the real ones report them, on a clock the test controls: :meth:`TrackerServer.rate_limit`
refuses the next requests (GitHub: 403 with ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``, or
``Retry-After`` for a secondary limit; GitLab: 429 with ``RateLimit-Reset`` or ``Retry-After``), and
:meth:`TrackerServer.budget` counts a request budget down in the headers and refuses when it is spent,
until its reset time. Every request is recorded (method, path, query, headers) for assertions.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import re
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import graphql

import forge_contract
import github_wire as gw

LINEAR_SCHEMA = Path(__file__).resolve().parents[1] / "fixtures" / "contracts" / "linear-schema.graphql"
JIRA_TRANSITIONS = [("11", "Start", "In Progress", "indeterminate"), ("31", "Finish", "Done", "done")]
LINEAR_STATES = [("st-todo", "Todo", "unstarted"), ("st-doing", "In Progress", "started"),
                 ("st-done", "Done", "completed"), ("st-no", "Canceled", "canceled")]


@dataclass
class FakeIssue:
    number: int
    title: str
    body: str = ""
    labels: list[str] = field(default_factory=list)
    state: str = "open"
    pull_request: bool = False
    comments: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    milestone: str | None = None
    author: str = "alice"
    linear_state: str | None = None
    """Linear: the id of the workflow state the issue was moved to (else Todo while open, Done when closed)."""


def user_id(name: str) -> int:
    """A stable user id per account name (what GitLab's members API takes)."""
    return 5000 + sum((i + 1) * ord(ch) for i, ch in enumerate(name))


@dataclass
class Project:
    """One project (a GitHub repository or a GitLab project) and its issues."""

    path: str
    id: int
    issues: dict[int, FakeIssue] = field(default_factory=dict)
    access: dict[str, int] = field(default_factory=lambda: {"alice": 50, "bob": 40, "carol": 30})
    """GitLab access level per member (50 Owner, 40 Maintainer, 30 Developer, 20 Reporter); others are strangers."""

    def association(self, user: str) -> str:
        level = self.access.get(user, 0)
        return "OWNER" if level >= 50 else "MEMBER" if level >= 40 else "COLLABORATOR" if level >= 30 else (
            "CONTRIBUTOR" if level else "NONE")

    def add(self, number: int, title: str, **fields: Any) -> FakeIssue:
        issue = FakeIssue(number, title, **fields)
        self.issues[number] = issue
        return issue


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any = None
    raw_query: tuple[tuple[str, str], ...] = ()
    raw_body: bytes = b""
    status: int = 0
    answer: bytes = b""
    answer_headers: tuple[tuple[str, str], ...] = ()
    """The answer as sent (status, JSON body, headers): what the contract check (tests/forge_contract.py) reads."""

    def exchange(self, prefix: str) -> forge_contract.Exchange:
        """This request and its answer for the contract check, its path relative to the API base ``prefix``."""
        return forge_contract.Exchange(self.method, self.path.removeprefix(prefix), self.raw_query, self.raw_body,
                                       self.status, self.answer, self.answer_headers,
                                       self.headers.get("content-type", "application/json"),
                                       tuple(self.headers.items()))


@dataclass
class _Limit:
    flavour: str  # "primary" (reset header) or "secondary" (Retry-After)
    count: int
    seconds: float


class JsonApiServer:
    """The HTTP scaffolding of the local JSON APIs (this tracker, ``forge_server.py``): a threaded server on
    127.0.0.1, every request recorded (:class:`Request`) and answered under :attr:`lock` by :meth:`_answer`."""

    def __init__(self) -> None:
        self.requests: list[Request] = []
        self.lock = threading.RLock()
        self._http = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._http.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._http.shutdown()
        self._http.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                server._serve(self, "GET")

            def do_POST(self) -> None:
                server._serve(self, "POST")

            def do_PATCH(self) -> None:
                server._serve(self, "PATCH")

            def do_PUT(self) -> None:
                server._serve(self, "PUT")

            def do_DELETE(self) -> None:
                server._serve(self, "DELETE")

        return Handler

    def _serve(self, h: BaseHTTPRequestHandler, method: str) -> None:
        parts = urllib.parse.urlsplit(h.path)
        query = dict(urllib.parse.parse_qsl(parts.query))
        length = int(h.headers.get("content-length") or 0)
        raw = h.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        request = Request(method, parts.path, query, {k.lower(): v for k, v in h.headers.items()}, body,
                          tuple(urllib.parse.parse_qsl(parts.query, keep_blank_values=True)), raw)
        with self.lock:
            self.requests.append(request)
            status, payload, headers = self._answer(method, parts.path, query, h.headers, body)
        data = b"" if status == 204 else json.dumps(payload).encode()
        with self.lock:  # whole, for a check that reads the answers while other requests are served
            request.status, request.answer, request.answer_headers = status, data, tuple(headers.items())
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        for name, value in headers.items():
            h.send_header(name, value)
        h.end_headers()
        h.wfile.write(data)

    def _answer(self, method: str, path: str, query: dict[str, str], headers: Any,
                body: Any) -> tuple[int, Any, dict[str, str]]:
        raise NotImplementedError

    def github_exchanges(self) -> list[forge_contract.Exchange]:
        """Every answered request to the GitHub API (under ``/github``) so far."""
        with self.lock:
            return [r.exchange("/github") for r in self.requests if r.path.startswith("/github/") and r.status]

    def check_contract(self) -> None:
        """AssertionError unless every GitHub exchange so far keeps GitHub's published description (requests and
        answers: tests/forge_contract.py)."""
        forge_contract.github().check(self.github_exchanges())


class TrackerServer(JsonApiServer):
    def __init__(self, clock: Callable[[], float], token: str) -> None:
        super().__init__()
        self.clock = clock
        self.token = token
        self.projects: dict[str, Project] = {}
        self.limits: list[_Limit] = []
        self.remaining: int | None = None
        self.reset_at = 0.0
        self.failures = 0
        """The next this many requests answer 502."""
        self.gitlab_link_header = True
        self.foreign_next: str | None = None
        """When set, the first listing page's next link points to this origin instead."""

    # --- set-up -----------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self._http.server_address[1]}"

    @property
    def github_url(self) -> str:
        return self.origin + "/github"

    @property
    def gitlab_url(self) -> str:
        return self.origin + "/gitlab/api/v4"

    @property
    def jira_url(self) -> str:
        return self.origin + "/jira"

    @property
    def linear_url(self) -> str:
        return self.origin + "/linear"

    def linear_event(self, secret: str, *, timestamp_ms: int, action: str = "create") -> tuple[bytes, dict[str, str]]:
        """A Linear ``Issue`` webhook delivery (body, headers) signed with ``secret`` (``Linear-Signature``)."""
        body = json.dumps({"action": action, "type": "Issue", "data": {"id": "x"},
                           "webhookTimestamp": timestamp_ms}).encode()
        return body, {"Linear-Signature": hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
                      "Linear-Event": "Issue", "Content-Type": "application/json"}

    @staticmethod
    def jira_event(secret: str) -> tuple[bytes, dict[str, str]]:
        """A Jira ``jira:issue_created`` webhook delivery (body, headers) signed with ``secret``."""
        body = json.dumps({"webhookEvent": "jira:issue_created", "issue": {"key": "PROJ-1"}}).encode()
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return body, {"X-Hub-Signature": f"sha256={digest}", "Content-Type": "application/json"}

    def project(self, path: str, id: int = 1) -> Project:
        project = Project(path=path, id=id)
        self.projects[path] = project
        return project

    def rate_limit(self, count: int = 1, *, seconds: float = 30, flavour: str = "primary") -> None:
        """Refuse the next ``count`` requests as rate limited for ``seconds`` from now."""
        self.limits.append(_Limit(flavour, count, seconds))

    def budget(self, remaining: int, *, reset_in: float) -> None:
        """Allow ``remaining`` more requests (reported in the headers), then refuse until the reset."""
        self.remaining = remaining
        self.reset_at = self.clock() + reset_in

    def api_requests(self) -> list[Request]:
        return list(self.requests)

    def issues_event(self, path: str, number: int, action: str = "opened") -> dict[str, Any]:
        """The ``issues`` webhook payload GitHub would deliver about issue ``number`` of project ``path`` now."""
        project = self.projects[path]
        with self.lock:
            return gw.issues_event(action, path, self._github_issue(project, project.issues[number]))

    @staticmethod
    def hook_headers(event: str, body: bytes, secret: str) -> dict[str, str]:
        """GitHub's delivery headers for ``body``, signed with ``secret`` (``X-Hub-Signature-256``)."""
        digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        return gw.hook_headers(event, f"sha256={digest}")

    # --- serving ----------------------------------------------------------------------------------

    def _answer(self, method: str, path: str, query: dict[str, str], headers: Any,
                body: Any) -> tuple[int, Any, dict[str, str]]:
        github = path.startswith("/github/")
        if path.startswith("/jira/"):
            return self._jira_call(method, path.removeprefix("/jira"), query, headers, body)
        if path == "/linear/graphql":
            return self._linear_call(method, headers, body)
        if not github and not path.startswith("/gitlab/api/v4/"):
            return 404, {"message": "Not Found"}, {}
        # authentication first, as the real APIs do
        given = (headers.get("authorization") or "").removeprefix("Bearer ") if github \
            else headers.get("private-token") or ""
        if given != self.token:
            return 401, {"message": "Bad credentials" if github else "401 Unauthorized"}, {}
        if self.failures > 0:
            self.failures -= 1
            return 502, {"message": "Bad gateway"}, {}
        limited = self._limited(github)
        if limited is not None:
            return limited
        extra = self._budget_headers(github)
        if extra is None:
            return self._refusal(github, self.reset_at - self.clock(), "primary")
        if github:
            status, payload, more = self._github(method, path.removeprefix("/github"), query, body)
        else:
            status, payload, more = self._gitlab(method, path.removeprefix("/gitlab/api/v4"), query, body)
        return status, payload, {**extra, **more}

    def _limited(self, github: bool) -> tuple[int, Any, dict[str, str]] | None:
        if not self.limits:
            return None
        limit = self.limits[0]
        limit.count -= 1
        if limit.count <= 0:
            self.limits.pop(0)
        return self._refusal(github, limit.seconds, limit.flavour)

    def _refusal(self, github: bool, seconds: float, flavour: str) -> tuple[int, Any, dict[str, str]]:
        reset = str(int(self.clock() + seconds))
        if github:
            if flavour == "secondary":
                return 403, {"message": "You have exceeded a secondary rate limit."}, {
                    "Retry-After": str(int(seconds))}
            return 403, {"message": "API rate limit exceeded"}, {
                "X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": reset}
        if flavour == "secondary":
            return 429, {"message": "Retry later"}, {"Retry-After": str(int(seconds))}
        return 429, {"message": "Retry later"}, {"RateLimit-Limit": "600", "RateLimit-Remaining": "0",
                                                 "RateLimit-Reset": reset}

    def _budget_headers(self, github: bool) -> dict[str, str] | None:
        if self.remaining is None:
            return {}
        if self.clock() >= self.reset_at:
            self.remaining = None
            return {}
        if self.remaining <= 0:
            return None
        self.remaining -= 1
        prefix = "X-RateLimit-" if github else "RateLimit-"
        return {f"{prefix}Remaining": str(self.remaining), f"{prefix}Reset": str(int(self.reset_at))}

    # --- the two APIs -----------------------------------------------------------------------------

    def _page(self, items: list[Any], query: dict[str, str]) -> tuple[list[Any], int, int]:
        per_page = max(1, min(int(query.get("per_page", "30")), 100))
        page = max(1, int(query.get("page", "1")))
        pages = max(1, -(-len(items) // per_page))
        return items[(page - 1) * per_page: page * per_page], page, pages

    def _link(self, base: str, query: dict[str, str], page: int, pages: int) -> dict[str, str]:
        links = []
        if page < pages:
            origin = self.foreign_next if (self.foreign_next and page == 1) else self.origin
            links.append(f'<{origin}{base}?{urllib.parse.urlencode({**query, "page": str(page + 1)})}>; rel="next"')
        links.append(f'<{self.origin}{base}?{urllib.parse.urlencode({**query, "page": str(pages)})}>; rel="last"')
        return {"Link": ", ".join(links)}

    def _selected(self, project: Project, query: dict[str, str], open_state: str) -> list[FakeIssue]:
        state = query.get("state", open_state)
        wanted = [label for label in query.get("labels", "").split(",") if label]
        return [i for _, i in sorted(project.issues.items())
                if (state == "all" or (i.state == "open") == (state == open_state))
                and all(label in i.labels for label in wanted)]

    def _github_issue(self, project: Project, i: FakeIssue) -> dict[str, Any]:
        return gw.issue(project.path, i.number, i.title, body=i.body or None, state=i.state, labels=i.labels,
                        assignees=i.assignees, milestone_title=i.milestone, author=i.author,
                        association=project.association(i.author), pull_request=i.pull_request,
                        comments=len(i.comments), author_id=user_id(i.author))

    def _github(self, method: str, path: str, query: dict[str, str],
                body: Any) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        if len(parts) < 4 or parts[0] != "repos" or f"{parts[1]}/{parts[2]}" not in self.projects:
            return 404, gw.error("Not Found", status=404), {}
        project = self.projects[f"{parts[1]}/{parts[2]}"]
        if parts[3:] == ["issues"] and method == "GET":
            items, page, pages = self._page(self._selected(project, query, "open"), query)
            payload = [self._github_issue(project, i) for i in items]
            return 200, payload, self._link("/github" + path, query, page, pages)
        if len(parts) == 5 and parts[3] == "issues" and parts[4].isdigit() and method == "PATCH":
            issue = project.issues.get(int(parts[4]))  # the standing intake closes an issue: state=closed
            if issue is None:
                return 404, gw.error("Not Found", status=404), {}
            if not isinstance(body, dict) or body.get("state") not in ("open", "closed"):
                return 422, gw.error("Validation Failed", status=422), {}
            issue.state = body["state"]
            return 200, self._github_issue(project, issue), {}
        if len(parts) == 6 and parts[3] == "issues" and parts[5] == "comments" and parts[4].isdigit():
            issue = project.issues.get(int(parts[4]))
            if issue is None:
                return 404, gw.error("Not Found", status=404), {}
            if method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"]:
                    return 422, gw.error("Validation Failed", status=422), {}
                issue.comments.append(body["body"])
                return 201, gw.issue_comment(project.path, issue.number, len(issue.comments), body["body"]), {}
            items, page, pages = self._page([gw.issue_comment(project.path, issue.number, n + 1, c)
                                             for n, c in enumerate(issue.comments)], query)
            return 200, items, self._link("/github" + path, query, page, pages)
        return 404, gw.error("Not Found", status=404), {}

    def _gitlab(self, method: str, path: str, query: dict[str, str],
                body: Any) -> tuple[int, Any, dict[str, str]]:
        parts = path.strip("/").split("/")
        if len(parts) < 3 or parts[0] != "projects":
            return 404, {"message": "404 Not found"}, {}
        key = urllib.parse.unquote(parts[1])
        project = next((p for p in self.projects.values() if key in (p.path, str(p.id))), None)
        if project is None:
            return 404, {"message": "404 Project Not Found"}, {}
        if parts[2:] == ["issues"] and method == "GET":
            items, page, pages = self._page(
                [i for i in self._selected(project, query, "opened") if not i.pull_request], query)
            payload = [{"iid": i.number, "id": 1000 + i.number, "title": i.title, "description": i.body or None,
                        "state": "opened" if i.state == "open" else "closed", "labels": list(i.labels),
                        "web_url": f"https://gitlab.example/{project.path}/-/issues/{i.number}",
                        "assignees": [{"username": a} for a in i.assignees],
                        "author": {"username": i.author, "id": user_id(i.author)},
                        "milestone": {"title": i.milestone} if i.milestone else None} for i in items]
            headers = {"X-Page": str(page), "X-Total-Pages": str(pages), "X-Per-Page": query.get("per_page", "20"),
                       "X-Next-Page": str(page + 1) if page < pages else ""}
            if self.gitlab_link_header:
                headers.update(self._link("/gitlab/api/v4" + path, query, page, pages))
            return 200, payload, headers
        if len(parts) == 5 and parts[2:4] == ["members", "all"] and parts[4].isdigit() and method == "GET":
            member = next((u for u in project.access if user_id(u) == int(parts[4])), None)
            if member is None:
                return 404, {"message": "404 Not found"}, {}
            return 200, {"id": int(parts[4]), "username": member, "access_level": project.access[member],
                         "state": "active"}, {}
        if len(parts) == 4 and parts[2] == "issues" and parts[3].isdigit() and method == "PUT":
            issue = project.issues.get(int(parts[3]))  # the standing intake closes an issue: state_event=close
            if issue is None:
                return 404, {"message": "404 Not found"}, {}
            event = body.get("state_event") if isinstance(body, dict) else None
            if event not in ("close", "reopen"):
                return 400, {"message": "state_event is invalid"}, {}
            issue.state = "closed" if event == "close" else "open"
            return 200, {"iid": issue.number, "state": "closed" if event == "close" else "opened"}, {}
        if len(parts) == 5 and parts[2] == "issues" and parts[4] == "notes" and parts[3].isdigit():
            issue = project.issues.get(int(parts[3]))
            if issue is None:
                return 404, {"message": "404 Not found"}, {}
            if method == "POST":
                if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"]:
                    return 400, {"message": "body is missing"}, {}
                issue.comments.append(body["body"])
                return 201, {"id": len(issue.comments), "body": body["body"]}, {}
            items, page, pages = self._page([{"id": n + 1, "body": c} for n, c in enumerate(issue.comments)], query)
            return 200, items, {"X-Next-Page": str(page + 1) if page < pages else ""}
        return 404, {"message": "404 Not found"}, {}


    # --- Jira -------------------------------------------------------------------------------------

    def _jira_call(self, method: str, path: str, query: dict[str, str], headers: Any,
                   body: Any) -> tuple[int, Any, dict[str, str]]:
        auth = headers.get("authorization") or ""
        given = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else ""
        if auth.startswith("Basic "):
            given = base64.b64decode(auth.removeprefix("Basic ")).decode().partition(":")[2]
        if given != self.token:
            return 401, {"errorMessages": ["You are not authenticated."]}, {}
        if self.failures > 0:
            self.failures -= 1
            return 502, {"errorMessages": ["Bad gateway"]}, {}
        if self.limits:
            limit = self.limits[0]
            limit.count -= 1
            if limit.count <= 0:
                self.limits.pop(0)
            return 429, {"errorMessages": ["Rate limit exceeded."]}, {"Retry-After": str(int(limit.seconds))}
        parts = path.strip("/").split("/")
        if parts[:3] != ["rest", "api", "2"]:
            return 404, {"errorMessages": ["Not found"]}, {}
        rest = parts[3:]
        if rest in (["search", "jql"], ["search"]) and method == "GET":
            return self._jira_search(query, cloud=rest == ["search", "jql"])
        if rest == ["user", "permission", "search"] and method == "GET":
            project = self.projects.get(query.get("projectKey", ""))
            who = query.get("accountId") or query.get("username") or ""
            if project is None or query.get("permissions") != "EDIT_ISSUES":
                return 400, {"errorMessages": ["bad permission search"]}, {}
            return 200, ([{"accountId": who, "active": True}] if project.access.get(who, 0) >= 30 else []), {}
        if len(rest) >= 2 and rest[0] == "issue":
            project, issue = self._jira_issue_of(rest[1])
            if project is None or issue is None:
                return 404, {"errorMessages": ["Issue does not exist or you do not have permission to see it."]}, {}
            if len(rest) == 2 and method == "GET":
                status = "Done" if issue.state == "closed" else "To Do"
                answer: dict[str, Any] = {"key": rest[1], "fields": {"status": {
                    "name": status, "statusCategory": {"key": "done" if issue.state == "closed" else "new"}}}}
                if query.get("expand") == "transitions":
                    answer["transitions"] = [{"id": i, "name": n, "to": {"name": to, "statusCategory": {"key": c}}}
                                             for i, n, to, c in JIRA_TRANSITIONS]
                return 200, answer, {}
            if rest[2:] == ["transitions"] and method == "POST":
                wanted = (body or {}).get("transition", {}).get("id") if isinstance(body, dict) else None
                match = [t for t in JIRA_TRANSITIONS if t[0] == wanted]
                if not match:
                    return 400, {"errorMessages": ["Transition id is not valid."]}, {}
                issue.state = "closed" if match[0][3] == "done" else "open"
                return 204, None, {}
            if rest[2:] == ["comment"]:
                if method == "POST":
                    if not isinstance(body, dict) or not isinstance(body.get("body"), str) or not body["body"]:
                        return 400, {"errors": {"comment": "Comment body can not be empty!"}}, {}
                    issue.comments.append(body["body"])
                    return 201, {"id": str(len(issue.comments)), "body": body["body"]}, {}
                start = int(query.get("startAt", "0"))
                size = max(1, min(int(query.get("maxResults", "50")), 100))
                page = [{"id": str(n + 1), "body": c} for n, c in enumerate(issue.comments)][start:start + size]
                return 200, {"startAt": start, "maxResults": size, "total": len(issue.comments),
                             "comments": page}, {}
        return 404, {"errorMessages": ["Not found"]}, {}

    def _jira_issue_of(self, key: str) -> tuple[Project | None, FakeIssue | None]:
        prefix, _, number = key.rpartition("-")
        project = self.projects.get(prefix)
        if project is None or not number.isdigit():
            return None, None
        return project, project.issues.get(int(number))

    def _jira_search(self, query: dict[str, str], *, cloud: bool) -> tuple[int, Any, dict[str, str]]:
        jql = query.get("jql", "")
        m = re.match(r'project = "([^"]+)"', jql)
        project = self.projects.get(m.group(1)) if m else None
        if project is None:
            return 400, {"errorMessages": [f"The value in the JQL query does not exist: {jql[:80]}"]}, {}
        labels = re.findall(r'labels = "((?:[^"\\]|\\.)*)"', jql)
        done = "statusCategory != Done" in jql
        items = [i for _, i in sorted(project.issues.items()) if not i.pull_request
                 and (not done or i.state == "open") and all(label in i.labels for label in labels)]
        size = max(1, min(int(query.get("maxResults", "50")), 100))
        start = int(query.get("nextPageToken" if cloud else "startAt", "0") or 0)
        page = [{"id": str(10000 + i.number), "key": f"{project.path}-{i.number}", "fields": {
            "summary": i.title, "description": i.body or None, "labels": list(i.labels),
            "assignee": {"accountId": i.assignees[0], "displayName": i.assignees[0]} if i.assignees else None,
            "reporter": {"accountId": i.author, "displayName": i.author},
            "fixVersions": [{"name": i.milestone}] if i.milestone else []}} for i in items[start:start + size]]
        more = start + size < len(items)
        if cloud:
            answer: dict[str, Any] = {"issues": page, "isLast": not more}
            if more:
                answer["nextPageToken"] = str(start + size)
            return 200, answer, {}
        return 200, {"startAt": start, "maxResults": size, "total": len(items), "issues": page}, {}

    # --- Linear -----------------------------------------------------------------------------------

    def _linear_call(self, method: str, headers: Any, body: Any) -> tuple[int, Any, dict[str, str]]:
        if (headers.get("authorization") or "") != self.token:
            return 400, {"errors": [{"message": "Authentication required, not authenticated",
                                     "extensions": {"code": "AUTHENTICATION_ERROR"}}]}, {}
        if self.limits:
            self.limits.pop(0)
            return 400, {"errors": [{"message": "Rate limit exceeded", "extensions": {"code": "RATELIMITED"}}]}, {
                "X-RateLimit-Requests-Remaining": "0",
                "X-RateLimit-Requests-Reset": str(int((self.clock() + 30) * 1000))}
        if method != "POST" or not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return 400, {"errors": [{"message": "Must provide query string."}]}, {}
        result = graphql.graphql_sync(linear_schema(), body["query"], root_value=_LinearRoot(self),
                                      variable_values=body.get("variables") or {})
        answer: dict[str, Any] = {"data": result.data}
        if result.errors:
            answer["errors"] = [{"message": e.message, "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}}
                                for e in result.errors]
            return (400 if result.data is None else 200), answer, {}
        return 200, answer, {}

    def linear_issue(self, project: Project, i: FakeIssue) -> dict[str, Any]:
        state = next((s for s in LINEAR_STATES if s[0] == i.linear_state),
                     LINEAR_STATES[2] if i.state == "closed" else LINEAR_STATES[0])
        return {
            "id": f"uuid-{project.path}-{i.number}", "identifier": f"{project.path}-{i.number}",
            "number": float(i.number), "title": i.title, "description": i.body or None,
            "url": f"https://linear.example/issue/{project.path}-{i.number}",
            "labels": {"nodes": [{"name": label} for label in i.labels]},
            "assignee": {"id": f"u-{i.assignees[0]}", "displayName": i.assignees[0], "guest": False}
            if i.assignees else None,
            "creator": {"id": f"u-{i.author}", "displayName": i.author, "guest": project.access.get(i.author, 0) < 30},
            "projectMilestone": {"name": i.milestone} if i.milestone else None,
            "team": {"key": project.path},
            "state": {"id": state[0], "name": state[1], "type": state[2]},
            "comments": {"nodes": [{"body": c} for c in i.comments],
                         "pageInfo": {"hasNextPage": False, "endCursor": None}},
        }


@functools.cache
def linear_schema() -> graphql.GraphQLSchema:
    return graphql.build_schema(LINEAR_SCHEMA.read_text())


class _LinearRoot:
    """The root resolvers of the Linear stand-in (graphql-core calls ``field(info, **arguments)``)."""

    def __init__(self, server: TrackerServer) -> None:
        self.s = server

    def _find(self, ref: str) -> tuple[Project, FakeIssue]:
        for project in self.s.projects.values():
            for i in project.issues.values():
                if ref in (f"{project.path}-{i.number}", f"uuid-{project.path}-{i.number}"):
                    return project, i
        raise graphql.GraphQLError("Entity not found: Issue")

    def issue(self, info: Any, id: str) -> dict[str, Any]:
        return self.s.linear_issue(*self._find(id))

    def issues(self, info: Any, filter: dict[str, Any] | None = None, first: int | None = None,
               after: str | None = None, orderBy: Any = None) -> dict[str, Any]:
        flt = filter or {}
        team = flt.get("team", {}).get("key", {}).get("eq")
        excluded = set(flt.get("state", {}).get("type", {}).get("nin") or [])
        labels = [a["labels"]["some"]["name"]["eq"] for a in flt.get("and") or []]
        nodes = []
        for project in self.s.projects.values():
            if team is not None and project.path != team:
                continue
            for _, i in sorted(project.issues.items()):
                node = self.s.linear_issue(project, i)
                if not i.pull_request and node["state"]["type"] not in excluded \
                        and all(label in i.labels for label in labels):
                    nodes.append(node)
        start = int(after or 0)
        size = max(1, min(first or 50, 250))
        more = start + size < len(nodes)
        return {"nodes": nodes[start:start + size],
                "pageInfo": {"hasNextPage": more, "endCursor": str(start + size) if more else None}}

    def workflowStates(self, info: Any, filter: dict[str, Any] | None = None,
                       first: int | None = None) -> dict[str, Any]:
        return {"nodes": [{"id": i, "name": n, "type": t} for i, n, t in LINEAR_STATES]}

    def commentCreate(self, info: Any, input: dict[str, Any]) -> dict[str, Any]:
        _, issue = self._find(input["issueId"])
        issue.comments.append(input["body"])
        return {"success": True}

    def issueUpdate(self, info: Any, id: str, input: dict[str, Any]) -> dict[str, Any]:
        _, issue = self._find(id)
        state = next((s for s in LINEAR_STATES if s[0] == input.get("stateId")), None)
        if state is None:
            raise graphql.GraphQLError("Entity not found: WorkflowState")
        issue.state = "closed" if state[2] in ("completed", "canceled") else "open"
        issue.linear_state = state[0]
        return {"success": True}


class FakeClock:
    """Epoch seconds that move only when the client sleeps."""

    def __init__(self, start: float = 1_800_000_000.0) -> None:
        self.now = start
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@contextmanager
def tracker_server(clock: Callable[[], float], token: str, *, contract: bool = True) -> Iterator[TrackerServer]:
    """The tracker, serving until the block ends; then (``contract``, unless the block failed) every GitHub exchange
    it had is checked against GitHub's published description (:meth:`JsonApiServer.check_contract`)."""
    server = TrackerServer(clock, token)
    server.start()
    try:
        yield server
    finally:
        server.stop()
    if contract:
        server.check_contract()
