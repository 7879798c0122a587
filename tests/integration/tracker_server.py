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

Rate limits as the real ones report them, on a clock the test controls: :meth:`TrackerServer.rate_limit`
refuses the next requests (GitHub: 403 with ``X-RateLimit-Remaining: 0`` and ``X-RateLimit-Reset``, or
``Retry-After`` for a secondary limit; GitLab: 429 with ``RateLimit-Reset`` or ``Retry-After``), and
:meth:`TrackerServer.budget` counts a request budget down in the headers and refuses when it is spent,
until its reset time. Every request is recorded (method, path, query, headers) for assertions.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import forge_contract
import github_wire as gw


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
        data = json.dumps(payload).encode()
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
