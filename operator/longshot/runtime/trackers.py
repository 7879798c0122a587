"""Issue trackers for ``spec.planner.source: issues`` and the standing intake: GitHub, GitLab and Jira REST
clients and a Linear GraphQL client (httpx, synchronous; the shell runs them with ``asyncio.to_thread``).

Jira (REST API v2, whose texts are plain strings): an issue ``PROJ-12`` of project ``PROJ`` is number 12; open is
"not in the Done status category"; closing is a transition (``doneState``, else the first into Done). Jira Cloud is
read through ``/rest/api/2/search/jql`` (``nextPageToken``) with basic auth (the Secret's ``email`` and ``token``),
Data Center through ``/rest/api/2/search`` (``startAt``) with a bearer personal access token. Linear (GraphQL, the
documents in :data:`LINEAR_DOCUMENTS`): an issue ``ENG-12`` of team ``ENG`` is number 12; open is "state type not
completed or canceled"; closing moves it to ``doneState`` or the team's first ``completed`` state; the API key goes
in ``Authorization`` as it is.

What they do: list a project's open issues that carry all of the given labels (every page, pull requests
left out), and post a comment on an issue (once: a marker makes a repeated post after an operator restart a
no-op). :func:`issues_to_tasks` turns issues into the planner's ``PlannedTask``s (``issue-<number>``).

Rate limits are honoured, never hammered: GitHub's ``403``/``429`` with ``X-RateLimit-Remaining: 0`` waits
until ``X-RateLimit-Reset`` (or ``Retry-After`` for secondary limits); GitLab's ``429`` waits for
``RateLimit-Reset`` or ``Retry-After``; a response that says the budget is spent makes the *next* request
wait too. A wait longer than ``max_wait`` seconds is not slept through: :class:`RateLimited` carries the
time to try again, for a requeue. Server errors and dropped connections are retried a few times with
backoff. Sleep and clock are injected.

The token (a Secret's ``token`` key, passed in as a string) goes into one request header only: it is never
in a URL, an argument, a log line or an error message (messages are scrubbed), and a next-page link that
points to another origin is refused rather than followed with it.
"""

from __future__ import annotations

import email.utils
import logging
import re
import time
import urllib.parse
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import re2

from longshot.api import boundedjson
from longshot.api.buildrequest import IssueSource
from longshot.api.exitcodes import FailureClass
from longshot.api.handoff import PlannedTask
from longshot.core import taskinput

if TYPE_CHECKING:  # imported when a tracker client is made: the operator of a build without issues never needs it
    import httpx

    from longshot.net import guard as gd

log = logging.getLogger(__name__)

GITHUB_API = "https://api.github.com"
GITLAB_API = "https://gitlab.com/api/v4"
PER_PAGE = 100
MAX_ISSUES = 1000
"""Most issues one listing returns (the planner's ``maxTasks`` is lower in practice)."""
MAX_BODY = 8000
"""Longest issue body copied into a task description; longer bodies are cut with a marker."""
MAX_COMMENT = 60_000
MAX_TITLE = 1000
"""Longest issue title kept."""
MAX_KEPT_BODY = 4 * MAX_BODY
"""Longest issue body kept from a listing (a task description takes :data:`MAX_BODY` of it)."""
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
"""Largest answer read from a tracker (decoded); a larger one fails the intake (the tracker URL is the
BuildRequest author's: its answers are untrusted)."""
PARSE_BUDGET = boundedjson.Budget(max_bytes=MAX_RESPONSE_BYTES, max_values=100_000, max_depth=16)
"""What parsing one tracker or forge answer may cost (``api.boundedjson``): a page of 100 issues, pull requests or
reviews holds about 20,000 values and nests 5 levels; at most 100,000 values (about 10 MiB of Python objects on top
of the text) and 16 levels. An answer over it fails the call with a message naming the limit."""
DETAIL_BYTES = 64 * 1024
"""Most of an error answer read for the message of the error (the rest is not parsed)."""
MAX_PAGES = 100
"""Most pages one listing follows (a tracker whose next-page links never end fails the intake)."""
READ_DEADLINE = 60.0
"""Seconds one answer may take to arrive in full (httpx's timeout bounds each read, not a slow drip)."""
TASK_PREFIX = "issue-"
MEMBER_BUDGET = boundedjson.Budget(max_bytes=64 * 1024, max_values=2000, max_depth=8)
"""What one answer of GitLab's members API may cost to parse (an object of a few dozen fields)."""


@dataclass(frozen=True)
class Issue:
    """An open issue, as the planner needs it."""

    number: int
    """The issue's number in its project (GitHub ``number``, GitLab ``iid``)."""
    title: str
    body: str
    labels: tuple[str, ...]
    url: str
    """The issue's web page."""
    assignees: tuple[str, ...] = ()
    """Logins (GitHub) or usernames (GitLab) the issue is assigned to (the standing intake's filter)."""
    milestone: str | None = None
    """The title of the issue's milestone."""
    author: str = ""
    """Who opened it: login (GitHub) or username (GitLab)."""
    author_writer: bool | None = None
    """The tracker says the author may write to the repository: GitHub ``author_association`` OWNER, MEMBER or
    COLLABORATOR. None: the listing does not say (GitLab: :meth:`Tracker.writers` asks the members API)."""
    author_id: int | None = None
    """The author's user id (GitLab's members API takes it)."""
    key: str = ""
    """The tracker's own name of the issue when it is not ``#<number>``: Jira's and Linear's ``PROJ-12``."""


class TrackerError(Exception):
    """A tracker call failed; ``failure_class`` says whether retrying can help. The message names the
    tracker, the project and what to do, and never holds the token."""

    failure_class: FailureClass = "Infrastructure"


class AuthError(TrackerError):
    """The tracker refused the token (401, or 403 that is not a rate limit): fix the Secret."""

    failure_class = "Auth"


class ConfigurationError(TrackerError):
    """The project does not exist or the request is invalid: fix ``spec.planner.issues``."""

    failure_class = "Configuration"


class RateLimited(TrackerError):
    """The rate limit is spent for longer than the client may wait; try again at ``retry_at``."""

    failure_class = "RateLimited"

    def __init__(self, message: str, retry_at: float) -> None:
        super().__init__(message)
        self.retry_at = retry_at
        """Clock time (the client's ``clock``, epoch seconds by default) when the limit resets."""


