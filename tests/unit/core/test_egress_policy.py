"""The egress policy (``core.egress``): which destinations a BuildRequest may name, before and after resolving."""

from __future__ import annotations

import ipaddress
import socket

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.core import egress
from property_budget import examples

pytestmark = pytest.mark.unit
DEFAULT = egress.Policy.parse()


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/",
    "http://127.0.0.1:8080/",
    "http://2852039166/",            # 169.254.169.254 as one decimal number
    "http://0xa9fea9fe/",            # ... as hex
    "http://0251.0376.0251.0376/",   # ... as octal
    "http://0x7f.1/",                # 127.0.0.1, two parts
    "http://127.1/",
    "http://[::1]/",
    "http://[::ffff:169.254.169.254]/",  # IPv4-mapped IPv6
    "http://[::ffff:a9fe:a9fe]/",
    "http://[64:ff9b::a9fe:a9fe]/",      # NAT64 of the metadata service
    "http://[2002:a9fe:a9fe::1]/",       # 6to4 of it
    "http://[fe80::1]/",
    "http://[fd00:ec2::254]/",
    "http://0.0.0.0/",
    "http://10.0.0.1/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://224.0.0.1/",
    "http://255.255.255.255/",
])
def test_literal_addresses_in_denied_ranges_are_refused_whatever_their_form(url: str) -> None:
    d = DEFAULT.check(url, purpose="git")
    assert not d.allowed, (url, d)
    assert d.rule in ("denied-range", "private-range")


@pytest.mark.parametrize("url", [
    "http://user:token@example.com/x.git",      # a token in the URL
    "https://x-access-token:ghp_abc@github.com/o/r.git",
    "https://user@github.com/o/r.git",          # userinfo on http at all
    "http://example.com\\@169.254.169.254/",     # parser differential
    "http://example.com%2f@127.0.0.1/",
    "http://%31%32%37.0.0.1/",
    "http://[fe80::1%25eth0]/",                  # zone id
    "http://1.2.3.999/",                         # numeric but not an address
    "http://foo.123/",
    "http://example..com/",
    "http://example.com../",
    "http://exa mple.com/",
    "gopher://example.com/",
    "ftp://example.com/",
    "http://example.com:99999/",
    "http:///path",
    "http://-bad-.com/",
])
def test_malformed_or_ambiguous_urls_are_refused(url: str) -> None:
    d = DEFAULT.check(url, purpose="git")
    assert not d.allowed, (url, d)
    assert d.rule == "malformed-url"


def test_a_token_in_the_url_is_named_in_the_message_without_the_token() -> None:
    d = DEFAULT.check("https://bob:s3cret-token@github.com/o/r.git", purpose="git")
    message = d.message("spec.repository.url", "https://bob:s3cret-token@github.com/o/r.git")
    assert "spec.repository.url" in message and "token" in message and "s3cret-token" not in message


@pytest.mark.parametrize("url,host", [
    ("https://API.OpenAI.com./v1", "api.openai.com"),
    ("https://github.com/o/r.git", "github.com"),
    ("ssh://git@github.com:22/o/r.git", "github.com"),
    ("git@github.com:o/r.git", "github.com"),
    ("git://git.example.org/r.git", "git.example.org"),
    ("https://bücher.example/r.git", "xn--bcher-kva.example"),
    ("https://[2606:4700::1111]/", "2606:4700::1111"),
    ("http://8.8.8.8:8080/", "8.8.8.8"),
])
def test_public_destinations_are_allowed_by_default(url: str, host: str) -> None:
    d = DEFAULT.check(url, purpose="git")
    assert d.allowed, d
    assert d.target is not None and d.target.host == host


def test_the_host_list_exact_wildcard_and_star() -> None:
    p = egress.Policy.parse(allowed_hosts="api.openai.com, *.example.com")
    assert p.check("https://api.openai.com/v1", purpose="git").allowed
    assert p.check("https://git.example.com/r.git", purpose="git").allowed
    assert p.check("https://a.b.example.com/r.git", purpose="git").allowed
    assert p.check("https://example.com/r.git", purpose="git").rule == "host-not-listed"
    assert p.check("https://evilexample.com/r.git", purpose="git").rule == "host-not-listed"
    assert p.check("https://api.openai.com.evil.io/", purpose="git").rule == "host-not-listed"
    # no '*': literal addresses need a CIDR
    assert p.check("http://8.8.8.8/", purpose="git").rule == "address-not-listed"
    assert p.check("https://API.OPENAI.COM./v1", purpose="git").allowed


def test_file_urls_only_when_allowed() -> None:
    assert DEFAULT.check("file:///srv/git/r.git", purpose="git").rule == "file-url"
    assert egress.Policy.parse(allow_file=True).check("file:///srv/git/r.git", purpose="git").allowed


def test_allowed_cidrs_let_a_range_through_even_a_denied_one() -> None:
    p = egress.Policy.parse(allowed_cidrs="127.0.0.0/8,10.1.0.0/16")
    assert p.check("http://127.0.0.1:9999/", purpose="git").allowed
    assert p.check("http://10.1.2.3/", purpose="git").allowed
    assert not p.check("http://10.2.0.1/", purpose="git").allowed
    assert p.check_addresses("git.example.com", ["10.1.0.5"], purpose="git", port=443).allowed


