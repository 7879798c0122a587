"""httpx transports that connect only to checked addresses.

The transports are httpx's own (``AsyncHTTPTransport``, ``HTTPTransport``: pooling, HTTP/1.1, TLS) with
httpcore's network backend wrapped: every new connection to ``host:port`` resolves ``host`` once, checks the
URL's host and every address against the policy (:class:`~longshot.net.guard.Guard`), and opens the TCP
connection to a checked address. The pool, the ``Host`` header, SNI and certificate verification all keep the
name, so TLS still proves the name; a name that resolves elsewhere a moment later (DNS rebinding) is never
looked up again for that connection. A refusal raises :class:`EgressRefused` (an ``httpx.HTTPError``, not a
``TransportError``: nothing was attempted, so retrying cannot help) before any packet leaves.

Proxies from the environment are not used (``trust_env=False`` in the clients that take these transports): a
proxy would make the connection, not this backend.
"""

from __future__ import annotations

import typing

import httpcore
import httpx

from longshot.core import egress
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


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connections go only to addresses the guard checked for ``purpose``."""

    def __init__(self, guard: gd.Guard, field_path: str, *, purpose: egress.Purpose, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        if not isinstance(pool, httpcore.AsyncConnectionPool) or isinstance(
                pool, httpcore.AsyncHTTPProxy | httpcore.AsyncSOCKSProxy):
            raise ValueError("a guarded transport connects directly: no proxy")
        pool._network_backend = _AsyncBackend(guard, field_path, purpose, pool._network_backend)


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connections go only to addresses the guard checked for ``purpose``."""

    def __init__(self, guard: gd.Guard, field_path: str, *, purpose: egress.Purpose, **kwargs: typing.Any) -> None:
        super().__init__(**kwargs)
        pool = self._pool
        if not isinstance(pool, httpcore.ConnectionPool) or isinstance(pool, httpcore.HTTPProxy | httpcore.SOCKSProxy):
            raise ValueError("a guarded transport connects directly: no proxy")
        pool._network_backend = _SyncBackend(guard, field_path, purpose, pool._network_backend)
