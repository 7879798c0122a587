"""Forge clients for ``spec.merge.delivery: pullRequest``: GitHub pull requests and GitLab merge requests (httpx,
synchronous; the shell runs them with ``asyncio.to_thread``).

Built on the issue trackers' clients (:mod:`longshot.runtime.trackers`): the same token handling (one request
header, scrubbed from every message, never in a URL, log line, status or Event), rate limits (waited for up to
``max_wait``, else :class:`~longshot.runtime.trackers.RateLimited` with the time to try again), bounded answers
(:data:`~longshot.runtime.trackers.MAX_RESPONSE_BYTES`, a read deadline, a page cap), timeouts and retries of
server errors.

What a poll needs (:meth:`Forge.facts`) is read with a few requests: the pull request (by its number, or the open
one whose head is the branch), and its reviews. The effects of ``core.forge`` are one call each:
:meth:`Forge.open_pull`, :meth:`Forge.post_status`, :meth:`Forge.merge` (a refusal, 405/406/409/422, is an answer,
not an error: the forge's message comes back for the condition), :meth:`Forge.enable_auto_merge` (GitHub: the
GraphQL mutation ``enablePullRequestAutoMerge``, :data:`ENABLE_AUTO_MERGE`, at ``<api>/graphql``, or
``/api/graphql`` for an Enterprise Server's ``/api/v3``; GitLab: ``PUT .../merge`` with
``merge_when_pipeline_succeeds``).
"""

from __future__ import annotations

import dataclasses
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from longshot.api.buildrequest import PullRequestSettings
from longshot.core import cigate
from longshot.core import forge as fc
from longshot.runtime import trackers as tr

if TYPE_CHECKING:
    import httpx

MAX_REVIEWS_PAGES = 10
"""Most pages of reviews read (100 a page)."""
MAX_PULLS = 100
MAX_CHECK_PAGES = 5
"""Most pages (100 a page) of a commit's statuses, check runs or pipelines read for the CI gate
(``spec.merge.gate``): 500 reports of one commit; a required check past them counts as not reported."""
API_URL_FIELD = "spec.merge.pullRequest.apiUrl"
REFUSALS = (405, 406, 409, 422)
"""Answers to a merge request that mean "not now" (branch protection, required checks, a moved head, conflicts)."""

ENABLE_AUTO_MERGE = """mutation EnableAutoMerge($id: ID!, $method: PullRequestMergeMethod!, $head: GitObjectID) {
  enablePullRequestAutoMerge(input: {pullRequestId: $id, mergeMethod: $method, expectedHeadOid: $head}) {
    pullRequest { number state merged autoMergeRequest { enabledAt mergeMethod } }
  }
}"""
"""The one GraphQL document the GitHub forge client sends; checked against GitHub's published schema
(tests/fixtures/contracts/github-graphql.graphql, hack/github_graphql_schema.py)."""
GRAPHQL_METHODS = {"merge": "MERGE", "squash": "SQUASH", "rebase": "REBASE"}

ForgeError = tr.TrackerError
RateLimited = tr.RateLimited
AuthError = tr.AuthError


@dataclass(frozen=True)
class MergeResult:
    merged: bool
    commit: str | None
    message: str