class Tracker:
    """Common part of both clients: requests with the token, retries, rate limits, pagination."""

    provider: ClassVar[str] = "?"
    default_url: ClassVar[str] = ""
    field_names: ClassVar[dict[str, str]] = {"url": "url", "secret": "credentialsSecret", "repository": "repository"}
    """The names of the settings' fields under :attr:`field`, for messages (the forge's differ)."""

    def __init__(self, *, repository: str, token: str | None, url: str | None = None,
                 transport: httpx.BaseTransport | None = None, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.time, timeout: float = 30.0, max_wait: float = 60.0,
                 max_retries: int = 3, max_issues: int = MAX_ISSUES, egress: gd.Guard | None = None,
                 field: str = "planner.issues") -> None:
        self.repository = repository
        self.field = field
        """The spec field of these settings, named in error messages (``planner.issues``, ``intake.tracker``)."""
        self.base = (url or self.default_url).rstrip("/")
        self._token = token or None
        import httpx  # a few MiB of the operator's memory, for issue-sourced builds only

        from longshot.net import transport as egress_transport

        if egress is not None and transport is None:
            # every connection to an address the egress policy checked, or through the installation's proxy
            # (egress.proxy) after the destination was checked; never a proxy read from the environment
            transport = egress_transport.GuardedTransport(egress, f"spec.{field}.url", purpose="tracker")
        self._client = httpx.Client(transport=transport, timeout=timeout, follow_redirects=False,
                                    headers={"User-Agent": "longshot-operator"}, trust_env=False)
        self._transport_error = httpx.TransportError
        self._refused = egress_transport.EgressRefused
        self.sleep = sleep
        self.clock = clock
        self.max_wait = max_wait
        self.max_retries = max_retries
        self.max_issues = max_issues
        self._resume_at = 0.0
        self.requests = 0
        """Requests sent (for metrics and tests)."""

    # --- what callers use --------------------------------------------------------------------------

    def list_issues(self, labels: Sequence[str] = ()) -> list[Issue]:
        """Open issues with all of ``labels``, by number, pull requests left out."""
        issues: dict[int, Issue] = {}
        url: str | None = self._issues_url(labels)
        pages = 0
        while url is not None and len(issues) < self.max_issues:
            pages += 1
            if pages > MAX_PAGES:
                raise TrackerError(f"{self._where('issue listing')}: more than {MAX_PAGES} pages; refusing to go on")
            response = self._request("GET", url, what="listing issues")
            for item in _json_list(self._parsed(response, self._where("issue listing")), self._where("issue listing")):
                issue = self._issue(item)
                if issue is not None:
                    issues.setdefault(issue.number, issue)
            url = self._next_page(response)
        return [issues[n] for n in sorted(issues)][: self.max_issues]

    def comment(self, number: int, body: str, *, marker: str | None = None) -> bool:
        """Post ``body`` on issue ``number``; with ``marker`` (put into the comment as an HTML comment) do
        nothing when a comment with that marker is already there. True when a comment was posted."""
        tag = self._tag(marker) if marker else ""
        if tag and any(tag in c for c in self._comment_bodies(number)):
            return False
        text = body if len(body) <= MAX_COMMENT else body[: MAX_COMMENT - 6] + " [...]"
        self._request("POST", self._comments_url(number), json={"body": f"{text}\n\n{tag}" if tag else text},
                      what=f"commenting on issue #{number}")
        return True

    def close_issue(self, number: int) -> None:
        """Close issue ``number`` (closing a closed issue changes nothing)."""
        self._request(self._close_method, self._issue_url(number), json=self._close_body,
                      what=f"closing issue #{number}")

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- provider specifics ------------------------------------------------------------------------

    def _tag(self, marker: str) -> str:
        """The marker as it is put into a comment (Markdown trackers: an HTML comment, which they do not show)."""
        return f"<!-- longshot:{_clean_marker(marker)} -->"

    def _issues_url(self, labels: Sequence[str]) -> str:
        raise NotImplementedError

    def _comments_url(self, number: int) -> str:
        raise NotImplementedError

    _close_method: ClassVar[str] = "PATCH"
    _close_body: ClassVar[dict[str, str]] = {}

    def _issue_url(self, number: int) -> str:
        raise NotImplementedError

    def _issue(self, item: Any) -> Issue | None:
        raise NotImplementedError

    def _auth_headers(self) -> dict[str, str]:
        raise NotImplementedError

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        """Clock time to wait for when ``response`` is a rate-limit refusal, else None."""
        raise NotImplementedError

    def _spent_until(self, response: httpx.Response) -> float | None:
        """Clock time the remaining budget resets when ``response`` says it is spent, else None."""
        return None

    # --- plumbing ----------------------------------------------------------------------------------

    def _where(self, what: str) -> str:
        return f"{self.provider} {what} of {self.repository} at {self.base}"

    def _comment_bodies(self, number: int) -> Iterable[str]:
        url: str | None = self._comments_url(number) + f"?per_page={PER_PAGE}"
        pages = 0
        while url is not None:
            pages += 1
            if pages > MAX_PAGES:
                raise TrackerError(f"{self._where(f'comments of issue #{number}')}: more than {MAX_PAGES} pages")
            response = self._request("GET", url, what=f"reading the comments of issue #{number}")
            where = self._where(f"comments of issue #{number}")
            for item in _json_list(self._parsed(response, where), where):
                if isinstance(item, dict) and isinstance(item.get("body"), str):
                    yield item["body"]
            url = self._next_page(response)

    def _request(self, method: str, url: str, *, what: str, json: Any = None,
                 absent_ok: bool = False, answers: tuple[int, ...] = ()) -> httpx.Response:
        failures = 0
        waits = 0
        while True:
            self._wait_until(self._resume_at, what)
            headers = {"Accept": "application/json", **self._auth_headers()}
            self.requests += 1
            try:
                response = self._bounded(self._client.build_request(method, url, headers=headers, json=json), what)
            except self._refused as e:  # nothing was sent: retrying cannot help
                raise ConfigurationError(str(e)) from None
            except self._transport_error as e:
                failures += 1
                if failures > self.max_retries:
                    raise TrackerError(f"{self._where(what)}: cannot reach the tracker "
                                       f"({type(e).__name__}) after {failures} tries; check {self._named('url')} "
                                       "and the operator's egress") from None
                self.sleep(min(2.0 ** (failures - 1), 30.0))
                continue
            spent = self._spent_until(response)
            if spent is not None:
                self._resume_at = max(self._resume_at, spent)
            retry_at = self._rate_limit_wait(response)
            if retry_at is not None:
                waits += 1
                if waits > self.max_retries:
                    raise RateLimited(f"{self._where(what)}: still rate limited after {self.max_retries} waits",
                                      retry_at)
                self._resume_at = max(self._resume_at, retry_at)
                continue
            if response.status_code >= 500:
                failures += 1
                if failures > self.max_retries:
                    raise TrackerError(f"{self._where(what)}: the tracker answered {response.status_code} "
                                       f"{self._detail(response)} after {failures} tries")
                self.sleep(min(2.0 ** (failures - 1), 30.0))
                continue
            if response.status_code in (401, 403):
                raise AuthError(f"{self._where(what)}: the tracker refused the token ({response.status_code} "
                                f"{self._detail(response)}); check the token in the Secret named by "
                                f"{self._named('secret')} and its access to the project")
            if response.status_code == 404 and absent_ok:  # an answer: "there is no such thing"
                return response
            if response.status_code in answers:  # the caller reads this refusal itself (GraphQL errors)
                return response
            if response.status_code in (404, 410, 422):
                raise ConfigurationError(f"{self._where(what)}: {response.status_code} {self._detail(response)}; "
                                         f"check {self.field}.provider, {self.field_names['url']} and "
                                         f"{self.field_names['repository']}")
            if response.status_code in (301, 302, 307, 308):
                # GitHub's answer for a repository that was renamed or transferred (its description lists 301 for
                # the issue calls); not followed, the token stays with the URL it was given for
                raise ConfigurationError(f"{self._where(what)}: {response.status_code}: the repository has moved "
                                         f"(renamed or transferred{self._moved_to(response)}); set "
                                         f"{self._named('repository')} to its new name")
            if response.status_code >= 300:
                raise TrackerError(f"{self._where(what)}: unexpected answer {response.status_code} "
                                   f"{self._detail(response)}")
            return response

    def _bounded(self, request: httpx.Request, what: str) -> httpx.Response:
        """The answer to ``request``, read as a stream: at most :data:`MAX_RESPONSE_BYTES` and
        :data:`READ_DEADLINE` seconds, else :class:`TrackerError`."""
        import httpx

        deadline = time.monotonic() + READ_DEADLINE
        streamed = self._client.send(request, stream=True)
        chunks: list[bytes] = []  # joined once: the answer is held at most twice (a bytearray grows by copies)
        size = 0
        try:
            for chunk in streamed.iter_bytes():
                chunks.append(chunk)
                size += len(chunk)
                if size > MAX_RESPONSE_BYTES:
                    raise TrackerError(f"{self._where(what)}: the tracker's answer is larger than "
                                       f"{MAX_RESPONSE_BYTES} bytes; refusing to read it")
                if time.monotonic() > deadline:
                    raise TrackerError(f"{self._where(what)}: the tracker's answer took longer than "
                                       f"{READ_DEADLINE:.0f}s to arrive")
        finally:
            streamed.close()
        body = b"".join(chunks)
        del chunks
        return httpx.Response(streamed.status_code, headers=streamed.headers, content=body, request=request,
                              extensions={"reason_phrase": streamed.reason_phrase.encode()})

    def _wait_until(self, when: float, what: str) -> None:
        delay = when - self.clock()
        if delay <= 0:
            return
        if delay > self.max_wait:
            raise RateLimited(f"{self._where(what)}: rate limited for another {delay:.0f}s "
                              f"(longer than the {self.max_wait:g}s this client waits); try again later", when)
        log.info("tracker rate limit: waiting", extra={"provider": self.provider, "seconds": round(delay, 1)})
        self.sleep(delay)

    def _retry_after(self, response: httpx.Response) -> float | None:
        value = response.headers.get("retry-after")
        if value is None:
            return None
        value = value.strip()
        if value.isdigit():
            return self.clock() + int(value)
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        return when.timestamp()

    def _next_page(self, response: httpx.Response) -> str | None:
        url = _link_next(response.headers.get("link"))
        if url is None:
            return None
        mine, theirs = urllib.parse.urlsplit(self.base), urllib.parse.urlsplit(url)
        if (mine.scheme, mine.netloc) != (theirs.scheme, theirs.netloc):
            raise TrackerError(f"{self._where('pagination')}: the next page link points to another origin "
                               f"({theirs.scheme}://{theirs.hostname}); refusing to send the token there")
        return url

    def _parsed(self, response: httpx.Response, where: str) -> Any:
        """The JSON of an answer, parsed under :data:`PARSE_BUDGET`; :class:`TrackerError` naming the limit."""
        try:
            return boundedjson.loads(response.content, PARSE_BUDGET)
        except boundedjson.Refused as e:
            if e.reason == "not_json":  # an error page of a proxy or an outage: tried again
                raise TrackerError(f"{where}: the answer is not JSON") from None
            # no tracker or forge answers this: the URL names another server, and asking again cannot help
            raise ConfigurationError(f"{where}: the answer was refused before it was parsed: {e}; "
                                     f"{self._url_field()} must name the provider's API") from None

    def _url_field(self) -> str:
        """The spec field naming this client's server (in messages about its answers)."""
        return f"spec.{self.field}.url"

    def _named(self, name: str) -> str:
        """The spec field of setting ``name`` (``url``, ``secret``, ``repository``) of this client, for messages."""
        return f"{self.field}.{self.field_names[name]}"

    def _moved_to(self, response: httpx.Response) -> str:
        """``, to <path>`` of a redirect's ``Location`` (the tracker's text: printable, cut, the token scrubbed)."""
        path = urllib.parse.urlsplit(response.headers.get("location", "")[:2048]).path
        path = "".join(ch for ch in path if ch.isprintable() and not ch.isspace())[:200]
        if self._token:
            path = path.replace(self._token, "***")
        return f", to {path}" if path else ""

    def _detail(self, response: httpx.Response) -> str:
        head = response.content[:DETAIL_BYTES]
        try:
            data = boundedjson.loads(head, boundedjson.Budget(max_bytes=DETAIL_BYTES, max_values=1000))
            message = data.get("message") or data.get("error") if isinstance(data, dict) else None
        except boundedjson.Refused:
            message = None
        text = str(message if message is not None else head.decode("utf-8", "replace") or response.reason_phrase)
        text = text[:4 * 300]  # the split below makes an object per word: only what the message keeps
        if self._token:
            text = text.replace(self._token, "***")
        text = " ".join(text.split())
        return f"({text[:300]})" if text else ""


