"""The public surface of httpx and httpcore that longshot.net.transport builds on (issue 55, item 2).

The guard holds only because every connection of our transports is opened by our network backend. These tests
pin what that rests on: the public constructor parameters we pass (by name), the methods a network backend has
(ours must implement every one, else a new one would bypass the guard), and the transport base classes' hooks;
an upgrade that changes any of them fails here instead of silently connecting around the guard. The behaviour
(each pool connects through our backend) is pinned too: a destination the policy refuses never gets a packet.
"""

from __future__ import annotations

import inspect
import socket

import httpcore
import httpx
import pytest

from longshot.core import egress
from longshot.core import proxy as cproxy
from longshot.net import guard as gd
from longshot.net import transport as tr

pytestmark = pytest.mark.unit

POOL_PARAMETERS = {"ssl_context", "max_connections", "max_keepalive_connections", "keepalive_expiry", "http1",
                   "http2", "retries", "network_backend"}
PROXY_PARAMETERS = POOL_PARAMETERS | {"proxy_url"}


@pytest.mark.parametrize(("cls", "names"), [
    (httpcore.AsyncConnectionPool, POOL_PARAMETERS), (httpcore.ConnectionPool, POOL_PARAMETERS),
    (httpcore.AsyncHTTPProxy, PROXY_PARAMETERS), (httpcore.HTTPProxy, PROXY_PARAMETERS),
])
def test_the_pools_take_our_backend_in_their_public_constructor(cls: type, names: set[str]) -> None:
    parameters = inspect.signature(cls.__init__).parameters
    assert names <= set(parameters), names - set(parameters)
    assert all(parameters[n].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for n in names)
    assert "proxy" not in parameters or parameters["proxy"].default is None  # no proxy unless we pass one


@pytest.mark.parametrize(("base", "ours"), [(httpcore.AsyncNetworkBackend, tr._AsyncBackend),
                                            (httpcore.NetworkBackend, tr._SyncBackend)])
def test_our_backend_implements_every_method_of_a_network_backend(base: type, ours: type) -> None:
    methods = {n for n, v in vars(base).items() if callable(v) and not n.startswith("_")}
    assert methods == {"connect_tcp", "connect_unix_socket", "sleep"}, methods  # a new one: implement and guard it
    assert all(n in vars(ours) for n in methods)
    for name in methods:
        assert list(inspect.signature(getattr(base, name)).parameters) == list(
            inspect.signature(getattr(ours, name)).parameters), name


def test_the_transports_are_httpx_transports_on_their_public_hooks() -> None:
    assert issubclass(tr.AsyncGuardedTransport, httpx.AsyncBaseTransport)
    assert issubclass(tr.GuardedTransport, httpx.BaseTransport)
    assert "handle_async_request" in vars(tr.AsyncGuardedTransport) and "aclose" in vars(tr.AsyncGuardedTransport)
    assert "handle_request" in vars(tr.GuardedTransport) and "close" in vars(tr.GuardedTransport)
    assert "verify" in inspect.signature(httpx.create_ssl_context).parameters
    request = set(inspect.signature(httpcore.Request.__init__).parameters)
    assert {"method", "url", "headers", "content", "extensions"} <= request
    assert {"scheme", "host", "port", "target"} <= set(inspect.signature(httpcore.URL.__init__).parameters)


class _Refuse:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        return ["192.0.2.10"]  # TEST-NET-1: never routed; a connection attempt would hang, not succeed


def test_the_proxy_pool_connects_through_our_backend_only_to_an_allowed_proxy() -> None:
    """A proxy the policy does not allow for ``proxy`` (settings refuse it at start; here built by hand): the
    proxy pool's connection is refused by our backend, naming the proxy setting."""
    resolver = _Refuse()
    proxies = cproxy.parse(url="http://proxy.invalid:3128")
    guard = gd.Guard(egress.Policy.parse(allowed_hosts="*"), resolve=resolver, proxies=proxies)
    with httpx.Client(transport=tr.GuardedTransport(guard, "spec.agent.baseUrl", purpose="model"),
                      trust_env=False) as c, pytest.raises(tr.EgressRefused) as e:
        c.get("https://api.example.com/v1/models")
    assert str(e.value).startswith("egress.proxy.url"), str(e.value)
    assert resolver.calls == ["api.example.com"]  # the destination was checked; the proxy's name was not resolved


def test_a_destination_refused_through_the_proxy_is_refused_before_any_connection() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)
    listener.settimeout(0)
    port = listener.getsockname()[1]
    proxies = cproxy.parse(url=f"http://127.0.0.1:{port}")
    policy = egress.Policy.parse(allowed_hosts="", allow=[
        {"cidr": "127.0.0.1/32", "purposes": ["proxy"], "ports": [port]},
        {"host": "api.example.com", "purposes": ["model"], "ports": [443]}])
    resolver = _Refuse()
    guard = gd.Guard(policy, resolve=lambda h, p: ["10.0.0.7"] if h == "rebind.example.com" else resolver(h, p),
                     proxies=proxies)
    try:
        with httpx.Client(transport=tr.GuardedTransport(guard, "spec.agent.baseUrl", purpose="model"),
                          trust_env=False) as c:
            for url, rule in (("https://evil.example.net/", "host-not-listed"),
                              ("http://api.example.com/", "port-not-allowed"),
                              ("https://169.254.169.254/", "address-not-listed")):
                with pytest.raises(tr.EgressRefused, match=rule):
                    c.get(url)
        with pytest.raises(BlockingIOError):
            listener.accept()  # the proxy was never connected to
    finally:
        listener.close()


def test_a_name_that_resolves_here_to_a_denied_address_is_refused_through_the_proxy_too() -> None:
    proxies = cproxy.parse(url="http://127.0.0.1:3128")
    policy = egress.Policy.parse(allowed_hosts="*", allow=[
        {"cidr": "127.0.0.1/32", "purposes": ["proxy"], "ports": [3128]}])
    guard = gd.Guard(policy, resolve=lambda h, p: ["169.254.169.254"], proxies=proxies)
    with pytest.raises(gd.Refused, match="denied-range"):
        guard.check_via_proxy("https://metadata.example.com/", "spec.agent.baseUrl", purpose="model")
    # a name the local resolver does not know is the proxy's to resolve: the name's check decides
    unknown = gd.Guard(policy, resolve=lambda h, p: [], proxies=proxies)
    assert unknown.check_via_proxy("https://api.example.com/", "spec.agent.baseUrl",
                                   purpose="model").host == "api.example.com"


def test_every_http_client_of_the_operator_and_the_gateway_ignores_the_environment() -> None:
    """Every ``httpx.Client``/``AsyncClient`` the operator and the gateway build says ``trust_env=False``: a proxy
    comes only from their settings (``core.proxy``), through the guarded transports. (The agent runner's clients
    run in the agent Pod and talk to the gateway only; they are not enumerated here.)"""
    import ast
    from pathlib import Path

    import longshot

    root = Path(longshot.__file__).parent
    found: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if path.relative_to(root).parts[0] == "agent":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ("Client", "AsyncClient")
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "httpx"):
                where = f"{path.relative_to(root)}:{node.lineno}"
                found.append(where)
                trust = [k.value for k in node.keywords if k.arg == "trust_env"]
                assert len(trust) == 1 and isinstance(trust[0], ast.Constant) and trust[0].value is False, where
    assert len(found) >= 3, found  # the tracker/forge client, the model client, the trace relay
