"""httpx transports that connect only to checked addresses, built on httpx's and httpcore's public APIs.

:class:`AsyncGuardedTransport` and :class:`GuardedTransport` are ``httpx.AsyncBaseTransport`` / ``httpx.BaseTransport``
implementations around httpcore connection pools (``httpcore.AsyncConnectionPool``, and ``httpcore.AsyncHTTPProxy``
for a proxy), each constructed with our network backend through the public ``network_backend=`` parameter: every
new connection to ``host:port`` resolves ``host`` once, checks the URL's host and every address against the policy
(:class:`~longshot.net.guard.Guard`), and opens the TCP connection to a checked address. The pool, the ``Host``
header, SNI and certificate verification all keep the name, so TLS still proves the name; a name that resolves
elsewhere a moment later (DNS rebinding) is never looked up again for that connection. A refusal raises
:class:`EgressRefused` (an ``httpx.HTTPError``, not a ``TransportError``: nothing was attempted, so retrying
cannot help) before any packet leaves. tests/unit/net/test_transport_surface.py pins the public surface used here
(constructor parameters, the backend's methods), so that an upgrade that changes it fails a test.

**Through a proxy** (``core.proxy``: the installation's ``egress.proxy``): a request whose destination is not in
``NO_PROXY`` is checked first (:meth:`Guard.acheck_via_proxy`: the final destination's URL for the call's purpose,
and its addresses when it resolves here), then handed to the proxy pool, whose backend connects only to the proxy
(checked for the purpose ``proxy``): an ``https`` destination through ``CONNECT host:port``, an ``http`` one as a
forward request carrying the absolute URL, whose host was checked the same way. Proxies from the environment are
never used (``trust_env=False`` in the clients that take these transports): the settings read them.
"""

from __future__ import annotations

import contextlib
import ssl
import typing
from collections.abc import AsyncIterator, Iterator

import httpcore
import httpx

from longshot.core import egress
from longshot.core import proxy as cproxy
from longshot.net import guard as gd


class EgressRefused(httpx.HTTPError):
    """The egress policy refused the destination; the message names the field and the rule."""

    def __init__(self, refused: gd.Refused) -> None:
        super().__init__(str(refused))
        self.refused = refused


def _url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


class _AsyncBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, guard: gd.Guard, field_path: str, purpose: egress.Purpose,
                 inner: httpcore.AsyncNetworkBackend | None = None) -> None:
        self.guard = guard
        self.field = field_path
        self.purpose = purpose
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                          ) -> httpcore.AsyncNetworkStream:
        try:
            _, addresses = await self.guard.aaddresses(_url_of(host, port), self.field, purpose=self.purpose)
        except gd.Refused as e:
            raise EgressRefused(e) from None
        error: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                                  ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not an egress destination")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class _SyncBackend(httpcore.NetworkBackend):
    def __init__(self, guard: gd.Guard, field_path: str, purpose: egress.Purpose,
                 inner: httpcore.NetworkBackend | None = None) -> None:
        self.guard = guard
        self.field = field_path
        self.purpose = purpose
        self.inner = inner or httpcore.SyncBackend()

    def connect_tcp(self, host: str, port: int, timeout: float | None = None, local_address: str | None = None,
                    socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None) -> httpcore.NetworkStream:
        try:
            _, addresses = self.guard.addresses(_url_of(host, port), self.field, purpose=self.purpose)
        except gd.Refused as e:
            raise EgressRefused(e) from None
        error: Exception | None = None
        for address in addresses:
            try:
                return self.inner.connect_tcp(address, port, timeout=timeout, local_address=local_address,
                                              socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as e:
                error = e
        assert error is not None
        raise error

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not an egress destination")

    def sleep(self, seconds: float) -> None:
        self.inner.sleep(seconds)


# --- request and exception mapping, as httpx's own HTTPTransport does it (httpx/_transports/default.py, httpx
# 0.28, BSD-3-Clause, Copyright (c) 2019, Encode OSS Ltd.: map_httpcore_exceptions, ResponseStream) ----------------

_EXCEPTIONS: tuple[tuple[type[Exception], type[httpx.HTTPError]], ...] = (
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.PoolTimeout, httpx.PoolTimeout),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.ReadError, httpx.ReadError),
    (httpcore.WriteError, httpx.WriteError),
    (httpcore.ProxyError, httpx.ProxyError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.LocalProtocolError, httpx.LocalProtocolError),
    (httpcore.RemoteProtocolError, httpx.RemoteProtocolError),
)


@contextlib.contextmanager
def _mapped() -> Iterator[None]:
    """httpcore's exceptions as httpx's (the most specific one); anything else (EgressRefused) as it is."""
    try:
        yield
    except Exception as exc:
        mapped: type[httpx.HTTPError] | None = None
        for source, target in _EXCEPTIONS:
            if isinstance(exc, source) and (mapped is None or issubclass(target, mapped)):
                mapped = target
        if mapped is None:
            raise
        raise mapped(str(exc)) from exc


class _AsyncStream(httpx.AsyncByteStream):
    def __init__(self, stream: typing.AsyncIterable[bytes]) -> None:
        self._stream = stream

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _mapped():
            async for part in self._stream:
                yield part

    async def aclose(self) -> None:
        close = getattr(self._stream, "aclose", None)
        if close is not None:
            await close()