class Forge(tr.Tracker):
    """The calls of delivery through pull requests, on top of a tracker client."""

    kind: ClassVar[str] = "pull request"
    field_names: ClassVar[dict[str, str]] = {"url": "apiUrl", "secret": "tokenSecretRef", "repository": "project"}

    def _paged(self, url: str, *, what: str, where: str) -> Iterator[Any]:
        """The items of a listing, page after page (``Link: rel=next``), at most :data:`MAX_REVIEWS_PAGES` pages."""
        next_url: str | None = url
        pages = 0
        while next_url is not None and pages < MAX_REVIEWS_PAGES:
            pages += 1
            response = self._request("GET", next_url, what=what)
            yield from tr._json_list(self._parsed(response, self._where(where)), self._where(where))
            next_url = self._next_page(response)

    # --- what callers use --------------------------------------------------------------------------

    def facts(self, *, number: int | None, branch: str, target: str, status_posted_on: str = "") -> fc.PullFacts:
        """The pull request's facts: by ``number`` when known, else the open one from ``branch`` to ``target``
        (none: ``exists=False``). ``status_posted_on``: the head Longshot's status was last posted on."""
        pull = self.get_pull(number) if number else self.find_open_pull(branch, target)
        if pull is None:
            return fc.PullFacts(exists=False)
        reviews = self.reviews(pull.number, pull.head) if pull.state == "open" and not pull.merged else ()
        return dataclasses.replace(pull, reviews=tuple(reviews),
                                   status_posted=bool(status_posted_on) and status_posted_on == pull.head)

    def find_open_pull(self, branch: str, target: str) -> fc.PullFacts | None:
        raise NotImplementedError

    def get_pull(self, number: int) -> fc.PullFacts | None:
        raise NotImplementedError

    def reviews(self, number: int, head: str) -> list[fc.Review]:
        raise NotImplementedError

    def open_pull(self, branch: str, target: str, title: str, body: str, labels: tuple[str, ...]) -> fc.PullFacts:
        raise NotImplementedError

    def post_status(self, sha: str, state: str, description: str, *, context: str = fc.GATE_CONTEXT) -> None:
        raise NotImplementedError

    def merge(self, number: int, method: str, sha: str) -> MergeResult:
        raise NotImplementedError

    def enable_auto_merge(self, number: int, node_id: str, method: str, sha: str) -> MergeResult:
        """Hand pull request ``number`` to the forge's auto-merge. ``merged``: the forge merged it at once
        (``commit``, when it names it); else ``message`` empty: auto-merge is on; a message: the forge refused."""
        raise NotImplementedError

    def checks(self, sha: str, required: tuple[str, ...]) -> list[cigate.Report]:
        """The CI's reports on commit ``sha`` (``spec.merge.gate``), newest first within each source; bounded
        (:data:`MAX_CHECK_PAGES` pages, each text :data:`core.cigate.MAX_TEXT`)."""
        raise NotImplementedError

    def _pages(self, url: str, *, what: str, key: str | None = None) -> Iterator[Any]:
        """The items of a listing (a JSON list, or the list under ``key`` of an object), page after page, at most
        :data:`MAX_CHECK_PAGES` pages."""
        next_url: str | None = url
        pages = 0
        while next_url is not None and pages < MAX_CHECK_PAGES:
            pages += 1
            response = self._request("GET", next_url, what=what)
            data = self._parsed(response, self._where(what))
            if key is not None:
                data = data.get(key) if isinstance(data, dict) else None
            yield from tr._json_list(data, self._where(what))
            next_url = self._next_page(response)

    def __enter__(self) -> Forge:
        return self

    # --- plumbing ----------------------------------------------------------------------------------

    def _json(self, method: str, url: str, *, what: str, json: Any = None) -> Any:
        response = self._request(method, url, what=what, json=json)
        return self._parsed(response, self._where(what))

    def _url_field(self) -> str:
        return API_URL_FIELD

    def _once(self, method: str, url: str, *, what: str, json: Any = None) -> httpx.Response:
        """One request whose non-2xx answers the caller reads itself (a merge's refusal); rate limits and an
        unreachable forge raise as in :meth:`_request`."""
        self._wait_until(self._resume_at, what)
        headers = {"Accept": "application/json", **self._auth_headers()}
        self.requests += 1
        try:
            response = self._bounded(self._client.build_request(method, url, headers=headers, json=json), what)
        except self._refused as e:
            raise tr.ConfigurationError(str(e)) from None
        except self._transport_error as e:
            raise ForgeError(f"{self._where(what)}: cannot reach the forge ({type(e).__name__})") from None
        spent = self._spent_until(response)
        if spent is not None:
            self._resume_at = max(self._resume_at, spent)
        retry_at = self._rate_limit_wait(response)
        if retry_at is not None:
            self._resume_at = max(self._resume_at, retry_at)
            raise RateLimited(f"{self._where(what)}: rate limited", retry_at)
        if response.status_code in (401, 403):
            raise AuthError(f"{self._where(what)}: the forge refused the token ({response.status_code} "
                            f"{self._detail(response)}); check spec.merge.pullRequest.tokenSecretRef")
        return response