class GitHub(Tracker):
    """GitHub's REST API (github.com or GitHub Enterprise Server's ``https://<host>/api/v3``)."""

    provider = "github"
    default_url = GITHUB_API

    def _repo_path(self) -> str:
        owner, _, name = self.repository.partition("/")
        return f"{self.base}/repos/{urllib.parse.quote(owner, safe='')}/{urllib.parse.quote(name, safe='')}"

    def _issues_url(self, labels: Sequence[str]) -> str:
        query = {"state": "open", "per_page": str(PER_PAGE), "sort": "created", "direction": "asc"}
        if labels:
            query["labels"] = ",".join(labels)
        return f"{self._repo_path()}/issues?{urllib.parse.urlencode(query)}"

    def _comments_url(self, number: int) -> str:
        return f"{self._repo_path()}/issues/{int(number)}/comments"

    _close_method = "PATCH"
    _close_body = {"state": "closed"}

    def _issue_url(self, number: int) -> str:
        return f"{self._repo_path()}/issues/{int(number)}"

    def _auth_headers(self) -> dict[str, str]:
        headers = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        return headers

    def _issue(self, item: Any) -> Issue | None:
        if not isinstance(item, dict) or "pull_request" in item:  # GitHub lists pull requests as issues
            return None
        number = item.get("number")
        if not isinstance(number, int) or number < 1:
            return None
        labels = tuple(str(label.get("name")) if isinstance(label, dict) else str(label)
                       for label in item.get("labels") or [])
        return Issue(number=number, title=_kept(item.get("title"), MAX_TITLE),
                     body=_kept(item.get("body"), MAX_KEPT_BODY),
                     labels=labels, url=str(item.get("html_url") or ""),
                     assignees=_people(item, "login"), milestone=_milestone(item),
                     author=_author(item, "user", "login"),
                     author_writer=isinstance(item.get("author_association"), str)
                     and item["author_association"].upper() in ("OWNER", "MEMBER", "COLLABORATOR"))

    def _reset(self, response: httpx.Response) -> float | None:
        value = response.headers.get("x-ratelimit-reset")
        return float(value) + 1.0 if value and value.strip().isdigit() else None

    def _spent_until(self, response: httpx.Response) -> float | None:
        if response.headers.get("x-ratelimit-remaining", "").strip() == "0" and response.status_code < 300:
            return self._reset(response)
        return None

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        if response.status_code not in (403, 429):
            return None
        retry_after = self._retry_after(response)
        if retry_after is not None:
            return retry_after
        if response.headers.get("x-ratelimit-remaining", "").strip() == "0":
            reset = self._reset(response)
            return reset if reset is not None else self.clock() + 60.0
        if response.status_code == 429:
            return self.clock() + 60.0
        return None  # a 403 without rate-limit headers is a permission problem


