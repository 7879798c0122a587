"""Answers of GitHub's description that the clients read as a person's problem (issue 52): a repository that moved
(GitHub's 301 for a renamed or transferred repository, which its description lists for the issue calls) is not
followed and says so, and the forge's messages name the forge's own settings (``spec.merge.pullRequest``)."""

from __future__ import annotations

import httpx
import pytest

from longshot.api.buildrequest import PullRequestSettings
from longshot.runtime import forge as rf
from longshot.runtime import trackers

pytestmark = pytest.mark.unit

TOKEN = "ghp_" + "t0ken" * 8


def moved(request: httpx.Request) -> httpx.Response:
    return httpx.Response(301, json={"message": "Moved Permanently", "url": "https://api.github.com/repositories/9",
                                     "documentation_url": "https://docs.github.com/rest"},
                          headers={"Location": f"https://api.github.com/repositories/9/issues?x={TOKEN}"})


def test_a_moved_repository_is_a_configuration_error_and_is_not_followed():
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return moved(request)

    client = trackers.GitHub(repository="org/old", token=TOKEN, transport=httpx.MockTransport(handler),
                             sleep=lambda s: None)
    with client, pytest.raises(trackers.ConfigurationError) as caught:
        client.list_issues()
    message = str(caught.value)
    assert "301: the repository has moved (renamed or transferred, to /repositories/9/issues)" in message
    assert "set planner.issues.repository to its new name" in message
    assert len(seen) == 1 and TOKEN not in message  # asked once, not followed, not retried


def test_the_forges_messages_name_its_own_settings():
    settings = PullRequestSettings.model_validate({"project": "o/r", "tokenSecretRef": {"name": "forge"}})

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/pulls/7"):
            return httpx.Response(404, json={"message": "Not Found"})
        return moved(request)

    with rf.make_forge(settings, TOKEN, transport=httpx.MockTransport(handler), sleep=lambda s: None) as f:
        with pytest.raises(rf.ForgeError) as missing:
            f.get_pull(7)
        with pytest.raises(rf.ForgeError) as gone:
            f.find_open_pull("topic", "main")
    assert "check merge.pullRequest.provider, apiUrl and project" in str(missing.value)
    assert "set merge.pullRequest.project to its new name" in str(gone.value)
