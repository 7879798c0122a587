"""Resolve, check, connect to what was checked: ``longshot.net`` against a real HTTP server on loopback, with an
injected resolver (names that no DNS knows, and a name that rebinds between two lookups)."""

from __future__ import annotations

import asyncio
import http.server
import threading
from collections.abc import Iterator

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import egress
from longshot.net import guard as gd
from longshot.net import transport as tr
from property_budget import examples

pytestmark = pytest.mark.unit
FIELD = "spec.agent.baseUrl"


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.hosts.append(self.headers.get("Host", ""))  # type: ignore[attr-defined]
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[http.server.ThreadingHTTPServer]:
    s = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    s.hosts = []  # type: ignore[attr-defined]
    t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield s
    s.shutdown()
    s.server_close()


class Resolver:
    """Answers from a table; each name's answers in turn (the last one repeats): a rebinding DNS."""

    def __init__(self, table: dict[str, list[list[str]]]) -> None:
        self.table = table
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.table.get(host, [[]])
        return answers.pop(0) if len(answers) > 1 else answers[0]


def _guard(resolver: Resolver) -> gd.Guard:
    return gd.Guard(egress.Policy.parse(allowed_hosts="*", allowed_cidrs="127.0.0.1/32"), resolve=resolver)


def test_the_connection_goes_to_the_checked_address_with_the_name_as_host(server: http.server.ThreadingHTTPServer
                                                                          ) -> None:
    port = server.server_address[1]
    resolver = Resolver({"model.invalid": [["127.0.0.1"]]})  # .invalid: no DNS would ever answer this name
    with httpx.Client(transport=tr.GuardedTransport(_guard(resolver), FIELD, purpose="model"), trust_env=False) as c:
        r = c.get(f"http://model.invalid:{port}/v1/models")
    assert r.text == "ok"
    assert server.hosts == [f"model.invalid:{port}"]  # type: ignore[attr-defined]
    assert resolver.calls == ["model.invalid"]


def test_a_name_rebound_to_a_denied_address_is_refused_before_any_connection(
        server: http.server.ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    resolver = Resolver({"rebind.invalid": [["127.0.0.1"], ["169.254.169.254"]]})
    guard = _guard(resolver)
    with httpx.Client(transport=tr.GuardedTransport(guard, FIELD, purpose="model"), trust_env=False) as c:
        assert c.get(f"http://rebind.invalid:{port}/", headers={"Connection": "close"}).text == "ok"
        with pytest.raises(tr.EgressRefused) as e:
            c.get(f"http://rebind.invalid:{port}/latest/api/token")
    assert str(e.value).startswith("spec.agent.baseUrl")
    assert "denied-range" in str(e.value) and "169.254.0.0/16" in str(e.value)
    assert len(server.hosts) == 1  # type: ignore[attr-defined]


def test_one_denied_address_among_several_refuses_the_name(server: http.server.ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    resolver = Resolver({"mixed.invalid": [["127.0.0.1", "10.0.0.1"]]})
    with httpx.Client(transport=tr.GuardedTransport(_guard(resolver), FIELD, purpose="model"), trust_env=False) as c, \
            pytest.raises(tr.EgressRefused, match="private-range"):
        c.get(f"http://mixed.invalid:{port}/")
    assert server.hosts == []  # type: ignore[attr-defined]


def test_literal_addresses_are_checked_without_resolving() -> None:
    resolver = Resolver({})
    with httpx.Client(transport=tr.GuardedTransport(_guard(resolver), FIELD, purpose="model"), trust_env=False) as c:
        for url in ("http://169.254.169.254/computeMetadata/v1/", "http://2852039166/", "http://[::ffff:a9fe:a9fe]/",
                    "http://localhost:1/"):
            with pytest.raises(tr.EgressRefused):
                c.get(url)
    assert resolver.calls == ["localhost"]  # a name is resolved (to nothing here) and refused; addresses never


def test_the_same_message_whether_or_not_anything_answers(server: http.server.ThreadingHTTPServer) -> None:
    live, dead = server.server_address[1], 1
    messages = []
    for port in (live, dead):
        g = gd.Guard(egress.Policy.parse(), resolve=Resolver({"x.invalid": [["127.0.0.1"]]}))
        with httpx.Client(transport=tr.GuardedTransport(g, FIELD, purpose="model"), trust_env=False) as c, \
                pytest.raises(tr.EgressRefused) as e:
            c.get(f"http://x.invalid:{port}/")
        messages.append(str(e.value).replace(f":{port}", ""))
    assert messages[0] == messages[1]


def test_the_async_transport_resolves_once_and_refuses_a_rebinding(server: http.server.ThreadingHTTPServer) -> None:
    port = server.server_address[1]
    resolver = Resolver({"rebind.invalid": [["127.0.0.1"], ["127.0.0.1", "fd00:ec2::254"]]})

    async def main() -> list[str]:
        out = []
        async with httpx.AsyncClient(transport=tr.AsyncGuardedTransport(_guard(resolver), FIELD, purpose="model"),
                                     trust_env=False) as c:
            out.append((await c.get(f"http://rebind.invalid:{port}/", headers={"Connection": "close"})).text)
            try:
                await c.get(f"http://rebind.invalid:{port}/")
            except httpx.HTTPError as e:  # what the model proxy catches
                out.append(str(e))
        return out

    ok, refused = asyncio.run(main())
    assert ok == "ok"
    assert refused.startswith("spec.agent.baseUrl") and "denied-range" in refused
    assert len(server.hosts) == 1  # type: ignore[attr-defined]


def test_git_pins_name_the_checked_addresses() -> None:
    g = gd.Guard(egress.Policy.parse(allowed_hosts="git.corp.internal"),
                 resolve=Resolver({"git.corp.internal": [["10.1.2.3", "fd00::7"]]}))
    pins = g.git_pins("https://git.corp.internal/org/app.git", "spec.repository.url")
    assert pins.args() == ["-c", "http.followRedirects=false",
                           "-c", "http.curloptResolve=git.corp.internal:443:10.1.2.3,[fd00::7]"]
    env = pins.env({"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "http.extraHeader", "GIT_CONFIG_VALUE_0": "x"})
    assert env["GIT_CONFIG_COUNT"] == "3" and env["GIT_CONFIG_KEY_2"] == "http.curloptResolve"
    ssh = g.git_pins("git@git.corp.internal:org/app.git", "spec.repository.url")
    assert ssh.env({"GIT_SSH_COMMAND": "ssh -i k"})["GIT_SSH_COMMAND"] == (
        "ssh -i k -o HostName=10.1.2.3 -o HostKeyAlias=git.corp.internal")
    with pytest.raises(gd.Refused, match=r"^spec.repository.url .*host-not-listed"):
        g.git_pins("https://github.com/o/r.git", "spec.repository.url")


_label = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_ÄéßЖ", min_size=1, max_size=12)


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(_label, min_size=1, max_size=4).map(".".join), st.sampled_from(["", ".", ":8443", ".:443"]))
def test_the_policy_and_httpx_agree_on_the_host_of_an_allowed_url(name: str, tail: str) -> None:
    """No parser differential: when the policy allows a URL by its name, httpx connects to that same name (the one
    the transport resolves and checks again)."""
    url = f"https://{name}{tail}/v1"
    d = egress.Policy.parse().check(url, purpose="git")
    if not d.allowed or d.target is None or d.target.address is not None:
        return
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return  # httpx refuses it outright: nothing is connected
    assert parsed.raw_host.decode("ascii").rstrip(".") == d.target.host  # what httpcore connects to