def _text(value: Any, limit: int = fc.MAX_REVIEW_TEXT) -> str:
    return str(value or "")[:limit]


def _node_id(value: Any) -> str:
    text = str(value or "")
    return text if len(text) <= 100 and text.replace("_", "").replace("-", "").replace("=", "").isalnum() else ""


def _sha(value: Any) -> str:
    text = str(value or "")
    return text if 7 <= len(text) <= 64 and all(ch in "0123456789abcdef" for ch in text) else ""


class GitHubForge(Forge, tr.GitHub):
    """GitHub's pull requests, reviews, commit statuses and merges."""

    def _pull(self, item: Any) -> fc.PullFacts | None:
        if not isinstance(item, dict) or not isinstance(item.get("number"), int):
            return None
        head: dict[str, Any] = item["head"] if isinstance(item.get("head"), dict) else {}
        mergeable = item.get("mergeable")
        return fc.PullFacts(exists=True, number=item["number"], url=_text(item.get("html_url"), 2048),
                            state="closed" if item.get("state") == "closed" else "open",
                            merged=bool(item.get("merged")) or bool(item.get("merged_at")),
                            merge_commit=_sha(item.get("merge_commit_sha")) or None,
                            head=_sha(head.get("sha")),
                            mergeable=mergeable if isinstance(mergeable, bool) else None,
                            mergeable_state=_text(item.get("mergeable_state"), 64),
                            node_id=_node_id(item.get("node_id")),
                            auto_merge=isinstance(item.get("auto_merge"), dict))

    def find_open_pull(self, branch: str, target: str) -> fc.PullFacts | None:
        owner = self.repository.partition("/")[0]
        query = urllib.parse.urlencode({"state": "open", "head": f"{owner}:{branch}", "base": target,
                                        "per_page": str(MAX_PULLS)})
        items = self._json("GET", f"{self._repo_path()}/pulls?{query}", what=f"finding the pull request of {branch}")
        for item in items if isinstance(items, list) else []:
            pull = self._pull(item)
            if pull is not None:
                return self.get_pull(pull.number)  # the listing has no mergeability
        return None

    def get_pull(self, number: int) -> fc.PullFacts | None:
        return self._pull(self._json("GET", f"{self._repo_path()}/pulls/{int(number)}",
                                     what=f"reading pull request #{number}"))

    def reviews(self, number: int, head: str) -> list[fc.Review]:
        out: list[fc.Review] = []
        for item in self._paged(f"{self._repo_path()}/pulls/{int(number)}/reviews?per_page=100",
                                what=f"reading the reviews of pull request #{number}", where="reviews"):
            if not isinstance(item, dict):
                continue
            user: dict[str, Any] = item["user"] if isinstance(item.get("user"), dict) else {}
            out.append(fc.Review(user=_text(user.get("login"), 255), state=_text(item.get("state"), 32),
                                 body=_text(item.get("body")), commit=_sha(item.get("commit_id")),
                                 id=item["id"] if isinstance(item.get("id"), int) else 0,
                                 writer=fc.github_writer(item.get("author_association"))))
        latest = fc.latest_reviews(out)
        asking = {r.id for r in latest.values() if r.state == "CHANGES_REQUESTED" and r.commit == head and r.id}
        return [fc.Review(r.user, r.state, r.body, r.commit, self._review_comments(number, r.id), r.id, r.writer)
                if r.id in asking else r for r in out]

    def _review_comments(self, number: int, review: int) -> tuple[str, ...]:
        items = self._json("GET", f"{self._repo_path()}/pulls/{int(number)}/reviews/{int(review)}/comments"
                                  f"?per_page={fc.MAX_REVIEW_COMMENTS}",
                           what=f"reading the comments of a review of pull request #{number}")
        out = []
        for item in (items if isinstance(items, list) else [])[: fc.MAX_REVIEW_COMMENTS]:
            if isinstance(item, dict) and item.get("body"):
                line = item.get("line") or item.get("original_line")
                where = f"{_text(item.get('path'), 500)}:{line}: " if item.get("path") else ""
                out.append(where + _text(item.get("body")))
        return tuple(out)

    def open_pull(self, branch: str, target: str, title: str, body: str, labels: tuple[str, ...]) -> fc.PullFacts:
        item = self._json("POST", f"{self._repo_path()}/pulls", what=f"opening a pull request from {branch}",
                          json={"title": title[:250], "head": branch, "base": target, "body": body[:60_000]})
        pull = self._pull(item)
        if pull is None:
            raise ForgeError(f"{self._where('opening a pull request')}: the answer names no pull request")
        if labels:
            self._request("POST", f"{self._repo_path()}/issues/{pull.number}/labels",
                          what=f"labelling pull request #{pull.number}", json={"labels": list(labels)})
        return pull

    def post_status(self, sha: str, state: str, description: str, *, context: str = fc.GATE_CONTEXT) -> None:
        self._request("POST", f"{self._repo_path()}/statuses/{_sha(sha) or 'invalid'}",
                      what=f"posting the gate's status on {sha[:12]}",
                      json={"state": state, "context": context, "description": description[:140]})

    def merge(self, number: int, method: str, sha: str) -> MergeResult:
        what = f"merging pull request #{number}"
        response = self._once("PUT", f"{self._repo_path()}/pulls/{int(number)}/merge", what=what,
                              json={"merge_method": method, "sha": sha})
        if response.status_code in REFUSALS:
            return MergeResult(False, None, self._detail(response).strip("()"))
        if response.status_code >= 300:
            raise ForgeError(f"{self._where(what)}: unexpected answer {response.status_code} "
                             f"{self._detail(response)}")
        try:
            data = self._parsed(response, self._where(what))
        except ForgeError:
            data = {}
        data = data if isinstance(data, dict) else {}
        return MergeResult(bool(data.get("merged", True)), _sha(data.get("sha")) or None,
                           _text(data.get("message"), 500))

    def _graphql_url(self) -> str:
        """GitHub's GraphQL endpoint: ``https://api.github.com/graphql``; an Enterprise Server's ``/api/graphql``
        next to its REST ``/api/v3``."""
        if self.base.endswith("/api/v3"):
            return self.base.removesuffix("/v3") + "/graphql"
        return f"{self.base}/graphql"

    def enable_auto_merge(self, number: int, node_id: str, method: str, sha: str) -> MergeResult:
        what = f"enabling auto-merge on pull request #{number}"
        if not node_id:
            raise ForgeError(f"{self._where(what)}: the pull request's answer carried no node_id")
        response = self._request("POST", self._graphql_url(), what=what,
                                 json={"query": ENABLE_AUTO_MERGE,
                                       "variables": {"id": node_id, "method": GRAPHQL_METHODS.get(method, "MERGE"),
                                                     "head": _sha(sha) or None}})
        body = self._parsed(response, self._where(what))
        body = body if isinstance(body, dict) else {}
        errors = body.get("errors")
        if isinstance(errors, list) and errors:  # GitHub answers refusals as GraphQL errors with a 200
            first = errors[0] if isinstance(errors[0], dict) else {}
            return MergeResult(False, None, tr._scrubbed(_text(first.get("message"), 500), self._token)
                               or "refused")
        data = body.get("data") if isinstance(body.get("data"), dict) else {}
        payload = data.get("enablePullRequestAutoMerge") if isinstance(data, dict) else None
        pull = payload.get("pullRequest") if isinstance(payload, dict) else None
        if not isinstance(pull, dict):
            raise ForgeError(f"{self._where(what)}: the answer names no pull request")
        return MergeResult(bool(pull.get("merged")), None, "")


    def checks(self, sha: str, required: tuple[str, ...]) -> list[cigate.Report]:
        commit = _sha(sha) or "invalid"
        out: list[cigate.Report] = []
        # the combined status: the latest status of each context (one page of 100 contexts)
        combined = self._json("GET", f"{self._repo_path()}/commits/{commit}/status?per_page=100",
                              what=f"reading the statuses of {commit[:12]}")
        statuses = combined.get("statuses") if isinstance(combined, dict) else None
        for item in (statuses if isinstance(statuses, list) else [])[:100]:
            if isinstance(item, dict) and item.get("context"):
                out.append(cigate.Report(_text(item.get("context"), 255), cigate.github_status(item.get("state")),
                                         _text(item.get("target_url"), cigate.MAX_TEXT),
                                         _text(item.get("description"), cigate.MAX_TEXT), "status"))
        # the check runs (the latest of each name: GitHub's default filter), newest first
        for item in self._pages(f"{self._repo_path()}/commits/{commit}/check-runs?per_page=100",
                                what=f"reading the check runs of {commit[:12]}", key="check_runs"):
            if not isinstance(item, dict) or not item.get("name"):
                continue
            output: dict[str, Any] = item["output"] if isinstance(item.get("output"), dict) else {}
            out.append(cigate.Report(_text(item.get("name"), 255),
                                     cigate.github_check_run(item.get("status"), item.get("conclusion")),
                                     _text(item.get("details_url") or item.get("html_url"), cigate.MAX_TEXT),
                                     _text(output.get("title") or output.get("summary"), cigate.MAX_TEXT),
                                     "check-run"))
        return out


