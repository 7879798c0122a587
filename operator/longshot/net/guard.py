"""Resolve, check, pin: the egress policy applied to real connections.

:class:`Guard` holds a :class:`~longshot.core.egress.Policy` and a resolver (``socket.getaddrinfo`` unless a
test injects one). For a URL it

1. checks the URL itself (:meth:`Policy.check`: scheme, authority, the host list, literal addresses);
2. resolves the host once and checks every address (:meth:`Policy.check_addresses`);
3. hands out the checked addresses, for the caller to connect to them and to nothing else: httpx through
   :mod:`longshot.net.transport`, git through :meth:`GitPins.args` / :meth:`GitPins.env`
   (``-c http.curloptResolve=<host>:<port>:<addresses>`` so that curl never resolves the name itself, and
   ``http.followRedirects=false`` so that no redirect leads it to a name it would resolve; for ssh,
   ``-o HostName=<address> -o HostKeyAlias=<host>``).

``git://`` URLs are checked and resolved, but git's own daemon client resolves the name again: a rebinding in
between is not stopped (docs/security.md). A refusal raises :class:`Refused`, whose message names the
field and the rule and never says whether anything answers there.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import shlex
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field

from longshot.core import egress
from longshot.core import proxy as cproxy

Resolver = Callable[[str, int], list[str]]
AsyncResolver = Callable[[str, int], Awaitable[list[str]]]


class Refused(Exception):
    """The egress policy refused a destination; ``str()`` names the field and the rule."""

    def __init__(self, decision: egress.Decision, field_path: str, url: str = "") -> None:
        super().__init__(decision.message(field_path, url))
        self.decision = decision
        self.field = field_path


def system_resolve(host: str, port: int) -> list[str]:
    """Every address of ``host`` (``getaddrinfo``), in the resolver's order, without duplicates."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(info[4][0]).split("%", 1)[0] for info in infos))


async def async_system_resolve(host: str, port: int) -> list[str]:
    return await asyncio.to_thread(system_resolve, host, port)


@dataclass(frozen=True)
class GitPins:
    """How to make git connect to the checked addresses of one URL."""

    config: tuple[tuple[str, str], ...] = ()
    """git config entries (``http.curloptResolve``, ``http.followRedirects``)."""
    ssh_options: str = ""
    """Options for the ssh command line (``-o HostName=... -o HostKeyAlias=...``)."""
    addresses: tuple[str, ...] = field(default=())

    def args(self) -> list[str]:
        """As ``-c key=value`` arguments of a git command."""
        out: list[str] = []
        for key, value in self.config:
            out += ["-c", f"{key}={value}"]
        return out

    def env(self, base: Mapping[str, str]) -> dict[str, str]:
        """``base`` with the pins added: config through ``GIT_CONFIG_COUNT``/``GIT_CONFIG_KEY_n`` (after the
        entries already there) and the ssh options appended to ``GIT_SSH_COMMAND``."""
        env = dict(base)
        if self.config:
            count = int(env.get("GIT_CONFIG_COUNT") or 0)
            for i, (key, value) in enumerate(self.config, start=count):
                env[f"GIT_CONFIG_KEY_{i}"] = key
                env[f"GIT_CONFIG_VALUE_{i}"] = value
            env["GIT_CONFIG_COUNT"] = str(count + len(self.config))
        if self.ssh_options:
            env["GIT_SSH_COMMAND"] = f"{env.get('GIT_SSH_COMMAND') or 'ssh'} {self.ssh_options}"
            env.setdefault("GIT_SSH_VARIANT", "ssh")
        return env


