"""Egress policy: where the operator and the gateway may connect on behalf of a BuildRequest.

A BuildRequest names three destinations: ``spec.repository.url`` (the gateway mirrors it, the operator's merge
queue fetches and pushes it), ``spec.agent.baseUrl`` (the gateway proxies model calls to it) and
``spec.planner.issues.url`` (the operator's tracker client). Their authors are untrusted for the cluster
network: without a policy, ``baseUrl: http://169.254.169.254`` turns the gateway into a proxy to the cloud
metadata service. Pure: strings and addresses in, a :class:`Decision` out; resolving and connecting are the
shell's (``longshot.net``), which calls :meth:`Policy.check` on the URL before resolving and
:meth:`Policy.check_addresses` on every address the name resolved to, then connects to a checked address.

**Rules** (decided here, documented in docs/security.md):

1. The URL must be ``http``, ``https``, ``ssh`` or ``git`` (or the scp form ``host:path`` of ssh), with a
   plain authority: no password or token in it (``user:token@``; ssh keeps a user name), no ``%``, ``\\``,
   zone id or other character that two URL parsers could read differently. ``file://`` only when the policy
   says ``allow_file``.
2. The host is normalised before anything is compared: lower case, one trailing dot dropped, IDNA (UTS 46)
   to its ASCII form, and every numeric form a resolver accepts read as the IPv4 address it is
   (``2852039166``, ``0251.0376.0251.0376``, ``0x7f.1``: ``inet_aton``). A name whose last label is
   numeric but not an address (``1.2.3.999``) is refused.
3. A name must match ``allowed_hosts``: an exact name, ``*.suffix`` (any name below the suffix, not the
   suffix itself) or ``*`` (any name). A literal address must be in ``allowed_cidrs``, or, when ``*`` is
   listed, outside every denied range.
4. Every address a name resolves to must be allowed, or the whole destination is refused (one bad address
   is enough: the connection could go to any of them). An address in ``allowed_cidrs`` is allowed. An
   address in an **always-denied** range (loopback, link-local with the metadata services, unspecified,
   multicast, reserved, broadcast, and the configured ``cluster_cidrs``: the Pod and Service ranges) is
   refused. An address in a **denied** range (``denied_cidrs``; by default the private ranges RFC 1918,
   100.64.0.0/10, 198.18.0.0/15 and fc00::/7, where node networks live) is refused unless the name is listed
   exactly in ``allowed_hosts`` (an operator who lists ``git.corp.internal`` means its private address; a
   wildcard never reaches a private address unless the range is listed in ``allowed_cidrs``).
5. IPv6 addresses that carry an IPv4 address (IPv4-mapped ``::ffff:a.b.c.d``, IPv4-compatible, NAT64
   ``64:ff9b::/96``, 6to4 ``2002::/16``, Teredo) are checked as that IPv4 address too.

6. **Purposes and ports.** Every check says what the connection is for (:data:`PURPOSES`: ``git``, ``model``,
   ``tracker``, ``forge``, ``mcp``) and the URL's port is part of it. Rules 3 and 4 count only the entries that
   serve that purpose on that port: an ``allow`` entry (the chart's ``egress.allow``: a host pattern or a CIDR, its
   purposes, its ports) serves exactly what it lists; a legacy ``allowed_hosts`` entry serves every purpose, an
   exact name or address only on the default ports 80, 443, 22 and 9418 (:data:`LEGACY_PORTS`: it may reach a
   private address), a wildcard (``*``, ``*.suffix``) on every port (it never reaches a denied range); a legacy
   ``allowed_cidrs`` entry (the environment variable, which the chart no longer sets) serves every purpose on
   every port. So a git server allowed for git
   on port 3000 is not a model endpoint, on that port or another, unless an entry lists it as one.

A refusal's message names the field and the rule, never what a connection would have found: nothing is
connected before the decision, so "refused by the egress policy" is the same whether the host answers or not.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

ALWAYS_DENIED: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "unspecified"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud metadata)"),
    ("100.100.100.200/32", "cloud metadata"),
    ("192.0.0.0/24", "IETF protocol assignments"),
    ("224.0.0.0/4", "multicast"),
    ("240.0.0.0/4", "reserved"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"),
    ("fd00:ec2::254/128", "cloud metadata"),
    ("100::/64", "discard"),
    ("ff00::/8", "multicast"),
)
"""Ranges refused whatever the host list says; only ``allowed_cidrs`` lets one through."""

_ALWAYS = tuple((ipaddress.ip_network(cidr), label) for cidr, label in ALWAYS_DENIED)
_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))

DEFAULT_DENIED_CIDRS: tuple[str, ...] = (
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "198.18.0.0/15", "fc00::/7")
"""The default of ``denied_cidrs``: private ranges (node networks, most clusters' Pod and Service ranges)."""

Purpose = Literal["git", "model", "tracker", "forge", "mcp", "proxy"]
"""What a connection is for: the repository (``git``: the gateway's mirror, the operator's merge queue and
workspaces), the model API (``model``: the gateway's proxy), a tracker (``tracker``: planner issues, intakes), a
forge's API (``forge``: pull-request delivery), an MCP server (``mcp``), or the installation's own HTTP proxy
(``proxy``: ``core.proxy``; only an ``allow`` entry naming it serves it, never a legacy entry)."""
ENTRY_PURPOSES: tuple[Purpose, ...] = get_args(Purpose)
"""What an ``allow`` entry may list."""
PURPOSES: tuple[Purpose, ...] = tuple(p for p in ENTRY_PURPOSES if p != "proxy")
"""The purposes of a build's destinations (and of a legacy entry)."""
LEGACY_PORTS = frozenset({80, 443, 22, 9418})
"""The ports a legacy ``allowed_hosts`` entry naming one host serves: the default ports of http, https, ssh, git."""
MAX_ALLOW_ENTRIES = 256
MAX_ENTRY_PORTS = 64

SCHEMES = ("http", "https", "ssh", "git")
DEFAULT_PORTS = {"http": 80, "https": 443, "ssh": 22, "git": 9418}
MAX_URL = 2048

_AUTHORITY = re.compile(
    r"^(?:(?P<user>[A-Za-z0-9._~-]{1,255})@)?"
    r"(?P<host>\[[0-9A-Fa-f:.]{2,45}\]|[^\s/?#@\[\]\\:%]{1,253})"
    r"(?::(?P<port>[0-9]{1,5}))?$")
_SCHEME_URL = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]{0,15})://(?P<authority>[^/?#]*)(?P<rest>[/?#].*)?$",
                         re.DOTALL)
