"""runtime.forge's reads of the CI gate (``spec.merge.gate``) against an httpx MockTransport: GitHub's combined
status and check runs (paginated), GitLab's commit statuses and the commit's pipeline; the token never in a
message."""

from __future__ import annotations

import httpx
import pytest

from longshot.api.buildrequest import PullRequestSettings
from longshot.core import cigate
from longshot.runtime import forge as rf

TOKEN = "ghp_secret_token_value"
SHA = "a" * 40


def forge(handler: object, provider: str = "github") -> rf.Forge:
    settings = PullRequestSettings.model_validate({
        "provider": provider, "project": "o/r", "tokenSecretRef": {"name": "forge"},
        "apiUrl": "https://forge.example/api" if provider == "github" else "https://gl.example/api/v4"})
    return rf.make_forge(settings, TOKEN, transport=httpx.MockTransport(handler),  # type: ignore[arg-type]
                         sleep=lambda s: None)


def run(i: int, name: str, status: str, conclusion: str | None) -> dict[str, object]:
    return {"id": i, "name": name, "status": status, "conclusion": conclusion,
            "details_url": f"https://ci.example/runs/{i}", "output": {"title": f"run {i}", "summary": None}}


def test_github_reads_the_combined_status_and_every_page_of_check_runs() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        assert request.headers["authorization"] == f"Bearer {TOKEN}"
        if request.url.path == f"/api/repos/o/r/commits/{SHA}/status":
            return httpx.Response(200, json={"state": "pending", "statuses": [
                {"context": "ci/lint", "state": "success", "target_url": "https://ci.example/lint",
                 "description": "ok"},
                {"context": "ci/slow", "state": "pending", "target_url": None, "description": None}]})
        if request.url.path == f"/api/repos/o/r/commits/{SHA}/check-runs":
            if request.url.params.get("page") == "2":
                return httpx.Response(200, json={"total_count": 2, "check_runs": [run(2, "e2e", "in_progress", None)]})
            nxt = f"https://forge.example/api/repos/o/r/commits/{SHA}/check-runs?per_page=100&page=2"
            return httpx.Response(200, json={"total_count": 2,
                                             "check_runs": [run(1, "ci/test", "completed", "failure")]},
                                  headers={"link": f'<{nxt}>; rel="next"'})
        return httpx.Response(404, json={"message": "Not Found"})

    with forge(handler) as f:
        reports = f.checks(SHA, ("ci/test",))
    assert [(r.name, r.state, r.source) for r in reports] == [
        ("ci/lint", "passed", "status"), ("ci/slow", "pending", "status"), ("ci/test", "failed", "check-run"),
        ("e2e", "pending", "check-run")]
    assert reports[2].url == "https://ci.example/runs/1" and reports[2].description == "run 1"
    assert len(seen) == 3 and "per_page=100" in seen[1]
    v = cigate.verdict(("ci/lint", "ci/test"), reports, 0, 60)
    assert (v.state, v.check, v.url) == ("failed", "ci/test", "https://ci.example/runs/1")


def test_github_check_run_pages_are_bounded() -> None:
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        if request.url.path.endswith("/status"):
            return httpx.Response(200, json={"state": "success", "statuses": []})
        calls += 1
        nxt = f"https://forge.example/api/repos/o/r/commits/{SHA}/check-runs?page={calls + 1}"
        return httpx.Response(200, json={"total_count": 10_000,
                                         "check_runs": [run(calls, f"c{calls}", "queued", None)]},
                              headers={"link": f'<{nxt}>; rel="next"'})

    with forge(handler) as f:
        assert len(f.checks(SHA, ("x",))) == rf.MAX_CHECK_PAGES
    assert calls == rf.MAX_CHECK_PAGES


def test_gitlab_reads_the_statuses_and_the_latest_pipeline_only_when_required() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.raw_path.decode().partition("?")[0]
        seen.append(path)
        assert request.headers["private-token"] == TOKEN
        if path == f"/api/v4/projects/o%2Fr/repository/commits/{SHA}/statuses":
            return httpx.Response(200, json=[{"name": "test", "status": "failed", "target_url": "https://ci/j/1",
                                              "description": "3 failures"}])
        if path == "/api/v4/projects/o%2Fr/pipelines":
            assert request.url.params["sha"] == SHA and request.url.params["per_page"] == "1"
            return httpx.Response(200, json=[{"id": 9, "status": "running", "web_url": "https://gl/p/9"}])
        return httpx.Response(404, json={"message": "404 Not found"})

    with forge(handler, "gitlab") as f:
        reports = f.checks(SHA, ("pipeline",))
        assert [(r.name, r.state, r.url) for r in reports] == [("test", "failed", "https://ci/j/1"),
                                                              ("pipeline", "pending", "https://gl/p/9")]
        assert len(seen) == 2
        seen.clear()
        assert [r.name for r in f.checks(SHA, ("test",))] == ["test"]
        assert len(seen) == 1


def test_a_refused_read_names_the_forge_never_the_token() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={"message": f"Bad credentials {TOKEN}"})

    with forge(handler) as f, pytest.raises(rf.ForgeError) as e:
        f.checks(SHA, ("ci/test",))
    assert TOKEN not in str(e.value)