class GitLab(Tracker):
    """GitLab's REST API v4 (gitlab.com or a self-managed ``https://<host>/api/v4``)."""

    provider = "gitlab"
    default_url = GITLAB_API

    def _project_path(self) -> str:
        return f"{self.base}/projects/{urllib.parse.quote(self.repository, safe='')}"

    def _issues_url(self, labels: Sequence[str]) -> str:
        query = {"state": "opened", "per_page": str(PER_PAGE), "order_by": "created_at", "sort": "asc"}
        if labels:
            query["labels"] = ",".join(labels)
        return f"{self._project_path()}/issues?{urllib.parse.urlencode(query)}"

    def _comments_url(self, number: int) -> str:
        return f"{self._project_path()}/issues/{int(number)}/notes"

    _close_method = "PUT"
    _close_body = {"state_event": "close"}

    def _issue_url(self, number: int) -> str:
        return f"{self._project_path()}/issues/{int(number)}"

    def _auth_headers(self) -> dict[str, str]:
        return {"PRIVATE-TOKEN": self._token} if self._token else {}

    def writers(self, ids: Mapping[str, int]) -> set[str]:
        """Which of the accounts (username -> user id) are members of the project with Developer access (30) or
        higher, inherited memberships included (``GET /projects/:id/members/all/:user_id``; a 404 is a stranger).
        At most :data:`MAX_MEMBER_LOOKUPS` are looked up, one request each; the rest count as strangers."""
        out: set[str] = set()
        for name, uid in list(ids.items())[:MAX_MEMBER_LOOKUPS]:
            response = self._request("GET", f"{self._project_path()}/members/all/{int(uid)}", absent_ok=True,
                                     what=f"reading the access level of {name[:64]!r}")
            if response.status_code == 404:
                continue
            try:  # a member is a small object: a budget of its own, far under the listings'
                member = boundedjson.loads(response.content, MEMBER_BUDGET)
            except boundedjson.Refused:
                continue
            level = member.get("access_level") if isinstance(member, dict) else None
            if isinstance(level, int) and not isinstance(level, bool) and level >= DEVELOPER \
                    and member.get("state", "active") == "active":
                out.add(name)
        return out

    def _issue(self, item: Any) -> Issue | None:
        if not isinstance(item, dict):
            return None
        number = item.get("iid")
        if not isinstance(number, int) or number < 1:
            return None
        labels = tuple(str(label.get("name")) if isinstance(label, dict) else str(label)
                       for label in item.get("labels") or [])
        return Issue(number=number, title=_kept(item.get("title"), MAX_TITLE),
                     body=_kept(item.get("description"), MAX_KEPT_BODY),
                     labels=labels, url=str(item.get("web_url") or ""),
                     assignees=_people(item, "username"), milestone=_milestone(item),
                     author=_author(item, "author", "username"), author_id=_author_id(item))

    def _next_page(self, response: httpx.Response) -> str | None:
        linked = super()._next_page(response)
        if linked is not None:
            return linked
        page = response.headers.get("x-next-page", "").strip()
        if not page.isdigit():
            return None
        parts = urllib.parse.urlsplit(str(response.request.url))
        query = dict(urllib.parse.parse_qsl(parts.query))
        query["page"] = page
        return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))

    def _reset(self, response: httpx.Response) -> float | None:
        value = response.headers.get("ratelimit-reset")
        return float(value) + 1.0 if value and value.strip().isdigit() else None

    def _spent_until(self, response: httpx.Response) -> float | None:
        if response.headers.get("ratelimit-remaining", "").strip() == "0" and response.status_code < 300:
            return self._reset(response)
        return None

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        if response.status_code != 429:
            return None
        retry_after = self._retry_after(response)
        if retry_after is not None:
            return retry_after
        reset = self._reset(response)
        return reset if reset is not None else self.clock() + 60.0


