"""How the gateway's own git reaches a build's repository: credentials in a 0600 file for one use, never in the
environment or the URL."""

from __future__ import annotations

import base64
import pathlib
import stat

import pytest

from longshot.api import handoff
from longshot.gateway import gitserve
from longshot.gateway.identity import Caller
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def caller(url: str, secret: str | None = "git-token", namespace: str = "ns") -> Caller:
    ti = handoff.TaskInput(task="b-t", build="b", namespace=namespace, role="worker", description="d",
                           repository_url=url, branch="longshot/b/b-t")
    repo = {"url": url, **({"credentialsSecret": secret} if secret else {})}
    return Caller(namespace=namespace, pod="b-t-a1", pod_uid="u", task="b-t", attempt=1, role="worker", build="b",
                  task_input=ti, task_obj={"metadata": {"uid": "t"}}, build_obj={"spec": {"repository": repo}})


@pytest.fixture
def service(tmp_path):
    return gitserve.GitService(GatewaySettings(mirror_dir=str(tmp_path / "m")))


def test_a_password_becomes_a_basic_header_in_a_private_file_for_one_use_never_in_the_environment(service):
    up = service.upstream(caller("https://git.example.com/o/r.git"), {"username": "bot", "token": "s3cret-t0ken"})
    header = "Authorization: Basic " + base64.b64encode(b"bot:s3cret-t0ken").decode()
    assert up.url == "https://git.example.com/o/r.git"
    assert up.credential == [("http.extraHeader", header)]
    assert not any("s3cret" in v or header in v for v in up.env.values())
    with service.credential_file(up) as path:
        assert path is not None
        f = pathlib.Path(path)
        assert f.parent == service.keys and stat.S_IMODE(f.stat().st_mode) == 0o600
        assert f.read_text() == f'[http]\n\textraHeader = "{header}"\n'
    assert not f.exists()
    assert "s3cret" not in up.redact(f"fatal: https://bot:s3cret-t0ken@git.example.com/ {header}")


def test_without_an_http_credential_there_is_no_file(service):
    with service.credential_file(service.upstream(caller("https://h/r.git"), None)) as path:
        assert path is None
    assert list(service.keys.iterdir()) == []


def test_an_ssh_key_is_a_private_file_used_by_git_ssh_command(service):
    up = service.upstream(caller("git@git.example.com:o/r.git"), {"ssh-privatekey": "KEY", "known_hosts": "h k"})
    key = service.keys / f"{up.key}.key"
    assert key.read_text() == "KEY\n" and stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"-i {key}" in up.env["GIT_SSH_COMMAND"] and "StrictHostKeyChecking=yes" in up.env["GIT_SSH_COMMAND"]


def test_mirrors_are_per_namespace_secret_and_url(service):
    a = service.upstream(caller("https://h/r.git"), None)
    assert a.key != service.upstream(caller("https://h/r.git", namespace="other"), None).key
    assert a.key != service.upstream(caller("https://h/r.git", secret="another"), None).key
    assert a.key == service.upstream(caller("https://h/r.git"), None).key


def test_file_urls_only_when_allowed(service, tmp_path):
    with pytest.raises(gitserve.UpstreamError, match="file:// URL"):
        service.upstream(caller("file:///etc/some.git"), None)
    allowed = gitserve.GitService(GatewaySettings(mirror_dir=str(tmp_path / "m2"), allow_file_urls=True))
    assert allowed.upstream(caller("file:///srv/r.git"), None).url == "file:///srv/r.git"
    assert "[protocol \"file\"]" in allowed.config.read_text()
    assert "[protocol \"file\"]" not in service.config.read_text()
