"""Egress through a proxy: which connections go through it, and whether the proxy itself is allowed.

Pure: settings in, a :class:`Proxies` or a route out; connecting is ``longshot.net.transport``'s. The operator
and the gateway read the proxy from their own settings (``LONGSHOT_EGRESS_PROXY_URL`` /
``LONGSHOT_GATEWAY_EGRESS_PROXY_URL`` and ``..._NO_PROXY``, the chart's ``egress.proxy.url`` and
``egress.proxy.noProxy``) or, when those are empty, from the standard ``HTTPS_PROXY``, ``HTTP_PROXY`` and
``NO_PROXY`` (either case), always through those settings: no HTTP client of theirs reads the environment
(``trust_env=False``).

**Routes** (:func:`route`), one destination at a time:

=====================================  ====================  =========================================
destination (scheme, host)             proxy for the scheme  route
=====================================  ====================  =========================================
any                                    none                  direct
host matches ``NO_PROXY``              any                   direct
otherwise                              ``url``               through ``url``
=====================================  ====================  =========================================

"Direct" is the guarded connection of ``core.egress`` (resolve once, check every address, connect to a checked
one). "Through the proxy" checks the final destination's URL against the allowlist (``Policy.check``, for the
call's purpose and port) and every address it resolves to here, if it resolves here at all, before the proxy is
asked for anything; then the only connection opened is to the proxy, whose own address must be allowed for the
purpose ``proxy`` (:func:`check_allowed`): only an ``egress.allow`` entry naming ``proxy`` serves it, never a legacy
or wildcard entry.

**NO_PROXY** (:func:`bypass`) as curl reads it: entries separated by commas or spaces; ``*`` alone matches every
host; otherwise a name matches itself and every name below it (``example.com`` and ``.example.com`` both match
``example.com`` and ``api.example.com``, not ``badexample.com``); case and one trailing dot do not matter; an
IPv4 or IPv6 address, or a CIDR range (``10.0.0.0/8``, ``fd00::/8``), matches a destination written as an address
in it (names are never resolved for it). An entry with a port (``host:8080``) is refused: curl ignores the port.

**The proxy URL**: ``http://host:port`` or ``https://host:port`` (``host:port`` is read as ``http://``), with its
port (curl's default is 1080, other clients' 80), no path, no user information. Credentials in the
URL are refused: they would sit in the Deployment's environment and could reach logs; use a proxy that admits the
operator's and the gateway's Pods by their address instead (docs/security.md, "Egress through a proxy").
"""

from __future__ import annotations

import functools
import ipaddress
import re
from dataclasses import dataclass
from typing import Literal

from longshot.core import egress

MAX_NO_PROXY = 256
"""Entries of ``NO_PROXY`` at most."""

PROXY_FIELD = "egress.proxy.url"
"""The setting named in refusals of the proxy's own address."""

Route = Literal["direct", "proxy"]


class ProxyError(ValueError):
    """A proxy setting is malformed or the proxy is not allowed; the message names the setting and the fix."""


@dataclass(frozen=True)
class Proxies:
    """Where to send ``http://`` and ``https://`` destinations, and what goes direct."""

    http: str | None = None
    """The proxy of ``http://`` destinations (normalised ``scheme://host:port``), or None: direct."""
    https: str | None = None
    """The proxy of ``https://`` destinations, or None: direct."""
    no_proxy: tuple[str, ...] = ()
    """Normalised entries: ``*``, names (no leading dot), addresses and networks in their text form."""

    @property
    def urls(self) -> tuple[str, ...]:
        """The distinct proxy URLs."""
        return tuple(dict.fromkeys(u for u in (self.https, self.http) if u))


def _proxy_url(raw: str, setting: str) -> str | None:
    value = raw.strip()
    if not value or value.lower() == "none":
        return None
    if "://" not in value:
        value = "http://" + value  # curl's default scheme for a proxy
    m = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)(.*)$", value, re.DOTALL)
    if m is None:
        raise ProxyError(f"{setting}: not a URL of the form http://host:port")
    if "@" in m.group(2):
        raise ProxyError(f"{setting}: credentials in the proxy URL (user:password@) are not supported: they would sit "
                         "in the Deployment's environment; let the proxy admit the operator's and the gateway's Pods "
                         "by their address (docs/security.md, 'Egress through a proxy')")
    if m.group(1).lower() not in ("http", "https"):
        raise ProxyError(f"{setting}: the proxy's scheme must be http or https (a CONNECT proxy), not "
                         f"{m.group(1)[:16]!r}")
    if m.group(3) not in ("", "/"):
        raise ProxyError(f"{setting}: the proxy URL has a path, query or fragment; give http://host:port only")
    if re.search(r":[0-9]{1,5}$", m.group(2)) is None:
        raise ProxyError(f"{setting}: give the proxy's port (http://host:port): clients disagree on its default")
    try:
        target = egress.parse(value)
    except ValueError as e:
        raise ProxyError(f"{setting}: {e}") from None
    host = f"[{target.host}]" if ":" in target.host else target.host
    return f"{target.scheme}://{host}:{target.port}"