JIRA_FIELDS = "summary,description,labels,assignee,reporter,fixVersions"
"""The fields of an issue a Jira listing asks for (the rest is not sent)."""
JIRA_PAGE = 100
JIRA_WRITE_PERMISSION = "EDIT_ISSUES"
"""The project permission that makes a Jira account a writer (``authors.writers``)."""


class Jira(Tracker):
    """Jira's REST API v2 (plain-text fields): Jira Cloud (``https://<site>.atlassian.net``, basic auth with an
    account's address and API token) or Data Center (its base URL, a bearer personal access token)."""

    provider = "jira"
    default_url = ""

    def __init__(self, *, email: str | None = None, done_state: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self._email = email or None
        self.done_state = done_state
        self.cloud = self._email is not None
        """Jira Cloud (basic auth, ``search/jql``); else Data Center (bearer, ``search``)."""

    def _auth_headers(self) -> dict[str, str]:
        if not self._token:
            return {}
        if self._email is not None:
            import base64

            return {"Authorization": "Basic " + base64.b64encode(f"{self._email}:{self._token}".encode()).decode()}
        return {"Authorization": f"Bearer {self._token}"}

    def _tag(self, marker: str) -> str:
        return f"[longshot:{_clean_marker(marker)}]"  # wiki markup shows an HTML comment as text: a short tag

    def key(self, number: int) -> str:
        return f"{self.repository}-{int(number)}"

    def _jql(self, labels: Sequence[str]) -> str:
        clauses = [f"project = {_jql_quote(self.repository)}", "statusCategory != Done",
                   *[f"labels = {_jql_quote(label)}" for label in labels]]
        return " AND ".join(clauses) + " ORDER BY created ASC"

    def list_issues(self, labels: Sequence[str] = ()) -> list[Issue]:
        issues: dict[int, Issue] = {}
        query = {"jql": self._jql(labels), "fields": JIRA_FIELDS, "maxResults": str(JIRA_PAGE)}
        where = self._where("issue search")
        for page in range(MAX_PAGES + 1):
            if page == MAX_PAGES:
                raise TrackerError(f"{where}: more than {MAX_PAGES} pages; refusing to go on")
            path = "search/jql" if self.cloud else "search"
            url = f"{self.base}/rest/api/2/{path}?{urllib.parse.urlencode(query)}"
            data = self._parsed(self._request("GET", url, what="searching issues"), where)
            if not isinstance(data, dict):
                raise TrackerError(f"{where}: expected a JSON object, got {type(data).__name__}")
            items = _json_list(data.get("issues"), where)
            for item in items:
                issue = self._issue(item)
                if issue is not None:
                    issues.setdefault(issue.number, issue)
            if len(issues) >= self.max_issues:
                break
            if self.cloud:
                token = data.get("nextPageToken")
                if not isinstance(token, str) or not token or data.get("isLast") is True:
                    break
                query["nextPageToken"] = token[:4096]
            else:
                start, total = data.get("startAt"), data.get("total")
                if not (isinstance(start, int) and isinstance(total, int)) or not items \
                        or start + len(items) >= total:
                    break
                query["startAt"] = str(start + len(items))
        return [issues[n] for n in sorted(issues)][: self.max_issues]

    def _issue(self, item: Any) -> Issue | None:
        if not isinstance(item, dict) or not isinstance(item.get("key"), str):
            return None
        project, _, number = item["key"].rpartition("-")
        if project != self.repository or not number.isdigit() or int(number) < 1:
            return None  # moved to another project since the search, or not a key
        fields = _obj(item.get("fields"))
        labels = tuple(_kept(label, MAX_TITLE) for label in (fields.get("labels") or [])[:100]
                       if isinstance(label, str))
        assignee = _jira_user(fields.get("assignee"))
        versions = [v.get("name") for v in fields.get("fixVersions") or [] if isinstance(v, dict) and v.get("name")]
        return Issue(number=int(number), title=_kept(fields.get("summary"), MAX_TITLE),
                     body=_kept(fields.get("description") if isinstance(fields.get("description"), str) else "",
                                MAX_KEPT_BODY),
                     labels=labels, url=f"{self.base}/browse/{item['key'][:300]}",
                     assignees=(assignee,) if assignee else (), milestone=_kept(versions[0], MAX_TITLE) if versions
                     else None, author=_jira_user(fields.get("reporter")), key=self.key(int(number)))

    def writers(self, names: Sequence[str]) -> set[str]:
        """Which of the accounts (Cloud: account ids; Data Center: user names) have the project's Edit Issues
        permission (``GET /rest/api/2/user/permission/search``, one request each, at most
        :data:`MAX_MEMBER_LOOKUPS`; the rest count as strangers)."""
        out: set[str] = set()
        for name in list(dict.fromkeys(names))[:MAX_MEMBER_LOOKUPS]:
            query = {"permissions": JIRA_WRITE_PERMISSION, "projectKey": self.repository,
                     ("accountId" if self.cloud else "username"): name, "maxResults": "2"}
            response = self._request("GET", f"{self.base}/rest/api/2/user/permission/search?"
                                     f"{urllib.parse.urlencode(query)}", what=f"reading the permissions of "
                                     f"{name[:64]!r}")
            try:
                users = boundedjson.loads(response.content, MEMBER_BUDGET)
            except boundedjson.Refused:
                continue
            if isinstance(users, list) and any(_jira_user(u) == name for u in users):
                out.add(name)
        return out

    def _comment_bodies(self, number: int) -> Iterable[str]:
        start = 0
        where = self._where(f"comments of {self.key(number)}")
        for _ in range(MAX_PAGES):
            url = (f"{self._issue_url(number)}/comment?"
                   f"{urllib.parse.urlencode({'startAt': str(start), 'maxResults': str(JIRA_PAGE)})}")
            data = self._parsed(self._request("GET", url, what=f"reading the comments of {self.key(number)}"), where)
            items = _json_list(data.get("comments") if isinstance(data, dict) else None, where)
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("body"), str):
                    yield item["body"]
            total = data.get("total") if isinstance(data, dict) else None
            start += len(items)
            if not items or not isinstance(total, int) or start >= total:
                return
        raise TrackerError(f"{where}: more than {MAX_PAGES} pages")

    def _comments_url(self, number: int) -> str:
        return f"{self._issue_url(number)}/comment"

    def _issue_url(self, number: int) -> str:
        return f"{self.base}/rest/api/2/issue/{urllib.parse.quote(self.key(number), safe='')}"

    def close_issue(self, number: int) -> None:
        """Move the issue with the transition named ``done_state`` (or leading to the status of that name), else
        the first one into the Done status category; an issue already in Done is left as it is."""
        where = self._where(f"transitions of {self.key(number)}")
        url = f"{self._issue_url(number)}?{urllib.parse.urlencode({'fields': 'status', 'expand': 'transitions'})}"
        data = self._parsed(self._request("GET", url, what=f"reading {self.key(number)}"), where)
        if not isinstance(data, dict):
            raise TrackerError(f"{where}: expected a JSON object")
        status = (data.get("fields") or {}).get("status") if isinstance(data.get("fields"), dict) else None
        if _category(status) == "done":
            return
        chosen = None
        for t in _json_list(data.get("transitions") or [], where):
            if not isinstance(t, dict) or not isinstance(t.get("id"), str):
                continue
            to = _obj(t.get("to"))
            names = (str(t.get("name", "")).casefold(), str(to.get("name", "")).casefold())
            if self.done_state is not None:
                if self.done_state.casefold() in names:
                    chosen = t["id"]
                    break
            elif _category(to) == "done":
                chosen = t["id"]
                break
        if chosen is None:
            wanted = f"named {self.done_state!r}" if self.done_state else "into the Done status category"
            raise ConfigurationError(f"{where}: no transition {wanted} is available to the token's account; set "
                                     f"{self.field}.doneState to one of the issue's transitions")
        self._request("POST", f"{self._issue_url(number)}/transitions", json={"transition": {"id": chosen[:64]}},
                      what=f"closing {self.key(number)}")

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        if response.status_code != 429:
            return None
        retry_after = self._retry_after(response)
        return retry_after if retry_after is not None else self.clock() + 60.0