_SCP = re.compile(r"^(?:(?P<user>[A-Za-z0-9._~-]{1,255})@)?(?P<host>[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\]):"
                  r"(?!//)(?P<path>.*)$", re.DOTALL)
_LABEL = re.compile(r"^(?!-)[a-z0-9_-]{1,63}(?<!-)$")
_NUMERIC_PART = re.compile(r"^(?:0[xX][0-9A-Fa-f]*|[0-9]+)$")


class PolicyError(ValueError):
    """A setting of the policy (a CIDR, a host pattern) is malformed; the message names it."""


@dataclass(frozen=True)
class Target:
    """Where a URL points, normalised."""

    scheme: str
    host: str
    """Lower case, ASCII (IDNA), no trailing dot; an address in its canonical text form."""
    port: int
    address: IPAddress | None
    """Set when the host is a literal address (whatever its form in the URL)."""
    written: str
    """The host as the URL has it (lower case, brackets removed): what git's curl looks up."""


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rule: str
    """A short, stable name of the rule that decided (``host-not-listed``, ``denied-range``...)."""
    reason: str
    """What a person reads: why, without any address a resolution returned."""
    target: Target | None = None

    def message(self, field_path: str, url: str = "") -> str:
        """The refusal as an error message naming the field (``spec.agent.baseUrl``) and the rule."""
        shown = f" {redact(url)!r}" if url else ""
        return (f"{field_path}{shown} is refused by the egress policy ({self.rule}): {self.reason}; an operator "
                "can allow it with an entry of the chart's egress.allow naming its purpose and port "
                "(docs/security.md)")


def redact(url: str) -> str:
    """``url`` without a password or token in its authority."""
    return re.sub(r"(://)[^/@\s]*@", r"\1***@", url)[:300]


def _refuse(rule: str, reason: str, target: Target | None = None) -> Decision:
    return Decision(False, rule, reason, target)


def _networks(values: Iterable[str], what: str) -> tuple[IPNetwork, ...]:
    out: list[IPNetwork] = []
    for raw in values:
        v = raw.strip()
        if not v:
            continue
        try:
            out.append(ipaddress.ip_network(v, strict=False))
        except ValueError:
            raise PolicyError(f"{what}: {v!r} is not a CIDR (e.g. 10.0.0.0/8 or fd00::/8)") from None
    return tuple(out)