class GitLabForge(Forge, tr.GitLab):
    """GitLab's merge requests, approvals, commit statuses and merges. Approvals count as reviews. GitLab has no
    changes-requested review state in its REST API; its equivalent is an unresolved diff discussion: each reviewer's
    unresolved, resolvable diff notes (``GET merge_requests/{iid}/discussions``) count as a changes-requested review
    on the commit they were written on (``position.head_sha``), after their approval, so a fixer gets them while they
    are on the tested commit, and they hold the merge request (stale) until resolved once it moved on. General
    (non-diff) discussions name no commit and send no fixer."""

    kind = "merge request"

    def _pull(self, item: Any) -> fc.PullFacts | None:
        if not isinstance(item, dict) or not isinstance(item.get("iid"), int):
            return None
        state = item.get("state")
        merged = state == "merged"
        detailed = _text(item.get("detailed_merge_status") or item.get("merge_status"), 64)
        mergeable: bool | None
        if detailed in ("checking", "unchecked", "preparing", "cannot_be_merged_recheck"):
            mergeable = None
        else:
            mergeable = detailed in ("mergeable", "can_be_merged", "not_approved")
        return fc.PullFacts(exists=True, number=item["iid"], url=_text(item.get("web_url"), 2048),
                            state="open" if state in ("opened", "locked") else "closed", merged=merged,
                            merge_commit=(_sha(item.get("merge_commit_sha")) or _sha(item.get("squash_commit_sha"))
                                          or None),
                            head=_sha(item.get("sha")), mergeable=mergeable, mergeable_state=detailed,
                            auto_merge=item.get("merge_when_pipeline_succeeds") is True)

    def find_open_pull(self, branch: str, target: str) -> fc.PullFacts | None:
        query = urllib.parse.urlencode({"state": "opened", "source_branch": branch, "target_branch": target,
                                        "per_page": str(MAX_PULLS)})
        items = self._json("GET", f"{self._project_path()}/merge_requests?{query}",
                           what=f"finding the merge request of {branch}")
        for item in items if isinstance(items, list) else []:
            pull = self._pull(item)
            if pull is not None:
                return self.get_pull(pull.number)
        return None

    def get_pull(self, number: int) -> fc.PullFacts | None:
        return self._pull(self._json("GET", f"{self._project_path()}/merge_requests/{int(number)}",
                                     what=f"reading merge request !{number}"))

    def reviews(self, number: int, head: str) -> list[fc.Review]:
        data = self._json("GET", f"{self._project_path()}/merge_requests/{int(number)}/approvals",
                          what=f"reading the approvals of merge request !{number}")
        approvers = data.get("approved_by") if isinstance(data, dict) else None
        ids: dict[str, int] = {}
        out = []
        for a in (approvers if isinstance(approvers, list) else [])[:100]:
            user: dict[str, Any] = a["user"] if isinstance(a, dict) and isinstance(a.get("user"), dict) else {}
            name = _text(user.get("username"), 255)
            if isinstance(user.get("id"), int):
                ids.setdefault(name, user["id"])
            out.append(fc.Review(user=name, state="APPROVED", commit=head))
        # threads on the head come last: they are an author's latest word (core.forge.latest_reviews)
        out += sorted(self._unresolved(number, ids), key=lambda r: r.commit == head)
        writers = self.writers(ids)
        return [dataclasses.replace(r, writer=r.user in writers) for r in out]

    def _unresolved(self, number: int, ids: dict[str, int] | None = None) -> list[fc.Review]:
        """Each author's unresolved diff notes as one changes-requested review per commit they name (bounded: pages,
        notes, text); their user ids go into ``ids``."""
        ids = {} if ids is None else ids
        by: dict[tuple[str, str], list[str]] = {}
        for d in self._paged(f"{self._project_path()}/merge_requests/{int(number)}/discussions?per_page=100",
                             what=f"reading the discussions of merge request !{number}", where="discussions"):
            notes = d.get("notes") if isinstance(d, dict) else None
            for note in (notes if isinstance(notes, list) else [])[:100]:
                if not isinstance(note, dict) or note.get("system") or not note.get("resolvable") \
                        or note.get("resolved"):
                    continue
                position: dict[str, Any] = note["position"] if isinstance(note.get("position"), dict) else {}
                commit = _sha(position.get("head_sha"))
                if not commit:
                    continue
                author: dict[str, Any] = note["author"] if isinstance(note.get("author"), dict) else {}
                path = _text(position.get("new_path") or position.get("old_path"), 500)
                line = position.get("new_line") or position.get("old_line")
                where = f"{path}:{line}: " if path else ""
                name = _text(author.get("username"), 255)
                if isinstance(author.get("id"), int):
                    ids.setdefault(name, author["id"])
                texts = by.setdefault((name, commit), [])
                if len(texts) < fc.MAX_REVIEW_COMMENTS:
                    texts.append(where + _text(note.get("body")))
        return [fc.Review(user=user, state="CHANGES_REQUESTED", commit=commit,
                          body=f"{len(texts)} unresolved discussion{'s' if len(texts) != 1 else ''} on the merge "
                               "request", comments=tuple(texts))
                for (user, commit), texts in by.items()]

    def open_pull(self, branch: str, target: str, title: str, body: str, labels: tuple[str, ...]) -> fc.PullFacts:
        payload: dict[str, Any] = {"source_branch": branch, "target_branch": target, "title": title[:250],
                                   "description": body[:60_000]}
        if labels:
            payload["labels"] = ",".join(labels)
        pull = self._pull(self._json("POST", f"{self._project_path()}/merge_requests",
                                     what=f"opening a merge request from {branch}", json=payload))
        if pull is None:
            raise ForgeError(f"{self._where('opening a merge request')}: the answer names no merge request")
        return pull

    def post_status(self, sha: str, state: str, description: str, *, context: str = fc.GATE_CONTEXT) -> None:
        self._request("POST", f"{self._project_path()}/statuses/{_sha(sha) or 'invalid'}",
                      what=f"posting the gate's status on {sha[:12]}",
                      json={"state": "failed" if state == "failure" else state, "name": context,
                            "description": description[:140]})

    def merge(self, number: int, method: str, sha: str) -> MergeResult:
        what = f"merging merge request !{number}"
        response = self._once("PUT", f"{self._project_path()}/merge_requests/{int(number)}/merge", what=what,
                              json={"sha": sha, "squash": method == "squash"})
        if response.status_code in REFUSALS:
            return MergeResult(False, None, self._detail(response).strip("()"))
        if response.status_code >= 300:
            raise ForgeError(f"{self._where(what)}: unexpected answer {response.status_code} "
                             f"{self._detail(response)}")
        try:
            pull = self._pull(self._parsed(response, self._where(what)))
        except ForgeError:
            pull = None
        if pull is None:
            return MergeResult(True, None, "")
        return MergeResult(pull.merged, pull.merge_commit, "")

    def enable_auto_merge(self, number: int, node_id: str, method: str, sha: str) -> MergeResult:
        what = f"setting merge request !{number} to merge when its pipeline succeeds"
        response = self._once("PUT", f"{self._project_path()}/merge_requests/{int(number)}/merge", what=what,
                              json={"sha": sha, "squash": method == "squash", "merge_when_pipeline_succeeds": True})
        if response.status_code in REFUSALS:
            return MergeResult(False, None, self._detail(response).strip("()") or "refused")
        if response.status_code >= 300:
            raise ForgeError(f"{self._where(what)}: unexpected answer {response.status_code} "
                             f"{self._detail(response)}")
        pull = self._pull(self._parsed(response, self._where(what)))
        if pull is None:
            raise ForgeError(f"{self._where(what)}: the answer names no merge request")
        if pull.merged:
            return MergeResult(True, pull.merge_commit, "")
        if not pull.auto_merge:
            return MergeResult(False, None, f"the merge request is not set to merge ({pull.mergeable_state})")
        return MergeResult(False, None, "")


    def checks(self, sha: str, required: tuple[str, ...]) -> list[cigate.Report]:
        commit = _sha(sha) or "invalid"
        out: list[cigate.Report] = []
        # the latest commit status of each name (GitLab's default; each CI job reports one under its name)
        for item in self._pages(f"{self._project_path()}/repository/commits/{commit}/statuses?per_page=100",
                                what=f"reading the statuses of {commit[:12]}"):
            if isinstance(item, dict) and item.get("name"):
                out.append(cigate.Report(_text(item.get("name"), 255), cigate.gitlab_status(item.get("status")),
                                         _text(item.get("target_url"), cigate.MAX_TEXT),
                                         _text(item.get("description"), cigate.MAX_TEXT), "status"))
        if "pipeline" in required:  # the commit's latest pipeline, under the name ``pipeline``
            query = urllib.parse.urlencode({"sha": commit, "order_by": "id", "sort": "desc", "per_page": "1"})
            items = self._json("GET", f"{self._project_path()}/pipelines?{query}",
                               what=f"reading the pipelines of {commit[:12]}")
            for item in (items if isinstance(items, list) else [])[:1]:
                if isinstance(item, dict):
                    out.append(cigate.Report("pipeline", cigate.gitlab_status(item.get("status")),
                                             _text(item.get("web_url"), cigate.MAX_TEXT),
                                             f"pipeline {item.get('id')} {_text(item.get('status'), 32)}",
                                             "pipeline"))
        return out


FORGES: dict[str, type[Forge]] = {"github": GitHubForge, "gitlab": GitLabForge}


def make_forge(settings: PullRequestSettings, token: str | None, **options: Any) -> Forge:
    """The client for ``spec.merge.pullRequest``; ``token`` is the Secret key's value. ``options`` go to
    :class:`~longshot.runtime.trackers.Tracker` (transport, sleep, clock, max_wait, egress, ...). With ``egress``
    the API address is checked against the policy first and every connection goes only to addresses it allows
    (refusals name ``spec.merge.pullRequest.apiUrl``)."""
    cls = FORGES[settings.provider]
    egress = options.get("egress")
    if egress is not None and options.get("transport") is None:
        from longshot.net import guard as gd
        from longshot.net import transport as egress_transport

        try:
            egress.check_url(settings.api_url or cls.default_url, API_URL_FIELD, purpose="forge")
        except gd.Refused as e:
            raise tr.ConfigurationError(str(e)) from None
        options["transport"] = egress_transport.GuardedTransport(egress, API_URL_FIELD, purpose="forge")
    options.setdefault("field", "merge.pullRequest")
    return cls(repository=settings.project, token=token, url=settings.api_url, **options)