LINEAR_API = "https://api.linear.app"
LINEAR_PAGE = 100
LINEAR_DOCUMENTS: dict[str, str] = {
    "issues": """query LongshotIssues($filter: IssueFilter, $first: Int, $after: String) {
  issues(filter: $filter, first: $first, after: $after, orderBy: createdAt) {
    nodes {
      id identifier number title description url
      labels(first: 50) { nodes { name } }
      assignee { displayName }
      creator { id displayName guest }
      projectMilestone { name }
      team { key }
    }
    pageInfo { hasNextPage endCursor }
  }
}""",
    "comments": """query LongshotComments($id: String!, $after: String) {
  issue(id: $id) {
    id
    comments(first: 100, after: $after) { nodes { body } pageInfo { hasNextPage endCursor } }
  }
}""",
    "comment": """mutation LongshotComment($input: CommentCreateInput!) {
  commentCreate(input: $input) { success }
}""",
    "states": """query LongshotStates($id: String!, $filter: WorkflowStateFilter) {
  issue(id: $id) { id state { type } }
  workflowStates(filter: $filter, first: 100) { nodes { id name type } }
}""",
    "close": """mutation LongshotClose($id: String!, $input: IssueUpdateInput!) {
  issueUpdate(id: $id, input: $input) { success }
}""",
}
"""Every GraphQL document the Linear client sends (the contract test validates each against Linear's schema)."""
LINEAR_CLOSED = ("completed", "canceled", "duplicate")
"""Workflow state types of an issue that is not open."""


