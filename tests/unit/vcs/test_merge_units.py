"""Pure parts of the merge queue: queue order and positions, trailers, requests from MergeJobs, names."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from longshot.runtime import leader
from longshot.vcs import merge, workspace


def job(name: str, priority: int | None, created: str, namespace: str = "ns") -> dict[str, object]:
    spec: dict[str, object] = {"branch": f"longshot/b/{name}", "target": "main"}
    if priority is not None:
        spec["priority"] = priority
    return {"metadata": {"name": name, "namespace": namespace, "creationTimestamp": created}, "spec": spec}


def test_order_is_priority_first_then_arrival() -> None:
    jobs = [job("old-low", 1, "2025-01-01T00:00:00Z"), job("new-high", 10, "2025-01-01T00:05:00Z"),
            job("mid-later", 5, "2025-01-01T00:02:00Z"), job("mid-earlier", None, "2025-01-01T00:01:00Z"),
            job("old-high", 10, "2025-01-01T00:00:30Z")]
    assert [j["metadata"]["name"] for j in merge.order(jobs)] == [  # type: ignore[index]
        "old-high", "new-high", "mid-earlier", "mid-later", "old-low"]


def test_same_time_is_broken_by_name_and_positions_start_at_zero() -> None:
    jobs = [job("b", 5, "2025-01-01T00:00:00Z"), job("a", 5, "2025-01-01T00:00:00Z")]
    assert merge.positions(jobs) == {"ns/a": 0, "ns/b": 1}
    assert merge.positions([]) == {}


def test_add_and_parse_trailers() -> None:
    plain = merge.add_trailer("Add a", "Longshot-Merge", "ns/mj-1")
    assert plain == "Add a\n\nLongshot-Merge: ns/mj-1\n"
    signed = merge.add_trailer("Add a\n\nBody.\n\nSigned-off-by: A <a@x>\n", "Longshot-Merge", "ns/mj-1")
    assert signed.endswith("Signed-off-by: A <a@x>\nLongshot-Merge: ns/mj-1\n")
    assert merge.add_trailer(signed, "Longshot-Merge", "ns/mj-1") == signed  # no duplicate
    assert merge.trailer_values(signed) == ["ns/mj-1"]
    assert merge.parse_trailers(signed) == [("Signed-off-by", "A <a@x>"), ("Longshot-Merge", "ns/mj-1")]


@pytest.mark.parametrize("message", [
    "Longshot-Merge: ns/mj-1",  # a subject line is not a trailer block
    "Fix\n\nLongshot-Merge: ns/mj-1\nthis line is prose",  # a paragraph with prose is not a trailer block
    "Fix\n\nmentions Longshot-Merge: ns/mj-1 in passing",
])
def test_text_that_is_not_a_trailer_is_ignored(message: str) -> None:
    assert merge.trailer_values(message) == []


def test_trailer_keys_are_case_insensitive_and_continuations_fold() -> None:
    msg = "Fix\n\nlongshot-merge: ns/mj-2\nNote: long\n  value"
    assert merge.trailer_values(msg) == ["ns/mj-2"]
    assert merge.parse_trailers(msg)[-1] == ("Note", "long value")


def test_request_from_a_mergejob_object() -> None:
    body = {"metadata": {"namespace": "team", "name": "mj-7", "creationTimestamp": "2025-03-01T10:00:00Z"},
            "spec": {"buildRef": {"name": "rest-api"}, "taskRef": {"name": "t7"}, "branch": "longshot/rest-api/t7",
                     "commit": "abc1234", "target": "main", "strategy": "merge-commit", "priority": 7}}
    req = merge.MergeRequest.from_mergejob(body)
    assert (req.namespace, req.name, req.branch, req.target, req.strategy, req.commit, req.task, req.build) == (
        "team", "mj-7", "longshot/rest-api/t7", "main", "merge-commit", "abc1234", "t7", "rest-api")
    assert req.merge_id == "team/mj-7"
    assert req.not_before == datetime(2025, 3, 1, 10, 0, tzinfo=UTC)


def test_result_is_frozen() -> None:
    result = merge.MergeResult("Merged", "abc", (), "ok", 0.1)
    with pytest.raises(AttributeError):
        result.outcome = "Error"  # type: ignore[misc]


def test_lease_name_is_a_stable_dns_name_per_repository() -> None:
    name = leader.lease_name_for("ns", "git", "https://git.example.com/org/app.git")
    assert re.fullmatch(r"longshot-shard-[0-9a-f]{16}", name)
    assert len(name) <= 63
    for same in ("https://git.example.com/org/app", "https://GIT.example.com/org/app.git/",
                 "https://user:token@git.example.com/org/app.git", " https://git.example.com/org/app/ "):
        assert leader.lease_name_for("ns", "git", same) == name, same
    assert leader.lease_name_for("ns", "git", "https://git.example.com/org/other.git") != name
    assert leader.lease_name_for("ns", "git", "https://git.example.com/Org/app.git") != name  # case-sensitive paths
    assert leader.lease_name_for("other", "git", "https://git.example.com/org/app.git") != name  # another tenant


def test_credentials_reach_git_through_the_environment_only(tmp_path: object) -> None:
    from pathlib import Path

    creds = workspace.GitCredentials(username="bot", password="s3cret-token-value",
                                     extra_header="Authorization: Bearer header-token-123")
    env = creds.environment(Path(str(tmp_path)) / "private")
    assert env["LONGSHOT_GIT_ASKPASS_PASSWORD"] == "s3cret-token-value"
    assert env["GIT_CONFIG_KEY_0"] == "http.extraHeader"
    assert "s3cret" not in Path(env["GIT_ASKPASS"]).read_text()
    assert "s3cret" not in repr(creds) and "header-token" not in repr(creds)
    text = "fatal: could not read https://bot:s3cret-token-value@h/x; header-token-123"
    assert "s3cret" not in workspace.redact(text, creds.secrets)
    assert "header-token-123" not in workspace.redact(text, creds.secrets)