class Guard:
    def __init__(self, policy: egress.Policy, *, resolve: Resolver = system_resolve,
                 aresolve: AsyncResolver | None = None, proxies: cproxy.Proxies | None = None) -> None:
        self.policy = policy
        self.proxies = proxies or cproxy.Proxies()
        """The installation's HTTP proxy (``core.proxy``): the transports built with this guard send through it what
        is not in its ``NO_PROXY``; git never uses it."""
        self.resolve = resolve
        self.aresolve = aresolve or (lambda host, port: asyncio.to_thread(self.resolve, host, port))

    # --- checks -----------------------------------------------------------------------------------------

    def check_url(self, url: str, field_path: str, *, purpose: egress.Purpose) -> egress.Target:
        """The URL's target when the policy allows it for ``purpose`` before resolving; :class:`Refused`
        otherwise."""
        d = self.policy.check(url, purpose=purpose)
        if not d.allowed or d.target is None:
            raise Refused(d, field_path, url)
        return d.target

    def _checked(self, target: egress.Target, addresses: list[str], field_path: str, url: str,
                 purpose: egress.Purpose) -> list[str]:
        if target.address is not None:
            return [str(target.address)]
        d = self.policy.check_addresses(target.host, addresses, purpose=purpose, port=target.port)
        if not d.allowed:
            raise Refused(d, field_path, url)
        return [str(ipaddress.ip_address(a)) for a in addresses]

    def addresses(self, url: str, field_path: str, *, purpose: egress.Purpose) -> tuple[egress.Target, list[str]]:
        """Check, resolve once, check every address (for ``purpose`` on the URL's port); the target and the
        addresses to connect to."""
        target = self.check_url(url, field_path, purpose=purpose)
        if target.scheme == "file":
            return target, []
        resolved = [] if target.address is not None else self.resolve(target.host, target.port)
        return target, self._checked(target, resolved, field_path, url, purpose)

    async def aaddresses(self, url: str, field_path: str, *,
                         purpose: egress.Purpose) -> tuple[egress.Target, list[str]]:
        target = self.check_url(url, field_path, purpose=purpose)
        if target.scheme == "file":
            return target, []
        resolved = [] if target.address is not None else await self.aresolve(target.host, target.port)
        return target, self._checked(target, resolved, field_path, url, purpose)

    def _via_proxy(self, target: egress.Target, resolved: list[str], field_path: str, url: str,
                   purpose: egress.Purpose) -> None:
        if target.address is None and resolved:
            self._checked(target, resolved, field_path, url, purpose)

    def check_via_proxy(self, url: str, field_path: str, *, purpose: egress.Purpose) -> egress.Target:
        """The final destination of a request sent through the proxy (``core.proxy``): the URL is checked as always;
        when its name resolves here, every address must be allowed too (when it does not, the proxy resolves it
        and the name's check is the decision). :class:`Refused` otherwise; nothing is connected."""
        target = self.check_url(url, field_path, purpose=purpose)
        resolved = [] if target.address is not None else self.resolve(target.host, target.port)
        self._via_proxy(target, resolved, field_path, url, purpose)
        return target

    async def acheck_via_proxy(self, url: str, field_path: str, *, purpose: egress.Purpose) -> egress.Target:
        target = self.check_url(url, field_path, purpose=purpose)
        resolved = [] if target.address is not None else await self.aresolve(target.host, target.port)
        self._via_proxy(target, resolved, field_path, url, purpose)
        return target

    # --- git ----------------------------------------------------------------------------------------------

    def git_pins(self, url: str, field_path: str) -> GitPins:
        """Pins of a git remote (purpose ``git``)."""
        target, addresses = self.addresses(url, field_path, purpose="git")
        return pins_for(target, addresses)

    async def agit_pins(self, url: str, field_path: str) -> GitPins:
        target, addresses = await self.aaddresses(url, field_path, purpose="git")
        return pins_for(target, addresses)


def pins_for(target: egress.Target, addresses: list[str]) -> GitPins:
    if target.scheme in ("http", "https"):
        shown = ",".join(f"[{a}]" if ":" in a else a for a in addresses)
        config: list[tuple[str, str]] = [("http.followRedirects", "false")]
        if target.address is None:
            hosts = dict.fromkeys((target.host, target.written, target.written.rstrip(".")))
            config += [("http.curloptResolve", f"{h}:{target.port}:{shown}") for h in hosts if h]
        return GitPins(tuple(config), "", tuple(addresses))
    if target.scheme == "ssh" and target.address is None and addresses:
        return GitPins((), f"-o HostName={shlex.quote(addresses[0])} -o HostKeyAlias={shlex.quote(target.host)}",
                       tuple(addresses))
    return GitPins((), "", tuple(addresses))


@functools.lru_cache(maxsize=16)
def for_policy(policy: egress.Policy, proxies: cproxy.Proxies | None = None) -> Guard:
    """The guard of ``policy`` (and ``proxies``) with the system resolver (one per distinct pair, shared)."""
    return Guard(policy, proxies=proxies)