def test_resolved_addresses_every_one_must_be_allowed() -> None:
    d = DEFAULT.check_addresses("evil.example.com", ["93.184.216.34", "169.254.169.254"], purpose="git", port=443)
    assert not d.allowed and d.rule == "denied-range"
    assert "169.254.169.254" not in d.reason  # no resolved address in the message
    assert d.reason == ("the host evil.example.com resolves to an address that is refused: an address in "
                        "169.254.0.0/16 (link-local (cloud metadata)) is never a destination")
    assert DEFAULT.check_addresses("ok.example.com", ["93.184.216.34", "2606:2800:220:1::1"], purpose="git",
                                   port=443).allowed
    assert DEFAULT.check_addresses("x.example.com", [], purpose="git", port=443).rule == "no-address"
    assert not DEFAULT.check_addresses("x.example.com", ["::ffff:127.0.0.1"], purpose="git", port=443).allowed


def test_a_private_address_only_for_a_host_listed_exactly() -> None:
    p = egress.Policy.parse(allowed_hosts="git.corp.internal,*.corp.internal,*")
    assert p.check_addresses("git.corp.internal", ["10.0.0.7"], purpose="git", port=443).allowed
    assert p.check_addresses("other.corp.internal", ["10.0.0.7"], purpose="git", port=443).rule == "private-range"
    assert p.check_addresses("anything.io", ["192.168.0.1"], purpose="git", port=443).rule == "private-range"
    # never loopback, link-local or the cluster's ranges, listed exactly or not
    assert p.check_addresses("git.corp.internal", ["127.0.0.1"], purpose="git", port=443).rule == "denied-range"
    assert p.check_addresses("git.corp.internal", ["169.254.169.254"], purpose="git", port=443).rule == "denied-range"
    c = egress.Policy.parse(allowed_hosts="git.corp.internal", cluster_cidrs="10.96.0.0/12")
    assert c.check_addresses("git.corp.internal", ["10.96.0.10"], purpose="git", port=443).rule == "cluster-range"
    assert c.check_addresses("git.corp.internal", ["10.0.0.10"], purpose="git", port=443).allowed


def test_cluster_ranges_outside_the_private_ones_are_refused() -> None:
    p = egress.Policy.parse(cluster_cidrs="203.0.113.0/24")
    assert p.check("http://203.0.113.9/", purpose="git").rule == "cluster-range"
    assert p.check_addresses("x.io", ["203.0.113.9"], purpose="git", port=443).rule == "cluster-range"


def test_denied_cidrs_replace_the_default_private_ranges() -> None:
    p = egress.Policy.parse(denied_cidrs="203.0.113.0/24")
    assert p.check("http://10.0.0.1/", purpose="git").allowed
    assert p.check("http://203.0.113.1/", purpose="git").rule == "private-range"
    assert p.check("http://127.0.0.1/", purpose="git").rule == "denied-range"  # the always-denied ranges stay


def test_malformed_settings_are_named() -> None:
    with pytest.raises(egress.PolicyError, match=r"allowed_cidrs: '10\.0\.0\.0/33'"):
        egress.Policy.parse(allowed_cidrs="10.0.0.0/33")
    with pytest.raises(egress.PolicyError, match="allowed_hosts"):
        egress.Policy.parse(allowed_hosts="exa$mple")


def test_the_message_names_the_field_and_the_rule() -> None:
    d = DEFAULT.check("http://169.254.169.254/", purpose="git")
    m = d.message("spec.agent.baseUrl", "http://169.254.169.254/")
    assert m.startswith("spec.agent.baseUrl 'http://169.254.169.254/' is refused by the egress policy (denied-range)")
    assert "169.254.0.0/16" in m


def _libc_aton(text: str) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(socket.inet_aton(text))
    except OSError:
        return None


_part = st.one_of(st.integers(0, 2**32 - 1).map(str), st.integers(0, 2**32 - 1).map(lambda n: f"0x{n:x}"),
                  st.integers(0, 2**32 - 1).map(lambda n: f"0{n:o}"))


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(_part, min_size=1, max_size=4).map(".".join))
def test_inet_aton_reads_numeric_hosts_as_the_resolver_does(text: str) -> None:
    """Every numeric host the C library reads as an address is read as the same address; the others are
    refused (ValueError), never taken for a name."""
    libc = _libc_aton(text)
    try:
        ours = egress.inet_aton(text)
    except ValueError:
        ours = None
    assert ours == libc, text


_V4_DENIED = [n for n in (ipaddress.ip_network(c) for c, _ in egress.ALWAYS_DENIED) if n.version == 4]


@settings(max_examples=examples(150), deadline=None)
@given(st.sampled_from(_V4_DENIED).flatmap(lambda n: st.integers(int(n.network_address), int(n.broadcast_address)))
       .map(ipaddress.IPv4Address),
       st.sampled_from(["{}", "[::ffff:{}]", "{int}", "{hex}"]))
def test_an_always_denied_address_is_refused_in_every_spelling(address: ipaddress.IPv4Address, form: str) -> None:
    host = form.format(address, int=int(address), hex=hex(int(address)))
    p = egress.Policy.parse(allowed_hosts=f"*,{address}")
    assert not p.check(f"http://{host}/", purpose="git").allowed, host
    assert not p.check_addresses("listed.example", [address], purpose="git", port=443).allowed


@settings(max_examples=examples(150), deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=80))
def test_any_string_is_decided_without_an_exception(text: str) -> None:
    for url in (text, f"http://{text}/", f"https://{text}", f"{text}:r.git"):
        d = DEFAULT.check(url, purpose="git")
        assert isinstance(d.allowed, bool)
        if d.allowed and d.target is not None and d.target.address is None:
            assert d.target.host.isascii() and "@" not in d.target.host