class Linear(Tracker):
    """Linear's GraphQL API (``<url>/graphql``); ``repository`` is the team key."""

    provider = "linear"
    default_url = LINEAR_API
    field_names: ClassVar[dict[str, str]] = {"url": "url", "secret": "credentialsSecret", "repository": "repository"}

    def __init__(self, *, done_state: str | None = None, **options: Any) -> None:
        super().__init__(**options)
        self.done_state = done_state

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": self._token} if self._token else {}  # a personal API key goes as it is

    def _tag(self, marker: str) -> str:
        return f"[longshot:{_clean_marker(marker)}]"

    def key(self, number: int) -> str:
        return f"{self.repository}-{int(number)}"

    def query(self, name: str, variables: Mapping[str, Any], what: str) -> dict[str, Any]:
        """The ``data`` of document ``name`` of :data:`LINEAR_DOCUMENTS`; GraphQL errors raised as their class."""
        response = self._request("POST", f"{self.base}/graphql", what=what, answers=(400,),
                                 json={"query": LINEAR_DOCUMENTS[name], "variables": dict(variables)})
        where = self._where(what)
        body = self._parsed(response, where)
        if not isinstance(body, dict):
            raise TrackerError(f"{where}: expected a JSON object, got {type(body).__name__}")
        errors = body.get("errors")
        if isinstance(errors, list) and errors:
            first = _obj(errors[0])
            ext = _obj(first.get("extensions"))
            code = str(ext.get("code") or "").upper()
            message = _scrubbed(str(first.get("message") or "an error"), self._token)
            if code == "RATELIMITED":
                reset = _linear_reset(response)
                raise RateLimited(f"{where}: rate limited ({message})", reset if reset else self.clock() + 60.0)
            if code in ("AUTHENTICATION_ERROR", "FORBIDDEN"):
                raise AuthError(f"{where}: Linear refused the API key ({message}); check the key in the Secret "
                                f"named by {self._named('secret')} and its access to team {self.repository}")
            raise ConfigurationError(f"{where}: {message}; check {self.field}.repository (the team key) and "
                                     f"{self.field}.doneState")
        if response.status_code != 200 or not isinstance(body.get("data"), dict):
            raise TrackerError(f"{where}: unexpected answer {response.status_code} without data")
        return _obj(body["data"])

    def list_issues(self, labels: Sequence[str] = ()) -> list[Issue]:
        issues: dict[int, Issue] = {}
        flt: dict[str, Any] = {"team": {"key": {"eq": self.repository}},
                               "state": {"type": {"nin": list(LINEAR_CLOSED)}}}
        if labels:
            flt["and"] = [{"labels": {"some": {"name": {"eq": label}}}} for label in labels]
        after: str | None = None
        where = self._where("issue listing")
        for page in range(MAX_PAGES + 1):
            if page == MAX_PAGES:
                raise TrackerError(f"{where}: more than {MAX_PAGES} pages; refusing to go on")
            data = self.query("issues", {"filter": flt, "first": LINEAR_PAGE, "after": after}, "listing issues")
            conn = _obj(data.get("issues"))
            for node in _json_list(conn.get("nodes"), where):
                issue = self._issue(node)
                if issue is not None and all(label in issue.labels for label in labels):
                    issues.setdefault(issue.number, issue)
            after = _next_cursor(conn)
            if after is None or len(issues) >= self.max_issues:
                break
        return [issues[n] for n in sorted(issues)][: self.max_issues]

    def _issue(self, node: Any) -> Issue | None:
        if not isinstance(node, dict):
            return None
        number, team = node.get("number"), node.get("team")
        if not isinstance(number, (int, float)) or isinstance(number, bool) or number != int(number) or number < 1:
            return None
        if not isinstance(team, dict) or team.get("key") != self.repository:
            return None
        label_conn = _obj(node.get("labels"))
        labels = tuple(_kept(n.get("name"), MAX_TITLE) for n in (label_conn.get("nodes") or [])[:100]
                       if isinstance(n, dict) and n.get("name"))
        assignee = _author(node, "assignee", "displayName")
        creator = node.get("creator")
        milestone = node.get("projectMilestone")
        return Issue(number=int(number), title=_kept(node.get("title"), MAX_TITLE),
                     body=_kept(node.get("description"), MAX_KEPT_BODY), labels=labels,
                     url=_kept(node.get("url"), 2048), assignees=(assignee,) if assignee else (),
                     milestone=_kept(milestone.get("name"), MAX_TITLE) if isinstance(milestone, dict)
                     and milestone.get("name") else None, author=_author(node, "creator", "displayName"),
                     # a workspace member who is not a guest may write; an integration's issue has no creator
                     author_writer=isinstance(creator, dict) and creator.get("guest") is False,
                     key=self.key(int(number)))

    def _comment_bodies(self, number: int) -> Iterable[str]:
        after: str | None = None
        where = self._where(f"comments of {self.key(number)}")
        for _ in range(MAX_PAGES):
            data = self.query("comments", {"id": self.key(number), "after": after},
                              f"reading the comments of {self.key(number)}")
            issue = _obj(data.get("issue"))
            conn = _obj(issue.get("comments"))
            for node in _json_list(conn.get("nodes"), where):
                if isinstance(node, dict) and isinstance(node.get("body"), str):
                    yield node["body"]
            after = _next_cursor(conn)
            if after is None:
                return
        raise TrackerError(f"{where}: more than {MAX_PAGES} pages")

    def comment(self, number: int, body: str, *, marker: str | None = None) -> bool:
        tag = self._tag(marker) if marker else ""
        if tag and any(tag in c for c in self._comment_bodies(number)):
            return False
        text = body if len(body) <= MAX_COMMENT else body[: MAX_COMMENT - 6] + " [...]"
        issue = self.query("comments", {"id": self.key(number)}, f"reading {self.key(number)}").get("issue")
        uid = issue.get("id") if isinstance(issue, dict) else None
        if not isinstance(uid, str):
            raise ConfigurationError(f"{self._where(self.key(number))}: the issue has no id")
        self.query("comment", {"input": {"issueId": uid[:100], "body": f"{text}\n\n{tag}" if tag else text}},
                   f"commenting on {self.key(number)}")
        return True

    def close_issue(self, number: int) -> None:
        """Move the issue to the state named ``done_state``, else the team's first ``completed`` state; an issue in
        a completed, canceled or duplicate state is left as it is."""
        data = self.query("states", {"id": self.key(number), "filter": {"team": {"key": {"eq": self.repository}}}},
                          f"reading the states of {self.key(number)}")
        issue = _obj(data.get("issue"))
        state = _obj(issue.get("state"))
        if state.get("type") in LINEAR_CLOSED:
            return
        states = _obj(data.get("workflowStates"))
        chosen = None
        for s in _json_list(states.get("nodes"), self._where("workflow states")):
            if not isinstance(s, dict) or not isinstance(s.get("id"), str):
                continue
            if (self.done_state is not None and str(s.get("name", "")).casefold() == self.done_state.casefold()) \
                    or (self.done_state is None and s.get("type") == "completed"):
                chosen = s["id"]
                break
        if chosen is None or not isinstance(issue.get("id"), str):
            wanted = f"named {self.done_state!r}" if self.done_state else "of type completed"
            raise ConfigurationError(f"{self._where('workflow states')}: team {self.repository} has no state "
                                     f"{wanted}; set {self.field}.doneState to one of its states")
        self.query("close", {"id": issue["id"][:100], "input": {"stateId": chosen[:100]}},
                   f"closing {self.key(number)}")

    def _spent_until(self, response: httpx.Response) -> float | None:
        if response.headers.get("x-ratelimit-requests-remaining", "").strip() == "0":
            return _linear_reset(response)
        return None

    def _rate_limit_wait(self, response: httpx.Response) -> float | None:
        if response.status_code != 429:
            return None
        retry_after = self._retry_after(response)
        return retry_after if retry_after is not None else (_linear_reset(response) or self.clock() + 60.0)


def _linear_reset(response: httpx.Response) -> float | None:
    """``X-RateLimit-Requests-Reset``: epoch milliseconds."""
    value = response.headers.get("x-ratelimit-requests-reset", "").strip()
    return int(value) / 1000.0 + 1.0 if value.isdigit() and len(value) < 20 else None


def _obj(value: Any) -> dict[str, Any]:
    """``value`` when it is a JSON object, else an empty one (a tracker's answer may hold anything)."""
    return value if isinstance(value, dict) else {}


def _next_cursor(conn: Mapping[str, Any]) -> str | None:
    info = _obj(conn.get("pageInfo"))
    cursor = info.get("endCursor")
    return cursor[:1024] if info.get("hasNextPage") is True and isinstance(cursor, str) and cursor else None


def _jira_user(user: Any) -> str:
    """A Jira account as Longshot names it: the account id (Cloud), else the user name (Data Center)."""
    if not isinstance(user, dict):
        return ""
    return _kept(user.get("accountId") or user.get("name"), MAX_TITLE) if (user.get("accountId") or
                                                                           user.get("name")) else ""


def _category(status: Any) -> str | None:
    category = status.get("statusCategory") if isinstance(status, dict) else None
    key = category.get("key") if isinstance(category, dict) else None
    return key if isinstance(key, str) else None


