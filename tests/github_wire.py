"""GitHub's REST objects and webhook payloads as GitHub sends them: every field its published description
(tests/fixtures/contracts/github-rest.json, github-webhooks.json) requires, with the values the stand-ins
(tests/integration/tracker_server.py, forge_server.py) decide and plausible ones for the rest.

The stand-ins build their answers here and tests/forge_contract.py checks every answer against the description, so
a field GitHub requires that is missing here, or one of the wrong type, fails the tests that use the stand-ins.
"""

from __future__ import annotations

import hashlib
from typing import Any

WHEN = "2026-01-01T00:00:00Z"
HTML = "https://github.example"
"""The web address of the stand-ins' GitHub (``html_url``s)."""
API = "https://api.github.example"
"""The API address written into the objects' ``url`` fields (the client never follows them)."""


def node_id(kind: str, number: int) -> str:
    return f"{kind}_kw{number:08d}"


def user_id(login: str) -> int:
    """A stable id per login."""
    return 5000 + int(hashlib.sha256(login.encode()).hexdigest()[:6], 16) % 1_000_000


def simple_user(login: str, uid: int | None = None) -> dict[str, Any]:
    uid = user_id(login) if uid is None else uid
    base = f"{API}/users/{login}"
    return {"login": login, "id": uid, "node_id": node_id("U", uid), "avatar_url": f"{HTML}/avatars/{uid}",
            "gravatar_id": "", "url": base, "html_url": f"{HTML}/{login}", "followers_url": f"{base}/followers",
            "following_url": f"{base}/following{{/other_user}}", "gists_url": f"{base}/gists{{/gist_id}}",
            "starred_url": f"{base}/starred{{/owner}}{{/repo}}", "subscriptions_url": f"{base}/subscriptions",
            "organizations_url": f"{base}/orgs", "repos_url": f"{base}/repos",
            "events_url": f"{base}/events{{/privacy}}",
            "received_events_url": f"{base}/received_events", "type": "User", "site_admin": False,
            "user_view_type": "public"}


# the repository's URL templates (GitHub answers every one of them)
_REPO_TEMPLATES = {
    "archive_url": "/{archive_format}{/ref}", "assignees_url": "/assignees{/user}", "blobs_url": "/git/blobs{/sha}",
    "branches_url": "/branches{/branch}", "collaborators_url": "/collaborators{/collaborator}",
    "comments_url": "/comments{/number}", "commits_url": "/commits{/sha}", "compare_url": "/compare/{base}...{head}",
    "contents_url": "/contents/{+path}", "contributors_url": "/contributors", "deployments_url": "/deployments",
    "downloads_url": "/downloads", "events_url": "/events", "forks_url": "/forks",
    "git_commits_url": "/git/commits{/sha}", "git_refs_url": "/git/refs{/sha}", "git_tags_url": "/git/tags{/sha}",
    "hooks_url": "/hooks", "issue_comment_url": "/issues/comments{/number}",
    "issue_events_url": "/issues/events{/number}",
    "issues_url": "/issues{/number}", "keys_url": "/keys{/key_id}", "labels_url": "/labels{/name}",
    "languages_url": "/languages", "merges_url": "/merges", "milestones_url": "/milestones{/number}",
    "notifications_url": "/notifications{?since,all,participating}", "pulls_url": "/pulls{/number}",
    "releases_url": "/releases{/id}", "stargazers_url": "/stargazers", "statuses_url": "/statuses/{sha}",
    "subscribers_url": "/subscribers", "subscription_url": "/subscription", "tags_url": "/tags",
    "teams_url": "/teams", "trees_url": "/git/trees{/sha}",
}


def repository(path: str, rid: int = 1, *, default_branch: str = "main") -> dict[str, Any]:
    """The full ``repository`` object of ``owner/name``."""
    owner, _, name = path.partition("/")
    url = f"{API}/repos/{path}"
    return {"id": rid, "node_id": node_id("R", rid), "name": name, "full_name": path, "owner": simple_user(owner),
            "private": False, "html_url": f"{HTML}/{path}", "description": None, "fork": False, "url": url,
            **{k: url + v for k, v in _REPO_TEMPLATES.items()},
            "git_url": f"git://github.example/{path}.git", "ssh_url": f"git@github.example:{path}.git",
            "clone_url": f"{HTML}/{path}.git", "svn_url": f"{HTML}/{path}", "mirror_url": None, "homepage": None,
            "language": "Python", "forks_count": 0, "forks": 0, "stargazers_count": 0, "watchers_count": 0,
            "watchers": 0, "size": 1, "default_branch": default_branch, "open_issues_count": 0, "open_issues": 0,
            "is_template": False, "topics": [], "has_issues": True, "has_projects": False, "has_wiki": False,
            "has_pages": False, "has_downloads": True, "has_discussions": False, "archived": False,
            "disabled": False, "visibility": "public", "pushed_at": WHEN, "created_at": WHEN, "updated_at": WHEN,
            "license": None, "allow_forking": True, "web_commit_signoff_required": False}