def split_list(raw: str | Iterable[str]) -> list[str]:
    """A list setting from the environment: comma- or whitespace-separated (or already a list); the word
    ``none`` stands for the empty list (an empty variable means "the default")."""
    items = re.split(r"[\s,]+", raw) if isinstance(raw, str) else [p.strip() for p in raw]
    return [p for p in items if p and p.lower() != "none"]


def _host_pattern(h: str, what: str) -> str:
    """A host entry normalised: ``*``, ``*.suffix``, an exact name or a literal address."""
    pattern = h.lower().rstrip(".")
    if pattern == "*":
        return pattern
    bare = pattern[2:] if pattern.startswith("*.") else pattern
    try:
        literal = _literal(bare) if bare == pattern else None
        if literal is not None:
            return str(literal)
        normal = _normalise_name(bare)
    except ValueError as e:
        raise PolicyError(f"{what}: {h!r} is not a host name, '*.suffix' or '*' ({e})") from None
    return ("*." if pattern.startswith("*.") else "") + normal


def _how(pattern: str, host: str) -> str | None:
    if pattern == host:
        return "exact"
    if pattern == "*" or (pattern.startswith("*.") and host.endswith(pattern[1:])):
        return "wildcard"
    return None


@dataclass(frozen=True)
class Entry:
    """One allowlist entry: a host pattern or a CIDR, what it is for and on which ports."""

    purposes: frozenset[str]
    ports: frozenset[int] | None
    """None: every port (a legacy ``allowed_cidrs`` entry only)."""
    host: str | None = None
    """``*``, ``*.suffix``, an exact name or a literal address (normalised)."""
    cidr: IPNetwork | None = None
    source: str = "egress.allow"
    """Where it was set, for messages: ``egress.allow``, ``egress.allowedHosts`` or the allowed_cidrs setting."""

    def serves(self, purpose: str | None, port: int | None) -> bool:
        """Whether the entry is for ``purpose`` (None: any) on ``port`` (None: any)."""
        return ((purpose is None or purpose in self.purposes)
                and (port is None or self.ports is None or port in self.ports))

    def contains(self, address: IPAddress) -> bool:
        return self.cidr is not None and self.cidr.version == address.version and address in self.cidr

    def describe(self) -> str:
        what = self.host if self.host is not None else str(self.cidr)
        ports = "every port" if self.ports is None else "port " + ", ".join(str(p) for p in sorted(self.ports))
        purposes = ", ".join(p for p in ENTRY_PURPOSES if p in self.purposes)
        return f"{what} ({self.source}: {purposes} on {ports})"


def parse_allow(raw: str | Iterable[Mapping[str, Any]]) -> tuple[Entry, ...]:
    """``egress.allow`` entries (a JSON list from the environment, or a list of mappings): each has ``host`` or
    ``cidr``, ``purposes`` (some of :data:`ENTRY_PURPOSES`) and ``ports`` (1 to 65535); PolicyError names a bad
    entry."""
    if isinstance(raw, str):
        if raw.strip().lower() in ("", "none"):
            return ()
        try:
            items = json.loads(raw)
        except ValueError:
            raise PolicyError("allow: not a JSON list of {host|cidr, purposes, ports} entries") from None
    else:
        items = list(raw)
    if not isinstance(items, list) or len(items) > MAX_ALLOW_ENTRIES:
        raise PolicyError(f"allow: expected a list of at most {MAX_ALLOW_ENTRIES} entries")
    out: list[Entry] = []
    for i, item in enumerate(items):
        what = f"allow[{i}]"
        if not isinstance(item, Mapping) or set(item) - {"host", "cidr", "purposes", "ports"}:
            raise PolicyError(f"{what}: an entry has host or cidr, purposes and ports, and nothing else")
        if ("host" in item) == ("cidr" in item):
            raise PolicyError(f"{what}: give exactly one of host and cidr")
        purposes, ports = item.get("purposes"), item.get("ports")
        if not isinstance(purposes, list) or not purposes or any(p not in ENTRY_PURPOSES for p in purposes):
            raise PolicyError(f"{what}: purposes must list some of {', '.join(ENTRY_PURPOSES)}")
        if (not isinstance(ports, list) or not 0 < len(ports) <= MAX_ENTRY_PORTS
                or any(isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536 for p in ports)):
            raise PolicyError(f"{what}: ports must list 1 to {MAX_ENTRY_PORTS} port numbers (1 to 65535), e.g. [443]")
        if "host" in item:
            if not isinstance(item["host"], str):
                raise PolicyError(f"{what}: host must be a string")
            out.append(Entry(frozenset(purposes), frozenset(ports), host=_host_pattern(item["host"], f"{what}.host")))
        else:
            if not isinstance(item["cidr"], str):
                raise PolicyError(f"{what}: cidr must be a string")
            nets = _networks([item["cidr"]], f"{what}.cidr")
            if not nets:
                raise PolicyError(f"{what}.cidr: is empty")
            out.append(Entry(frozenset(purposes), frozenset(ports), cidr=nets[0]))
    return tuple(out)


