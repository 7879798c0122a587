"""Egress through a real HTTP proxy (issue 55, item 5): Debian's tinyproxy on loopback, with a config written here.

The gateway's model calls and the operator's tracker calls go through the proxy (its log shows each forward
request or CONNECT); a destination outside the allowlist is refused before the proxy hears of it (its log never
names it); a ``NO_PROXY`` destination goes direct (still guarded). ``make test-tools`` installs tinyproxy
(hack/cluster/install-deps.sh); the fixture installs it the same way when it is missing.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_attempts import make_attempt, secret
from gateway_fakes import Reply, fake_model, openai_json
from tracker_server import FakeClock, tracker_server

from longshot import config
from longshot.net import guard as gd
from longshot.net import transport as tr
from longshot.runtime import trackers
from longshot_testing import wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "ghp_" + "pr0xy" * 8


@dataclass
class Proxy:
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def lines(self) -> list[str]:
        """The requests the proxy received (``GET http://...`` or ``CONNECT host:port``)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return [line.split("): ", 1)[1] for line in text.splitlines() if "Request (file descriptor" in line]

    def allow(self) -> dict[str, Any]:
        """The allowlist entry that lets the operator and the gateway connect to this proxy."""
        return {"cidr": "127.0.0.1/32", "purposes": ["proxy"], "ports": [self.port]}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tinyproxy() -> str:
    path = shutil.which("tinyproxy") or ("/usr/bin/tinyproxy" if Path("/usr/bin/tinyproxy").exists() else None)
    if path is None:
        subprocess.run(["bash", str(ROOT / "hack/cluster/install-deps.sh"), "tinyproxy"], check=True)
        path = shutil.which("tinyproxy") or "/usr/bin/tinyproxy"
    return path


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Proxy]:
    """tinyproxy in the foreground on 127.0.0.1, logging every request it receives."""
    binary = _tinyproxy()
    p = Proxy(_free_port(), tmp_path / "tinyproxy.log")
    conf = tmp_path / "tinyproxy.conf"
    conf.write_text(f'Port {p.port}\nListen 127.0.0.1\nTimeout 30\nLogFile "{p.log}"\nLogLevel Info\n'
                    "MaxClients 16\nAllow 127.0.0.1\nDisableViaHeader Yes\n")
    process = subprocess.Popen([binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: _listening(p.port), timeout=20, what="tinyproxy listening")
        yield p
    finally:
        process.terminate()
        process.wait(10)


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/")[0])


# --- the gateway: model calls ------------------------------------------------------------------------------------

@pytest.fixture
def models() -> Iterator[tuple[Any, Any]]:
    """A model endpoint the allowlist lists, and one it does not."""
    with fake_model() as listed, fake_model() as unlisted:
        yield listed, unlisted


@pytest.fixture
def gateway_settings(gateway_settings: Any, proxy: Proxy, models: tuple[Any, Any]) -> Any:
    """The tier's gateway sending through the proxy: loopback allowed for the proxy on its port, and for model on
    the listed endpoint's port only (no legacy loopback allowance)."""
    listed, _ = models
    allow = [proxy.allow(), {"cidr": "127.0.0.1/32", "purposes": ["model"], "ports": [_port(listed.url)]}]
    return gateway_settings.replace(egress_allowed_cidrs="", egress_allow=json.dumps(allow),
                                    egress_proxy_url=proxy.url)


def _chat(gateway: Any, a: Any) -> httpx.Response:
    body = {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}
    return httpx.post(f"{gateway.url}/model/openai/chat/completions", json=body, headers=a.headers, timeout=60)


def test_a_model_call_goes_through_the_proxy_and_an_unlisted_one_never_reaches_it(
        gateway: Any, proxy: Proxy, models: tuple[Any, Any], core_v1: Any, custom: Any, namespace: str) -> None:
    listed, unlisted = models
    secret(core_v1, namespace, "llm-key", {"api-key": "sk-upstream-0123456789abcdefghij"})

    def attempt(build: str, url: str) -> Any:
        spec = {"agent": {"backend": "openai", "model": "gpt-test", "baseUrl": f"{url}/v1",
                          "credentialsSecret": "llm-key"}}
        return make_attempt(core_v1, custom, namespace, gateway.url, build=build, task=f"{build}-t1",
                            build_spec=spec)

    # outside the allowlist: refused by the gateway before it asks the proxy for anything
    r = _chat(gateway, attempt("off", unlisted.url))
    assert r.status_code == 403, r.text
    assert r.json()["error"]["message"].startswith("longshot-gateway: spec.agent.baseUrl"), r.text

    listed.script(Reply(body=openai_json("gpt-test", (10, 5))))
    r = _chat(gateway, attempt("on", listed.url))
    assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "ok", r.text
    assert [s.path for s in listed.seen] == ["/v1/chat/completions"]
    forwarded = f"POST http://127.0.0.1:{_port(listed.url)}/v1/chat/completions HTTP/1.1"
    wait_for(lambda: forwarded in proxy.lines(), timeout=10, what="the model call in the proxy's log")
    # the proxy's log has the allowed call and nothing about the refused destination
    assert not [line for line in proxy.lines() if f":{_port(unlisted.url)}" in line], proxy.lines()
    assert unlisted.seen == []


# --- the operator: tracker calls, NO_PROXY, CONNECT --------------------------------------------------------------

def _operator_guard(proxy: Proxy, tracker_port: int, **settings: Any) -> gd.Guard:
    """The operator's guard as its manager builds it (``gd.for_policy(settings.egress_policy(),
    settings.proxies())``), from settings naming the proxy and the tracker."""
    allow = [proxy.allow(), {"cidr": "127.0.0.1/32", "purposes": ["tracker"], "ports": [tracker_port]}]
    s = config.Settings(egress_allowed_cidrs="", egress_allow=json.dumps(allow), egress_proxy_url=proxy.url,
                        **settings)
    return gd.Guard(s.egress_policy(), proxies=s.proxies())


def _list(server: Any, guard: gd.Guard, clock: FakeClock) -> list[int]:
    server.project("org/app").add(1, "Issue 1", labels=["longshot"])
    with trackers.GitHub(repository="org/app", token=TOKEN, url=server.github_url, sleep=clock.sleep, clock=clock,
                         egress=guard) as t:
        return [i.number for i in t.list_issues(["longshot"])]


def test_a_tracker_call_from_the_operator_goes_through_the_proxy(proxy: Proxy) -> None:
    clock = FakeClock()
    with tracker_server(clock, TOKEN) as server:
        assert _list(server, _operator_guard(proxy, server.port), clock) == [1]
        assert [r.path for r in server.requests] == ["/github/repos/org/app/issues"]
    wait_for(lambda: any(line.startswith(f"GET http://127.0.0.1:{server.port}/github/repos/org/app/issues")
                         for line in proxy.lines()), timeout=10, what="the tracker call in the proxy's log")
    assert not any(TOKEN in line for line in proxy.log.read_text().splitlines())  # tinyproxy logs no headers


def test_a_no_proxy_destination_goes_direct_and_is_still_guarded(proxy: Proxy) -> None:
    clock = FakeClock()
    with tracker_server(clock, TOKEN) as server:
        guard = _operator_guard(proxy, server.port, egress_no_proxy="localhost,127.0.0.0/8")
        assert _list(server, guard, clock) == [1]
        assert len(server.requests) == 1
        # direct, still guarded: a port the allowlist does not name is refused
        with httpx.Client(transport=tr.GuardedTransport(guard, "spec.planner.issues.url", purpose="tracker"),
                          trust_env=False) as c, pytest.raises(tr.EgressRefused, match="port-not-allowed"):
            c.get(f"http://127.0.0.1:{proxy.port}/")
    assert proxy.lines() == []  # the proxy heard nothing: neither call went through it


def test_an_https_destination_is_a_connect_to_its_checked_host_and_port(proxy: Proxy) -> None:
    clock = FakeClock()
    with tracker_server(clock, TOKEN) as server:
        guard = _operator_guard(proxy, server.port)
        transport = tr.GuardedTransport(guard, "spec.planner.issues.url", purpose="tracker")
        with httpx.Client(transport=transport, trust_env=False) as c:
            with pytest.raises(tr.EgressRefused, match="port-not-allowed"):
                c.get(f"https://127.0.0.1:{server.port + 1 if server.port < 65535 else 1}/")
            # the tracker speaks plain HTTP: the TLS handshake inside the tunnel fails, after the proxy's CONNECT
            with pytest.raises(httpx.TransportError):
                c.get(f"https://127.0.0.1:{server.port}/github")
    wait_for(lambda: f"CONNECT 127.0.0.1:{server.port} HTTP/1.1" in proxy.lines(), timeout=10,
             what="the CONNECT in the proxy's log")
    assert len(proxy.lines()) == 1, proxy.lines()  # the refused destination never reached the proxy