def label(path: str, name: str) -> dict[str, Any]:
    lid = 700 + int(hashlib.sha256(name.encode()).hexdigest()[:5], 16) % 100_000
    return {"id": lid, "node_id": node_id("LA", lid), "url": f"{API}/repos/{path}/labels/{name}", "name": name,
            "description": f"Label {name}", "color": "ededed", "default": False}


def milestone(path: str, title: str, number: int = 1) -> dict[str, Any]:
    url = f"{API}/repos/{path}/milestones/{number}"
    return {"url": url, "html_url": f"{HTML}/{path}/milestone/{number}", "labels_url": f"{url}/labels",
            "id": 300 + number, "node_id": node_id("MI", number), "number": number, "state": "open",
            "title": title, "description": None, "creator": simple_user("alice"), "open_issues": 1,
            "closed_issues": 0, "created_at": WHEN, "updated_at": WHEN, "closed_at": None, "due_on": None}


def reactions(url: str) -> dict[str, Any]:
    return {"url": f"{url}/reactions", "total_count": 0, "+1": 0, "-1": 0, "laugh": 0, "confused": 0, "heart": 0,
            "hooray": 0, "eyes": 0, "rocket": 0}


def issue(path: str, number: int, title: str, *, body: str | None = None, state: str = "open",
          labels: list[str] | tuple[str, ...] = (), assignees: list[str] | tuple[str, ...] = (),
          milestone_title: str | None = None, author: str = "alice", association: str = "NONE",
          pull_request: bool = False, comments: int = 0, author_id: int | None = None) -> dict[str, Any]:
    """An ``issue`` (as GitHub lists it; ``pull_request`` for a pull request, which the issue listing also
    returns)."""
    url = f"{API}/repos/{path}/issues/{number}"
    kind = "pull" if pull_request else "issues"
    people = [simple_user(a) for a in assignees]
    out: dict[str, Any] = {
        "id": 100_000 + number, "node_id": node_id("I", number), "url": url, "repository_url": f"{API}/repos/{path}",
        "labels_url": f"{url}/labels{{/name}}", "comments_url": f"{url}/comments", "events_url": f"{url}/events",
        "html_url": f"{HTML}/{path}/{kind}/{number}", "number": number, "state": state,
        "state_reason": "completed" if state == "closed" else None, "title": title, "body": body,
        "user": simple_user(author, author_id), "labels": [label(path, x) for x in labels],
        "assignee": people[0] if people else None, "assignees": people,
        "milestone": milestone(path, milestone_title) if milestone_title else None, "locked": False,
        "active_lock_reason": None, "comments": comments, "closed_at": WHEN if state == "closed" else None,
        "created_at": WHEN, "updated_at": WHEN, "author_association": association, "reactions": reactions(url),
    }
    if pull_request:
        out["pull_request"] = {"url": f"{API}/repos/{path}/pulls/{number}",
                               "html_url": f"{HTML}/{path}/pull/{number}",
                               "diff_url": f"{HTML}/{path}/pull/{number}.diff",
                               "patch_url": f"{HTML}/{path}/pull/{number}.patch", "merged_at": None}
    return out


def issue_comment(path: str, number: int, cid: int, body: str, *, author: str = "longshot-bot") -> dict[str, Any]:
    url = f"{API}/repos/{path}/issues/comments/{cid}"
    return {"id": cid, "node_id": node_id("IC", cid), "url": url,
            "html_url": f"{HTML}/{path}/issues/{number}#issuecomment-{cid}", "body": body,
            "user": simple_user(author), "created_at": WHEN, "updated_at": WHEN,
            "issue_url": f"{API}/repos/{path}/issues/{number}", "author_association": "NONE",
            "reactions": reactions(url)}


def _link(href: str) -> dict[str, str]:
    return {"href": href}