@dataclass(frozen=True)
class Policy:
    allowed_hosts: tuple[str, ...] = ("*",)
    """Legacy host entries: every purpose; an exact name or address on :data:`LEGACY_PORTS`, a wildcard on every
    port."""
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    """Legacy ranges: every purpose, every port."""
    denied_cidrs: tuple[IPNetwork, ...] = field(
        default_factory=lambda: _networks(DEFAULT_DENIED_CIDRS, "denied_cidrs"))
    cluster_cidrs: tuple[IPNetwork, ...] = ()
    allow_file: bool = False
    allow: tuple[Entry, ...] = ()
    """Entries with their purposes and ports (the chart's ``egress.allow``)."""

    @classmethod
    def parse(cls, *, allowed_hosts: str | Iterable[str] = "*", allowed_cidrs: str | Iterable[str] = "",
              denied_cidrs: str | Iterable[str] | None = None, cluster_cidrs: str | Iterable[str] = "",
              allow_file: bool = False, allow: str | Iterable[Mapping[str, Any]] = "") -> Policy:
        """From settings (lists or comma/space-separated strings; ``allow`` as JSON or a list of mappings);
        PolicyError names a malformed entry."""
        hosts = [_host_pattern(h, "allowed_hosts") for h in split_list(allowed_hosts)]
        return cls(allowed_hosts=tuple(hosts), allowed_cidrs=_networks(split_list(allowed_cidrs), "allowed_cidrs"),
                   denied_cidrs=_networks(split_list(DEFAULT_DENIED_CIDRS if denied_cidrs is None else denied_cidrs),
                                          "denied_cidrs"),
                   cluster_cidrs=_networks(split_list(cluster_cidrs), "cluster_cidrs"), allow_file=allow_file,
                   allow=parse_allow(allow))

    @property
    def entries(self) -> tuple[Entry, ...]:
        """Every entry: ``allow``, then the legacy hosts and ranges with their implied purposes and ports."""
        every = frozenset(PURPOSES)
        return (*self.allow,
                *(Entry(every, None if h.startswith("*") else LEGACY_PORTS, host=h, source="egress.allowedHosts")
                  for h in self.allowed_hosts),
                *(Entry(every, None, cidr=c, source="the allowed_cidrs setting") for c in self.allowed_cidrs))

    # --- names ----------------------------------------------------------------------------------------------

    def listed(self, host: str, purpose: str | None = None, port: int | None = None) -> str | None:
        """``exact``, ``wildcard`` or None: how ``host`` (normalised) matches the host entries that serve
        ``purpose`` on ``port`` (None: any)."""
        how: str | None = None
        for e in self.entries:
            if e.host is None or not e.serves(purpose, port):
                continue
            found = _how(e.host, host)
            if found == "exact":
                return found
            how = how or found
        return how

    def _elsewhere(self, target: Target, purpose: str) -> Decision | None:
        """When an entry names the target's host or address for another purpose or port: the refusal saying so."""
        near = [e for e in self.entries
                if (e.host is not None and e.host != "*" and _how(e.host, target.host) is not None)
                or (target.address is not None and e.contains(target.address))]
        if not near:
            return None
        listed = "; ".join(e.describe() for e in near[:4])
        if any(purpose in e.purposes for e in near):
            return _refuse("port-not-allowed", f"port {target.port} of {target.host} is not allowed for {purpose}: "
                                               f"the allowlist has {listed}", target)
        return _refuse("purpose-not-allowed", f"{target.host} is not allowed for {purpose}: the allowlist has "
                                              f"{listed}", target)

    # --- addresses ------------------------------------------------------------------------------------------

    def address_rule(self, address: IPAddress, *, exact: bool, purpose: str | None = None,
                     port: int | None = None) -> Decision:
        """Whether one address may be connected to for ``purpose`` on ``port``; ``exact``: the name was listed
        exactly (for that purpose and port)."""
        if any(e.contains(address) for e in self.entries if e.serves(purpose, port)):
            return Decision(True, "allowed-cidr", "the address is in an allowed range")
        for a in (address, *_embedded(address)):
            for net, label in _ALWAYS:
                if net.version == a.version and a in net:
                    return _refuse("denied-range", f"an address in {net} ({label}) is never a destination")
            for net in self.cluster_cidrs:
                if net.version == a.version and a in net:
                    return _refuse("cluster-range", f"an address in {net} (egress.clusterCIDRs: the cluster's "
                                                    "Pod and Service ranges) is never a destination")
            if not exact:
                for net in self.denied_cidrs:
                    if net.version == a.version and a in net:
                        return _refuse("private-range",
                                       f"an address in {net} (egress.deniedCIDRs) is refused for a host not "
                                       "listed exactly for this purpose and port")
        return Decision(True, "public-address", "the address is outside every denied range")

    # --- the two checks -------------------------------------------------------------------------------------

    def check(self, url: str, *, purpose: Purpose) -> Decision:
        """The URL's destination for ``purpose`` before any resolution: scheme, authority, the entries that serve
        that purpose on the URL's port, literal addresses."""
        try:
            target = parse(url)
        except ValueError as e:
            return _refuse("malformed-url", str(e))
        if target.scheme == "file":
            return (Decision(True, "file-allowed", "file:// URLs are allowed on this installation", target)
                    if self.allow_file else _refuse("file-url", "file:// URLs name the server's own files", target))
        if target.address is not None:
            address = target.address
            if any(e.contains(address) for e in self.entries if e.serves(purpose, target.port)):
                return Decision(True, "allowed-cidr", f"the address is in a range allowed for {purpose}", target)
            how = self.listed(target.host, purpose, target.port)
            if how is None:
                return self._elsewhere(target, purpose) or _refuse(
                    "address-not-listed", f"the literal address {target.host} is in no allowlist entry for "
                                          f"{purpose} on port {target.port}", target)
            d = self.address_rule(address, exact=how == "exact", purpose=purpose, port=target.port)
            if not d.allowed:
                # an entry that allows this address for something else says more than the range it is in
                return self._elsewhere(target, purpose) or Decision(False, d.rule, d.reason, target)
            return Decision(True, d.rule, d.reason, target)
        if self.listed(target.host, purpose, target.port) is None:
            return self._elsewhere(target, purpose) or _refuse(
                "host-not-listed", f"the host {target.host} is in no allowlist entry for {purpose} on port "
                                   f"{target.port}", target)
        return Decision(True, "host-listed", f"the host is allowed for {purpose} on port {target.port}", target)

    def check_addresses(self, host: str, addresses: Sequence[IPAddress | str], *, purpose: Purpose,
                        port: int) -> Decision:
        """After resolving ``host`` (normalised, as in :attr:`Target.host`) for ``purpose`` on ``port``: every
        address must be allowed."""
        if not addresses:
            return _refuse("no-address", f"the host {host} resolved to no address")
        exact = self.listed(host, purpose, port) == "exact"
        for raw in addresses:
            try:
                address = ipaddress.ip_address(raw) if isinstance(raw, str) else raw
            except ValueError:
                return _refuse("malformed-address", f"the host {host} resolved to something that is not an address")
            d = self.address_rule(address, exact=exact, purpose=purpose, port=port)
            if not d.allowed:
                return _refuse(d.rule, f"the host {host} resolves to an address that is refused: {d.reason}")
        return Decision(True, "addresses-allowed", "every address of the host is allowed")


