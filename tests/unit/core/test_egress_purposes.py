"""Allowlists by purpose: an entry serves the purposes and ports it names, and nothing else (core.egress)."""

from __future__ import annotations

import pytest

from longshot.core import egress

# The local cluster's shape: a git server on a private address, allowed for git on its port only; a public
# model API allowed for model; any public host for trackers and forges on 443.
POLICY = egress.Policy.parse(allowed_hosts="none", allow=[
    {"cidr": "10.244.0.1/32", "purposes": ["git"], "ports": [3000]},
    {"host": "api.openai.com", "purposes": ["model"], "ports": [443]},
    {"host": "git.corp.internal", "purposes": ["git", "forge"], "ports": [443, 22]},
    {"host": "*", "purposes": ["tracker", "forge"], "ports": [443]},
])


@pytest.mark.parametrize(("url", "purpose", "rule"), [
    # the git server: git on 3000 only
    ("http://10.244.0.1:3000/o/r.git", "git", "allowed-cidr"),
    ("http://10.244.0.1:3000/v1", "model", "purpose-not-allowed"),
    ("http://10.244.0.1:4000/v1", "model", "purpose-not-allowed"),
    ("http://10.244.0.1:4000/o/r.git", "git", "port-not-allowed"),
    ("http://10.244.0.1/v1", "tracker", "purpose-not-allowed"),
    ("http://10.244.0.1:3000/api/v1", "forge", "purpose-not-allowed"),
    ("http://10.244.0.2:3000/o/r.git", "git", "address-not-listed"),
    # a named model API: model on 443 only
    ("https://api.openai.com/v1", "model", "host-listed"),
    ("https://api.openai.com:8443/v1", "model", "port-not-allowed"),
    ("https://api.openai.com/o/r.git", "git", "purpose-not-allowed"),
    # an internal git host, exactly named, for git and forge on 443 and 22
    ("https://git.corp.internal/o/r.git", "git", "host-listed"),
    ("ssh://git@git.corp.internal/o/r.git", "git", "host-listed"),
    ("git@git.corp.internal:o/r.git", "git", "host-listed"),
    ("https://git.corp.internal/api/v4", "forge", "host-listed"),
    ("https://git.corp.internal/v1", "model", "purpose-not-allowed"),
    ("http://git.corp.internal:3000/o/r.git", "git", "port-not-allowed"),
    # the wildcard entry: trackers and forges on 443, never a model or git
    ("https://api.github.com/repos/o/r/issues", "tracker", "host-listed"),
    ("https://api.github.com/repos/o/r/pulls", "forge", "host-listed"),
    ("https://models.example.com/v1", "model", "host-not-listed"),
    ("https://github.com/o/r.git", "git", "host-not-listed"),
    ("https://api.github.com:8443/", "tracker", "host-not-listed"),
])
def test_each_entry_serves_its_purposes_on_its_ports(url: str, purpose: egress.Purpose, rule: str) -> None:
    d = POLICY.check(url, purpose=purpose)
    assert (d.allowed, d.rule) == (rule in ("allowed-cidr", "host-listed"), rule), d.reason


def test_a_refusal_says_what_the_entry_is_for() -> None:
    d = POLICY.check("http://10.244.0.1:4000/v1", purpose="model")
    message = d.message("spec.agent.baseUrl", "http://10.244.0.1:4000/v1")
    assert message.startswith("spec.agent.baseUrl 'http://10.244.0.1:4000/v1' is refused by the egress policy "
                              "(purpose-not-allowed): 10.244.0.1 is not allowed for model: the allowlist has "
                              "10.244.0.1/32 (egress.allow: git on port 3000)")
    assert "egress.allow" in message


def test_resolved_addresses_count_only_entries_of_the_purpose_and_port() -> None:
    """A name resolving into the git server's range is not let through by that range for another purpose."""
    p = egress.Policy.parse(allowed_hosts="*", allow=[{"cidr": "10.244.0.0/24", "purposes": ["git"], "ports": [3000]}])
    assert p.check_addresses("git.local", ["10.244.0.1"], purpose="git", port=3000).allowed
    assert p.check_addresses("git.local", ["10.244.0.1"], purpose="model", port=3000).rule == "private-range"
    assert p.check_addresses("git.local", ["10.244.0.1"], purpose="git", port=4000).rule == "private-range"
    # an exactly named private host: its private address only for its purposes and ports
    q = egress.Policy.parse(allowed_hosts="none", allow=[
        {"host": "git.corp.internal", "purposes": ["git"], "ports": [443]},
        {"host": "*", "purposes": ["model"], "ports": [443]}])
    assert q.check_addresses("git.corp.internal", ["10.0.0.7"], purpose="git", port=443).allowed
    assert q.check_addresses("git.corp.internal", ["10.0.0.7"], purpose="model", port=443).rule == "private-range"