class _SyncStream(httpx.SyncByteStream):
    def __init__(self, stream: typing.Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _mapped():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()


def _core_request(request: httpx.Request) -> httpcore.Request:
    return httpcore.Request(
        method=request.method,
        url=httpcore.URL(scheme=request.url.raw_scheme, host=request.url.raw_host, port=request.url.port,
                         target=request.url.raw_path),
        headers=request.headers.raw, content=request.stream, extensions=request.extensions)


def _origin(request: httpx.Request) -> tuple[str, str, str]:
    """The destination's scheme, host (as httpcore connects to it) and origin URL, for the policy."""
    scheme = request.url.scheme
    host = request.url.raw_host.decode("ascii")
    port = request.url.port or egress.DEFAULT_PORTS.get(scheme, 443)
    shown = f"[{host}]" if ":" in host else host
    return scheme, host, f"{scheme}://{shown}:{port}/"


def _pool_options(limits: httpx.Limits, http2: bool, retries: int) -> dict[str, typing.Any]:
    return {"max_connections": limits.max_connections, "max_keepalive_connections": limits.max_keepalive_connections,
            "keepalive_expiry": limits.keepalive_expiry, "http1": True, "http2": http2, "retries": retries}


_DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)


class AsyncGuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport whose connections go only to addresses the guard checked for ``purpose`` (direct), or to
    the proxy of ``proxies`` after the destination was checked (module docstring)."""

    def __init__(self, guard: gd.Guard, field_path: str, *, purpose: egress.Purpose,
                 proxies: cproxy.Proxies | None = None, limits: httpx.Limits = _DEFAULT_LIMITS,
                 verify: ssl.SSLContext | bool = True, http2: bool = False, retries: int = 0) -> None:
        self.guard = guard
        self.field = field_path
        self.purpose: egress.Purpose = purpose
        self.proxies = proxies if proxies is not None else guard.proxies
        context = httpx.create_ssl_context(verify=verify)
        options = _pool_options(limits, http2, retries)
        self.direct = httpcore.AsyncConnectionPool(
            ssl_context=context, network_backend=_AsyncBackend(guard, field_path, purpose), **options)
        self.via: dict[str, httpcore.AsyncHTTPProxy] = {
            url: httpcore.AsyncHTTPProxy(
                proxy_url=url, ssl_context=context,
                network_backend=_AsyncBackend(guard, cproxy.PROXY_FIELD, "proxy"), **options)
            for url in self.proxies.urls}
        """One pool per proxy URL; its backend connects only where the allowlist allows the purpose ``proxy``."""

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.AsyncByteStream)
        scheme, host, origin = _origin(request)
        proxy = cproxy.route(self.proxies, scheme, host)
        pool: httpcore.AsyncConnectionPool = self.direct
        if proxy is not None:
            try:
                await self.guard.acheck_via_proxy(origin, self.field, purpose=self.purpose)
            except gd.Refused as e:
                raise EgressRefused(e) from None
            pool = self.via[proxy]
        with _mapped():
            response = await pool.handle_async_request(_core_request(request))
        assert isinstance(response.stream, typing.AsyncIterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_AsyncStream(response.stream), extensions=response.extensions)

    async def aclose(self) -> None:
        with _mapped():
            for pool in (self.direct, *self.via.values()):
                await pool.aclose()


class GuardedTransport(httpx.BaseTransport):
    """The synchronous :class:`AsyncGuardedTransport` (trackers and forges)."""

    def __init__(self, guard: gd.Guard, field_path: str, *, purpose: egress.Purpose,
                 proxies: cproxy.Proxies | None = None, limits: httpx.Limits = _DEFAULT_LIMITS,
                 verify: ssl.SSLContext | bool = True, http2: bool = False, retries: int = 0) -> None:
        self.guard = guard
        self.field = field_path
        self.purpose: egress.Purpose = purpose
        self.proxies = proxies if proxies is not None else guard.proxies
        context = httpx.create_ssl_context(verify=verify)
        options = _pool_options(limits, http2, retries)
        self.direct = httpcore.ConnectionPool(
            ssl_context=context, network_backend=_SyncBackend(guard, field_path, purpose), **options)
        self.via: dict[str, httpcore.HTTPProxy] = {
            url: httpcore.HTTPProxy(
                proxy_url=url, ssl_context=context,
                network_backend=_SyncBackend(guard, cproxy.PROXY_FIELD, "proxy"), **options)
            for url in self.proxies.urls}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        assert isinstance(request.stream, httpx.SyncByteStream)
        scheme, host, origin = _origin(request)
        proxy = cproxy.route(self.proxies, scheme, host)
        pool: httpcore.ConnectionPool = self.direct
        if proxy is not None:
            try:
                self.guard.check_via_proxy(origin, self.field, purpose=self.purpose)
            except gd.Refused as e:
                raise EgressRefused(e) from None
            pool = self.via[proxy]
        with _mapped():
            response = pool.handle_request(_core_request(request))
        assert isinstance(response.stream, typing.Iterable)
        return httpx.Response(status_code=response.status, headers=response.headers,
                              stream=_SyncStream(response.stream), extensions=response.extensions)

    def close(self) -> None:
        with _mapped():
            for pool in (self.direct, *self.via.values()):
                pool.close()
