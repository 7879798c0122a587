"""core.proxy: which destinations go through the proxy (NO_PROXY as curl reads it), the proxy URL's form, and the
proxy's own allowance (only an egress.allow entry naming the purpose proxy)."""

from __future__ import annotations

import pytest

from longshot.core import egress
from longshot.core import proxy as cproxy

pytestmark = pytest.mark.unit

PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(("entries", "host", "bypass"), [
    ("example.com", "example.com", True),
    ("example.com", "api.example.com", True),
    (".example.com", "example.com", True),
    (".example.com", "a.b.example.com", True),
    ("example.com", "badexample.com", False),
    ("example.com", "example.com.evil.net", False),
    ("EXAMPLE.com.", "example.com", True),
    ("*", "anything.net", True),
    ("*", "10.1.2.3", True),
    ("10.0.0.0/8", "10.1.2.3", True),
    ("10.0.0.0/8", "11.1.2.3", False),
    ("10.1.2.3", "10.1.2.3", True),
    ("10.1.2.3", "10.1.2.4", False),
    ("[fd00::1]", "fd00::1", True),
    ("fd00::/8", "fd12::7", True),
    ("fd00::/8", "10.1.2.3", False),
    ("10.0.0.0/8", "ten.example.com", False),  # names are never resolved for NO_PROXY
    ("localhost, internal.corp 192.168.0.0/16", "git.internal.corp", True),
    ("", "example.com", False),
])
def test_no_proxy_matches_as_curl_does(entries: str, host: str, bypass: bool) -> None:
    proxies = cproxy.parse(url=PROXY, no_proxy=entries)
    assert cproxy.bypass(proxies.no_proxy, host) is bypass
    assert cproxy.route(proxies, "https", host) == (None if bypass else "http://proxy.corp:3128")


def test_each_scheme_takes_its_proxy_and_ours_wins_over_the_standard_variables() -> None:
    standard = cproxy.parse(https_proxy="http://a.corp:3128", http_proxy="b.corp:8080", standard_no_proxy=".corp")
    assert cproxy.parse(url="http://[fd00::1]:3128/").urls == ("http://[fd00::1]:3128",)
    assert cproxy.route(standard, "https", "api.openai.com") == "http://a.corp:3128"
    assert cproxy.route(standard, "http", "api.openai.com") == "http://b.corp:8080"  # curl's default scheme: http
    assert cproxy.route(standard, "http", "git.corp") is None
    only_https = cproxy.parse(https_proxy="http://a.corp:3128")
    assert cproxy.route(only_https, "http", "example.com") is None
    ours = cproxy.parse(url="https://p.corp:8443", no_proxy="none", https_proxy="http://a.corp:3128",
                        standard_no_proxy="*")
    assert ours.urls == ("https://p.corp:8443",)
    assert cproxy.route(ours, "http", "example.com") == cproxy.route(ours, "https", "x.net") == "https://p.corp:8443"
    assert cproxy.route(cproxy.parse(), "https", "example.com") is None
    # the chart's "none": no proxy, whatever an injected HTTPS_PROXY says
    assert cproxy.parse(url="none", https_proxy="http://a.corp:3128", http_proxy="http://a.corp:3128").urls == ()


@pytest.mark.parametrize(("url", "message"), [
    ("http://user:secret@proxy.corp:3128", "credentials in the proxy URL"),
    ("http://user@proxy.corp:3128", "credentials in the proxy URL"),
    ("socks5://proxy.corp:1080", "scheme must be http or https"),
    ("http://proxy.corp:3128/path", "has a path"),
    ("http://proxy corp:3128", "space"),
    ("http://proxy.corp", "give the proxy's port"),
    ("http://[fd00::1]", "give the proxy's port"),
])
def test_a_malformed_proxy_url_is_refused_naming_the_setting(url: str, message: str) -> None:
    with pytest.raises(cproxy.ProxyError, match=message) as e:
        cproxy.parse(url=url)
    assert str(e.value).startswith("egress.proxy.url")
    assert "secret" not in str(e.value)


@pytest.mark.parametrize("entry", ["example.com:8080", "ex!ample.com", "a/b"])
def test_a_malformed_no_proxy_entry_is_refused(entry: str) -> None:
    with pytest.raises(cproxy.ProxyError, match=r"egress\.proxy\.noProxy"):
        cproxy.parse(no_proxy=entry)


def test_the_proxy_must_be_allowed_explicitly_for_the_purpose_proxy() -> None:
    proxies = cproxy.parse(url=PROXY)
    with pytest.raises(cproxy.ProxyError, match=r"egress.proxy.url .*purposes: \[proxy\], ports: \[3128\]"):
        cproxy.check_allowed(proxies, egress.Policy.parse(allowed_hosts="*"))  # a wildcard never serves proxy
    with pytest.raises(cproxy.ProxyError):
        cproxy.check_allowed(proxies, egress.Policy.parse(allowed_hosts="proxy.corp"))  # nor a legacy exact name
    with pytest.raises(cproxy.ProxyError, match="port-not-allowed"):
        cproxy.check_allowed(proxies, egress.Policy.parse(
            allow=[{"host": "proxy.corp", "purposes": ["proxy"], "ports": [8080]}]))
    cproxy.check_allowed(proxies, egress.Policy.parse(
        allow=[{"host": "proxy.corp", "purposes": ["proxy"], "ports": [3128]}]))
    cproxy.check_allowed(cproxy.parse(), egress.Policy.parse())  # no proxy: nothing to allow


def test_an_entry_for_the_proxy_serves_no_build_destination() -> None:
    policy = egress.Policy.parse(allowed_hosts="", allow=[{"host": "proxy.corp", "purposes": ["proxy"],
                                                          "ports": [3128]}])
    for purpose in egress.PURPOSES:
        d = policy.check("http://proxy.corp:3128/", purpose=purpose)
        assert not d.allowed and d.rule == "purpose-not-allowed", (purpose, d)
    assert "proxy" not in egress.PURPOSES and "proxy" in egress.ENTRY_PURPOSES