@pytest.mark.parametrize(("port", "allowed"), [(80, True), (443, True), (22, True), (9418, True), (3000, False)])
def test_a_legacy_exact_host_serves_every_purpose_on_the_default_ports(port: int, allowed: bool) -> None:
    p = egress.Policy.parse(allowed_hosts="git.corp.internal")
    for purpose in egress.PURPOSES:
        assert p.check(f"http://git.corp.internal:{port}/x", purpose=purpose).allowed is allowed
    assert p.check_addresses("git.corp.internal", ["10.0.0.7"], purpose="model", port=port).allowed is allowed


def test_legacy_wildcards_serve_every_purpose_and_port_but_only_public_addresses() -> None:
    p = egress.Policy.parse(allowed_hosts="*")
    for purpose in egress.PURPOSES:
        assert p.check("https://models.example.com:8000/v1", purpose=purpose).allowed
        assert p.check_addresses("models.example.com", ["10.0.0.7"], purpose=purpose, port=8000).rule == \
            "private-range"


def test_legacy_ranges_serve_every_purpose_and_port() -> None:
    p = egress.Policy.parse(allowed_hosts="none", allowed_cidrs="127.0.0.0/8")
    for purpose in egress.PURPOSES:
        assert p.check("http://127.0.0.1:41234/", purpose=purpose).allowed


@pytest.mark.parametrize(("allow", "error"), [
    ('[{"cidr": "10.0.0.1/32", "ports": [3000]}]', r"allow\[0\]: purposes must list some of git, model"),
    ('[{"cidr": "10.0.0.1/32", "purposes": ["llm"], "ports": [3000]}]', r"allow\[0\]: purposes"),
    ('[{"cidr": "10.0.0.1/32", "purposes": ["git"]}]', r"allow\[0\]: ports must list 1 to 64 port numbers"),
    ('[{"cidr": "10.0.0.1/32", "purposes": ["git"], "ports": [0]}]', r"allow\[0\]: ports"),
    ('[{"cidr": "10.0.0.1/32", "purposes": ["git"], "ports": [true]}]', r"allow\[0\]: ports"),
    ('[{"cidr": "10.0.0.1/32", "purposes": ["git"], "ports": ' + str(list(range(1, 66))) + "}]", r"allow\[0\]: ports"),
    ('[{"host": "a.io", "cidr": "10.0.0.1/32", "purposes": ["git"], "ports": [1]}]', r"exactly one of host and cidr"),
    ('[{"purposes": ["git"], "ports": [1]}]', r"exactly one of host and cidr"),
    ('[{"cidr": "10.0.0.1/33", "purposes": ["git"], "ports": [1]}]', r"allow\[0\]\.cidr: '10\.0\.0\.1/33'"),
    ('[{"host": "a b", "purposes": ["git"], "ports": [1]}]', r"allow\[0\]\.host: 'a b'"),
    ('[{"host": "a.io", "purposes": ["git"], "ports": [1], "any": 1}]', r"and nothing else"),
    ('{"host": "a.io"}', r"expected a list"),
    ("[{", r"not a JSON list"),
])
def test_malformed_entries_are_named(allow: str, error: str) -> None:
    with pytest.raises(egress.PolicyError, match=error):
        egress.Policy.parse(allow=allow)


def test_entries_from_the_environment_are_json_and_none_is_empty() -> None:
    p = egress.Policy.parse(allow='[{"host": "API.OpenAI.com.", "purposes": ["model"], "ports": [443]}]')
    assert p.allow == (egress.Entry(frozenset({"model"}), frozenset({443}), host="api.openai.com"),)
    assert egress.Policy.parse(allow="none").allow == () == egress.Policy.parse(allow="").allow