def pull_request(path: str, number: int, *, title: str, body: str | None, state: str, head_ref: str,
                 head_sha: str, base_ref: str, base_sha: str, merged: bool, merge_commit_sha: str | None,
                 merged_by: str | None = None, mergeable: bool | None, mergeable_state: str,
                 labels: list[str] | tuple[str, ...] = (), author: str = "longshot-bot",
                 full: bool = True, auto_merge: str | None = None) -> dict[str, Any]:
    """A ``pull-request`` (``full``: as one pull request is read) or ``pull-request-simple`` (as listed);
    ``auto_merge``: the merge method auto-merge is on with (GitHub's ``auto-merge`` object), None when off."""
    api = f"{API}/repos/{path}"
    url = f"{api}/pulls/{number}"
    repo = repository(path)
    owner = path.partition("/")[0]
    out: dict[str, Any] = {
        "url": url, "id": 200_000 + number, "node_id": node_id("PR", number),
        "html_url": f"{HTML}/{path}/pull/{number}", "diff_url": f"{HTML}/{path}/pull/{number}.diff",
        "patch_url": f"{HTML}/{path}/pull/{number}.patch", "issue_url": f"{api}/issues/{number}",
        "commits_url": f"{url}/commits", "review_comments_url": f"{url}/comments",
        "review_comment_url": f"{api}/pulls/comments{{/number}}", "comments_url": f"{api}/issues/{number}/comments",
        "statuses_url": f"{api}/statuses/{head_sha}", "number": number, "state": state, "locked": False,
        "title": title, "user": simple_user(author), "body": body, "labels": [label(path, x) for x in labels],
        "milestone": None, "active_lock_reason": None, "created_at": WHEN, "updated_at": WHEN,
        "closed_at": WHEN if state == "closed" else None, "merged_at": WHEN if merged else None,
        "merge_commit_sha": merge_commit_sha, "assignee": None, "assignees": [], "requested_reviewers": [],
        "requested_teams": [],
        "head": {"label": f"{owner}:{head_ref}", "ref": head_ref, "sha": head_sha, "user": simple_user(owner),
                 "repo": repo},
        "base": {"label": f"{owner}:{base_ref}", "ref": base_ref, "sha": base_sha, "user": simple_user(owner),
                 "repo": repo},
        "_links": {"self": _link(url), "html": _link(f"{HTML}/{path}/pull/{number}"),
                   "issue": _link(f"{api}/issues/{number}"), "comments": _link(f"{api}/issues/{number}/comments"),
                   "review_comments": _link(f"{url}/comments"),
                   "review_comment": _link(f"{api}/pulls/comments{{/number}}"), "commits": _link(f"{url}/commits"),
                   "statuses": _link(f"{api}/statuses/{head_sha}")},
        "author_association": "NONE", "draft": False,
        "auto_merge": None if auto_merge is None else {
            "enabled_by": simple_user(author), "merge_method": auto_merge,
            "commit_title": f"{title} (#{number})", "commit_message": ""},
    }
    if full:
        out.update({"merged": merged, "mergeable": mergeable, "rebaseable": mergeable,
                    "mergeable_state": mergeable_state, "merged_by": simple_user(merged_by) if merged_by else None,
                    "comments": 0, "review_comments": 0, "maintainer_can_modify": False, "commits": 1,
                    "additions": 1, "deletions": 0, "changed_files": 1})
    return out


def review(path: str, number: int, rid: int, *, login: str, uid: int | None = None, state: str, body: str,
           commit_id: str | None, association: str) -> dict[str, Any]:
    html = f"{HTML}/{path}/pull/{number}#pullrequestreview-{rid}"
    return {"id": rid, "node_id": node_id("PRR", rid), "user": simple_user(login, uid), "body": body,
            "state": state, "html_url": html, "pull_request_url": f"{API}/repos/{path}/pulls/{number}",
            "_links": {"html": _link(html), "pull_request": _link(f"{API}/repos/{path}/pulls/{number}")},
            "submitted_at": WHEN, "commit_id": commit_id, "author_association": association}


def review_comment(path: str, number: int, cid: int, *, review_id: int, body: str, file: str, line: int | None,
                   commit_id: str, login: str, association: str) -> dict[str, Any]:
    url = f"{API}/repos/{path}/pulls/comments/{cid}"
    html = f"{HTML}/{path}/pull/{number}#discussion_r{cid}"
    return {"url": url, "pull_request_review_id": review_id, "id": cid, "node_id": node_id("PRRC", cid),
            "diff_hunk": "@@ -1 +1 @@", "path": file, "position": line, "original_position": line or 1,
            "commit_id": commit_id, "original_commit_id": commit_id, "user": simple_user(login), "body": body,
            "created_at": WHEN, "updated_at": WHEN, "html_url": html,
            "pull_request_url": f"{API}/repos/{path}/pulls/{number}", "author_association": association,
            "_links": {"self": _link(url), "html": _link(html),
                       "pull_request": _link(f"{API}/repos/{path}/pulls/{number}")},
            "line": line, "original_line": line, "side": "RIGHT"}


def status(path: str, sha: str, sid: int, *, state: str, context: str, description: str | None,
           target_url: str | None = None, creator: str = "longshot-bot") -> dict[str, Any]:
    return {"url": f"{API}/repos/{path}/statuses/{sha}", "avatar_url": None, "id": sid,
            "node_id": node_id("SC", sid), "state": state, "description": description, "target_url": target_url,
            "context": context, "created_at": WHEN, "updated_at": WHEN, "creator": simple_user(creator)}