def _no_proxy_entry(raw: str) -> str:
    entry = raw.strip().lower()
    if entry == "*":
        return entry
    bare = entry[1:-1] if entry.startswith("[") and entry.endswith("]") else entry
    try:
        return str(ipaddress.ip_network(bare, strict=False)) if "/" in bare else str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    name = entry.lstrip(".").rstrip(".")
    if ":" in name or "/" in name:
        raise ProxyError(f"egress.proxy.noProxy: {raw[:80]!r} is not a host name, an address or a CIDR range "
                         "(a port is not supported: curl ignores it)")
    try:
        return egress.parse(f"http://{name}/").host
    except ValueError as e:
        raise ProxyError(f"egress.proxy.noProxy: {raw[:80]!r}: {e}") from None


def parse(*, url: str = "", no_proxy: str = "", http_proxy: str = "", https_proxy: str = "",
          standard_no_proxy: str = "") -> Proxies:
    """The proxies of the settings: ``url`` (our setting, for both schemes) wins over the standard ``https_proxy``
    and ``http_proxy`` (each for its scheme); ``no_proxy`` (ours) over ``standard_no_proxy``. ProxyError names a
    malformed value."""
    if url.strip():
        https = http = _proxy_url(url, PROXY_FIELD)
    else:
        https = _proxy_url(https_proxy, "HTTPS_PROXY")
        http = _proxy_url(http_proxy, "HTTP_PROXY")
    raw = no_proxy if no_proxy.strip() else standard_no_proxy
    entries = [e for e in re.split(r"[\s,]+", raw) if e and e.lower() != "none"]
    if len(entries) > MAX_NO_PROXY:
        raise ProxyError(f"egress.proxy.noProxy: more than {MAX_NO_PROXY} entries")
    return Proxies(http=http, https=https, no_proxy=tuple(dict.fromkeys(_no_proxy_entry(e) for e in entries)))


def bypass(no_proxy: tuple[str, ...], host: str) -> bool:
    """Whether ``host`` (as :attr:`core.egress.Target.host`: normalised, an address in its text form) matches a
    ``NO_PROXY`` entry (curl's rules, module docstring)."""
    if "*" in no_proxy:
        return True
    try:
        address: ipaddress.IPv4Address | ipaddress.IPv6Address | None = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    for entry in no_proxy:
        if address is not None:
            try:
                network = ipaddress.ip_network(entry, strict=False)
            except ValueError:
                continue
            if network.version == address.version and address in network:
                return True
        elif host == entry or host.endswith("." + entry):
            return True
    return False


def route(proxies: Proxies, scheme: str, host: str) -> str | None:
    """The proxy URL a connection to ``scheme://host`` goes through, or None: direct (the table above)."""
    proxy = proxies.https if scheme == "https" else proxies.http if scheme == "http" else None
    if proxy is None or bypass(proxies.no_proxy, host.rstrip(".").lower()):
        return None
    return proxy


def check_allowed(proxies: Proxies, policy: egress.Policy) -> None:
    """Each proxy URL must be allowed for the purpose ``proxy`` on its port by an ``egress.allow`` entry (legacy and
    wildcard entries never serve it); ProxyError names the setting and the entry to add."""
    for url in proxies.urls:
        d = policy.check(url, purpose="proxy")
        if not d.allowed:
            target = egress.parse(url)
            raise ProxyError(
                f"{PROXY_FIELD} {url!r} is not in the egress allowlist for the purpose proxy ({d.rule}): add an "
                f"entry to the chart's egress.allow, e.g. {{host: {target.host}, purposes: [proxy], ports: "
                f"[{target.port}]}} (or {{cidr: <its address>/32, ...}} for an address in a denied range)")


@functools.lru_cache(maxsize=8)
def configured(url: str, no_proxy: str, http_proxy: str, https_proxy: str, standard_no_proxy: str,
               policy: egress.Policy) -> Proxies:
    """The proxies of a process's settings (the operator's and the gateway's), parsed and checked against the
    allowlist once per distinct setting (:func:`parse`, :func:`check_allowed`)."""
    proxies = parse(url=url, no_proxy=no_proxy, http_proxy=http_proxy, https_proxy=https_proxy,
                    standard_no_proxy=standard_no_proxy)
    check_allowed(proxies, policy)
    return proxies