def _jql_quote(value: str) -> str:
    """A JQL string literal (backslash and double quote escaped; labels hold no comma or newline)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _scrubbed(text: str, token: str | None) -> str:
    text = " ".join(text[:1200].split())
    if token:
        text = text.replace(token, "***")
    return text[:300]


PROVIDERS: dict[str, type[Tracker]] = {"github": GitHub, "gitlab": GitLab, "jira": Jira, "linear": Linear}
MAX_MEMBER_LOOKUPS = 20
"""Most GitLab accounts whose access level one call of :meth:`GitLab.writers` looks up."""
DEVELOPER = 30
"""GitLab's access level Developer: the least that may push."""


def _people(item: dict[str, Any], key: str) -> tuple[str, ...]:
    """The assignees' logins/usernames (``assignees``, else the single ``assignee``), at most 20, each cut."""
    people = item.get("assignees")
    if not isinstance(people, list):
        people = [item.get("assignee")]
    return tuple(_kept(p.get(key), MAX_TITLE) for p in people[:20] if isinstance(p, dict) and p.get(key))


def _author(item: dict[str, Any], key: str, name: str) -> str:
    who = item.get(key)
    return _kept(who.get(name), MAX_TITLE) if isinstance(who, dict) and who.get(name) else ""


def _author_id(item: dict[str, Any]) -> int | None:
    who = item.get("author")
    uid = who.get("id") if isinstance(who, dict) else None
    return uid if isinstance(uid, int) and not isinstance(uid, bool) and uid > 0 else None


def _milestone(item: dict[str, Any]) -> str | None:
    m = item.get("milestone")
    return _kept(m.get("title"), MAX_TITLE) if isinstance(m, dict) and m.get("title") else None


def api_url(source: IssueSource) -> str:
    """The API base address of ``source`` (its ``url``, else the provider's public one)."""
    return source.url or PROVIDERS[source.provider].default_url


def make_tracker(source: IssueSource, token: str | None, *, email: str | None = None, **options: Any) -> Tracker:
    """The client for ``spec.planner.issues``; ``token`` is the Secret's ``token`` value (or None for a
    public project), ``email`` its ``email`` (Jira Cloud's basic auth). ``options`` go to :class:`Tracker`
    (transport, sleep, clock, max_wait, ...)."""
    if source.provider == "jira":
        return Jira(repository=source.repository, token=token, url=source.url, email=email,
                    done_state=source.done_state, **options)
    if source.provider == "linear":
        return Linear(repository=source.repository, token=token, url=source.url, done_state=source.done_state,
                      **options)
    return PROVIDERS[source.provider](repository=source.repository, token=token, url=source.url, **options)


# --- issues as tasks --------------------------------------------------------------------------------

def task_name(number: int) -> str:
    """The plan-local task name of issue ``number``: ``issue-<number>``."""
    return f"{TASK_PREFIX}{int(number)}"


def issue_number(name: str) -> int | None:
    """The issue number of a plan-local task name made by :func:`task_name`, else None."""
    match = re.fullmatch(rf"{TASK_PREFIX}([1-9][0-9]*)", name)
    return int(match.group(1)) if match else None


def describe(issue: Issue) -> str:
    """A task description from an issue: title, body (cut at :data:`MAX_BODY`) and where it comes from."""
    body = issue.body.strip()
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY].rstrip() + "\n[... the issue's text is cut here; read the issue for the rest]"
    parts = [issue.title.strip() or f"Issue #{issue.number}"]
    if body:
        parts.append(body)
    author = f" by {issue.author}" if issue.author else ""
    name = issue.key or f"#{issue.number}"
    where = f"Issue {name}{': ' + issue.url if issue.url else ''}"
    # anyone who can open an issue wrote this: it reaches the agent as untrusted data (core.taskinput.untrusted)
    text = "\n\n".join(parts)
    return f"{taskinput.untrusted(f'issue {name}{author}', text)}\n\n({where})"


def issues_to_tasks(issues: Iterable[Issue]) -> list[PlannedTask]:
    """One task per issue, by issue number, named ``issue-<number>``, without dependencies."""
    unique = {i.number: i for i in issues}
    return [PlannedTask(name=task_name(n), description=describe(unique[n])) for n in sorted(unique)]


def commit_reference(number: int, source: IssueSource | None = None) -> str:
    """The line the merge commit carries so the tracker links it to the issue: ``Refs #<n>`` (GitHub and GitLab
    link a ``#<n>`` in a commit message pushed to the project's repository), ``Refs <KEY>-<n>`` for Jira and Linear
    (their development integrations link an issue key named in a commit message)."""
    if source is not None and source.provider in ("jira", "linear"):
        return f"Refs {source.repository}-{int(number)}"
    return f"Refs #{int(number)}"


def result_comment(*, build: str, task: str, merged: bool, commit: str | None = None, summary: str = "",
                   reason: str = "") -> str:
    """The comment posted on an issue when its task ends (merged, or failed for good)."""
    if merged:
        head = f"Longshot build `{build}` merged a change for this issue" + (f" in {commit}." if commit else ".")
    else:
        head = f"Longshot build `{build}` could not complete this issue" + (f": {reason}" if reason else ".")
    lines = [head, "", f"Task: `{task}`"]
    if summary.strip():
        lines += ["", "Summary:", "", summary.strip()[:4000]]
    return "\n".join(lines)


def _link_next(header: str | None) -> str | None:
    """The ``rel="next"`` target of an RFC 8288 ``Link`` header."""
    if not header:
        return None
    for part in header[:MAX_LINK_HEADER].split(","):
        match = _LINK.match(part)
        if match and _REL_NEXT.search(match.group(2)):
            return match.group(1)
    return None


# The Link header is the tracker's (untrusted) text: RE2, linear in it by construction (the same patterns on
# Python's re measured linear too, 4 ms at 60 KiB; RE2 makes it a property of the engine, not of the pattern).
MAX_LINK_HEADER = 64 * 1024
_LINK = re2.compile(r'\s*<([^>]*)>\s*;(.*)$')
_REL_NEXT = re2.compile(r'(^|;)\s*rel\s*=\s*"?([^";]*\s)?next(\s[^";]*)?"?\s*(;|$)')


def _json_list(data: Any, where: str) -> list[Any]:
    if not isinstance(data, list):
        raise TrackerError(f"{where}: expected a JSON list, got {type(data).__name__}")
    return data


def _kept(value: Any, limit: int) -> str:
    """A text field of an issue, cut to ``limit`` characters (what is kept of 1,000 issues stays bounded)."""
    return str(value or "")[:limit]


def _clean_marker(marker: str | None) -> str:
    return re.sub(r"[^A-Za-z0-9._/-]", "-", marker or "")[:200]