def _embedded(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address carries (mapped, compatible, NAT64, 6to4, Teredo)."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    out: list[ipaddress.IPv4Address] = []
    if address.ipv4_mapped is not None:
        out.append(address.ipv4_mapped)
    value = int(address)
    if value >> 32 == 0 and value > 1:  # ::a.b.c.d (IPv4-compatible, deprecated but routed by some stacks)
        out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if any(address in n for n in _NAT64):
        out.append(ipaddress.IPv4Address(value & 0xFFFFFFFF))
    if address.sixtofour is not None:
        out.append(address.sixtofour)
    if address.teredo is not None:
        out.extend(address.teredo)
    return out


# --- parsing -------------------------------------------------------------------------------------------------


def parse(url: str) -> Target:
    """The normalised destination of a git or HTTP URL; ValueError says what is wrong with it."""
    if len(url) > MAX_URL:
        raise ValueError(f"the URL is longer than {MAX_URL} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in url):
        raise ValueError("the URL contains a space or a control character")
    m = _SCHEME_URL.match(url)
    if m is None:
        scp = _SCP.match(url)
        if scp is None or "://" in url:
            raise ValueError("not a URL of the form scheme://host/path or host:path")
        return _target("ssh", scp.group("user"), scp.group("host"), None, scp_form=True)
    scheme = m.group("scheme").lower()
    if scheme == "file":
        return Target("file", "", 0, None, "")
    if scheme not in SCHEMES:
        raise ValueError(f"the scheme {scheme!r} is not one of {', '.join(SCHEMES)}")
    authority = _AUTHORITY.match(m.group("authority"))
    if authority is None:
        if "@" in m.group("authority"):
            raise ValueError("the URL has a password or token in it (user:token@); put credentials in the "
                             "Secret the spec names instead")
        raise ValueError("the host part of the URL is malformed (only letters, digits, '.', '-', '_' or an "
                         "address in brackets, and an optional :port)")
    if authority.group("user") is not None and scheme != "ssh":
        raise ValueError("the URL has user information (user@); put credentials in the Secret the spec names "
                         "instead")
    return _target(scheme, authority.group("user"), authority.group("host"), authority.group("port"))


def _target(scheme: str, user: str | None, host: str, port: str | None, *, scp_form: bool = False) -> Target:
    number = int(port) if port else DEFAULT_PORTS[scheme]
    if not 0 < number < 65536:
        raise ValueError(f"the port {port} is out of range")
    if host.startswith("["):
        text = host[1:-1]
        try:
            v6 = ipaddress.IPv6Address(text)
        except ValueError:
            raise ValueError(f"[{text}] is not an IPv6 address") from None
        return Target(scheme, str(v6), number, v6, text.lower())
    written = host.lower()
    if written.endswith(".."):
        raise ValueError("the host ends with more than one dot")
    bare = written[:-1] if written.endswith(".") else written
    v4 = inet_aton(bare)
    if v4 is not None:
        return Target(scheme, str(v4), number, v4, written)
    return Target(scheme, _normalise_name(bare), number, None, written)


def _literal(text: str) -> IPAddress | None:
    """An address written in ``allowed_hosts`` (``10.0.0.7``, ``[fd00::7]``, ``fd00::7``), or None."""
    try:
        return ipaddress.IPv6Address(text.strip("[]")) if ":" in text else inet_aton(text)
    except ValueError:
        return None


def _normalise_name(name: str) -> str:
    if not name:
        raise ValueError("the host is empty")
    try:
        ascii_name = name.encode("ascii").decode() if name.isascii() else _idna(name)
    except UnicodeError:
        raise ValueError("the host is not a valid internationalised domain name") from None
    ascii_name = ascii_name.lower()
    labels = ascii_name.split(".")
    if len(ascii_name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise ValueError(f"{ascii_name[:80]!r} is not a valid host name")
    if _NUMERIC_PART.match(labels[-1]):
        raise ValueError(f"{ascii_name[:80]!r} ends with a numeric label but is not an IPv4 address")
    return ascii_name


def _idna(name: str) -> str:
    import idna  # the same UTS 46 mapping httpx uses

    return str(idna.encode(name, uts46=True).decode("ascii"))


def inet_aton(text: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``text`` is in any form ``inet_aton`` accepts (``127.1``, ``0x7f.1``, ``2130706433``,
    ``0177.0.0.1``), or None when it is not an address of that shape. Raises ValueError for a numeric form
    that is out of range (``1.2.3.999``, ``4294967296``): a resolver would refuse it or wrap it around."""
    parts = text.split(".")
    if not 1 <= len(parts) <= 4 or not all(_NUMERIC_PART.match(p) for p in parts):
        return None
    values: list[int] = []
    for p in parts:
        if p[:2] in ("0x", "0X"):
            values.append(int(p[2:] or "0", 16))
        elif len(p) > 1 and p.startswith("0"):
            if not all(c in "01234567" for c in p):
                raise ValueError(f"{text!r} looks like an IPv4 address but {p!r} is not an octal number")
            values.append(int(p, 8))
        else:
            values.append(int(p))
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (4 - len(head)):
        raise ValueError(f"{text!r} looks like an IPv4 address but is out of range")
    value = 0
    for v in head:
        value = value << 8 | v
    value = value << 8 * (4 - len(head)) | last
    return ipaddress.IPv4Address(value)