def combined_status(path: str, sha: str, statuses: list[dict[str, Any]]) -> dict[str, Any]:
    """``GET /repos/{o}/{r}/commits/{ref}/status``: the latest status of each context and their combined state."""
    states = {x["state"] for x in statuses}
    state = ("failure" if states & {"failure", "error"} else "pending" if "pending" in states or not states
             else "success")
    repo = repository(path)
    minimal = {k: v for k, v in repo.items() if k not in ("git_url", "ssh_url", "clone_url", "svn_url")}
    return {"state": state, "sha": sha, "total_count": len(statuses),
            "statuses": [{k: v for k, v in x.items() if k != "creator"} for x in statuses],
            "repository": minimal, "commit_url": f"{API}/repos/{path}/commits/{sha}",
            "url": f"{API}/repos/{path}/commits/{sha}/status"}


def check_run(path: str, sha: str, cid: int, *, name: str, status: str, conclusion: str | None,
              details_url: str | None = None, title: str | None = None, summary: str | None = None,
              external_id: str = "") -> dict[str, Any]:
    """A ``check-run`` as GitHub answers ``POST /repos/{o}/{r}/check-runs`` and lists it for a commit."""
    return {"id": cid, "node_id": node_id("CR", cid), "head_sha": sha, "external_id": external_id,
            "url": f"{API}/repos/{path}/check-runs/{cid}", "html_url": f"{HTML}/{path}/runs/{cid}",
            "details_url": details_url, "status": status, "conclusion": conclusion, "started_at": WHEN,
            "completed_at": WHEN if status == "completed" else None, "name": name,
            "output": {"title": title, "summary": summary, "text": None, "annotations_count": 0,
                       "annotations_url": f"{API}/repos/{path}/check-runs/{cid}/annotations"},
            "check_suite": {"id": 5000 + cid}, "app": None, "pull_requests": []}


def merge_result(sha: str, message: str = "Pull Request successfully merged") -> dict[str, Any]:
    return {"sha": sha, "merged": True, "message": message}


def error(message: str, *, status: int | None = None) -> dict[str, Any]:
    """GitHub's ``basic-error`` (``validation-error`` for a 422 adds ``errors``)."""
    out: dict[str, Any] = {"message": message, "documentation_url": "https://docs.github.com/rest"}
    if status is not None:
        out["status"] = str(status)
    return out


# --- webhooks ------------------------------------------------------------------------------------------------------

HOOK_HEADERS = ("User-Agent", "X-GitHub-Hook-ID", "X-GitHub-Event", "X-GitHub-Hook-Installation-Target-ID",
                "X-GitHub-Hook-Installation-Target-Type", "X-GitHub-Delivery", "X-Hub-Signature-256")


def hook_headers(event: str, signature: str, delivery: str = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
                 ) -> dict[str, str]:
    """The headers GitHub sends with a delivery (``X-Hub-Signature-256``: the caller's HMAC of the body)."""
    return {"User-Agent": "GitHub-Hookshot/044aadd", "X-GitHub-Hook-ID": "292430182", "X-GitHub-Event": event,
            "X-GitHub-Hook-Installation-Target-ID": "79929171", "X-GitHub-Hook-Installation-Target-Type": "repository",
            "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": signature}


def issues_event(action: str, path: str, item: dict[str, Any], *, sender: str = "alice") -> dict[str, Any]:
    """An ``issues`` webhook payload (``opened``, ``labeled``, ...) about ``item`` (an :func:`issue`)."""
    out: dict[str, Any] = {"action": action, "issue": item, "repository": repository(path),
                           "sender": simple_user(sender)}
    if action in ("labeled", "unlabeled"):
        out["label"] = item["labels"][-1] if item["labels"] else label(path, "longshot")
    if action in ("assigned", "unassigned"):
        out["assignee"] = item["assignee"]
    if action == "edited":
        out["changes"] = {"title": {"from": "an earlier title"}}
    return out


def ping_event(path: str, hook_id: int = 292430182) -> dict[str, Any]:
    return {"zen": "Keep it logically awesome.", "hook_id": hook_id,
            "hook": {"type": "Repository", "id": hook_id, "name": "web", "active": True, "events": ["issues"],
                     "config": {"content_type": "json", "insecure_ssl": "0", "url": "https://longshot.example/intake"},
                     "updated_at": WHEN, "created_at": WHEN, "url": f"{API}/repos/{path}/hooks/{hook_id}",
                     "test_url": f"{API}/repos/{path}/hooks/{hook_id}/test",
                     "ping_url": f"{API}/repos/{path}/hooks/{hook_id}/pings",
                     "deliveries_url": f"{API}/repos/{path}/hooks/{hook_id}/deliveries",
                     "last_response": {"code": None, "status": "unused", "message": None}},
            "repository": repository(path), "sender": simple_user("alice")}
