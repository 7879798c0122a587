"""The push command list parser and the ref policy: what an agent may update through the gateway."""

from __future__ import annotations

import pytest

from longshot.gateway import pktline, refpolicy
from longshot.gateway.pktline import Command, Limits, ProtocolError, pkt

pytestmark = pytest.mark.unit

A, B, Z = "a" * 40, "b" * 40, "0" * 40
CAPS = "report-status side-band-64k quiet object-format=sha1 agent=git/2.39"


def push(*commands: tuple[str, str, str], caps: str = CAPS, shallow: tuple[str, ...] = ()) -> bytes:
    out = b"".join(pkt(f"shallow {s}") for s in shallow)
    for i, (old, new, ref) in enumerate(commands):
        line = f"{old} {new} {ref}"
        out += pkt(line + "\0" + caps if i == 0 else line)
    return out + pktline.FLUSH


def test_a_command_list_is_read_up_to_its_flush_and_the_pack_after_it_is_left_alone():
    data = push((A, B, "refs/heads/longshot/b/t"), (Z, A, "refs/longshot/handoffs/t/1"))
    parsed = pktline.parse_commands(data + b"PACK\x00\x00\x00\x02...")

    assert parsed is not None
    assert parsed.commands == (Command(A, B, "refs/heads/longshot/b/t"), Command(Z, A, "refs/longshot/handoffs/t/1"))
    assert parsed.consumed == len(data) and parsed.raw == data
    assert parsed.sideband and parsed.report_status
    assert parsed.commands[1].is_create and not parsed.commands[0].is_delete


def test_a_partial_command_list_asks_for_more_at_every_cut():
    data = push((A, B, "refs/heads/x"), (A, B, "refs/heads/y"))
    for cut in range(len(data)):
        assert pktline.parse_commands(data[:cut]) is None
    assert pktline.parse_commands(data) is not None


def test_shallow_lines_and_sha256_ids_are_understood():
    new = "c" * 64
    parsed = pktline.parse_commands(push(("0" * 64, new, "refs/heads/x"), shallow=(A,)))
    assert parsed is not None and parsed.shallow == (A,) and parsed.commands[0].new == new


@pytest.mark.parametrize("data, message", [
    (pkt(f"zz {B} refs/heads/x\0caps") + b"0000", "invalid object id"),
    (pkt(f"{A} {B}\0caps") + b"0000", "malformed push command"),
    (pkt(f"{A} {B} refs/heads/x\0caps") + pkt(f"{A} {B} refs/heads/y\0more") + b"0000", "NUL byte"),
    (b"xyzw", "not a pkt-line"),
    (b"0001", "special packet"),
    (b"0000", "without commands"),
    (pkt(f"push-cert\0{CAPS}") + b"0000", "signed pushes"),
    (b"ffff", "out of range"),
])
def test_malformed_input_is_refused_with_what_is_wrong(data, message):
    with pytest.raises(ProtocolError, match=message):
        pktline.parse_commands(data)


def test_limits_stop_a_flood_of_commands_before_the_flush_arrives():
    many = push(*[(A, B, f"refs/heads/b{i}") for i in range(5)])
    with pytest.raises(ProtocolError, match="more than 4 ref updates"):
        pktline.parse_commands(many, Limits(max_commands=4))
    endless = b"".join(pkt(f"{A} {B} refs/heads/{'x' * 200}{i}") for i in range(100))  # no flush yet
    with pytest.raises(ProtocolError, match="larger than 4096 bytes"):
        pktline.parse_commands(endless, Limits(max_commands=1000, max_bytes=4096))


def test_a_refusal_is_a_report_status_inside_side_band_with_a_message_on_band_two():
    out = pktline.report([("refs/heads/main", "no"), ("refs/heads/x", None)], sideband=True, messages=["hello"])

    assert out.endswith(b"0000")
    assert pkt(b"\x02hello\n") in out
    inner = pkt("unpack ok\n") + pkt("ng refs/heads/main no\n") + pkt("ok refs/heads/x\n") + b"0000"
    assert pkt(b"\x01" + inner) in out
    assert pktline.report([("refs/heads/main", "a\nb")], sideband=False) == (
        pkt("unpack ok\n") + pkt("ng refs/heads/main a b\n") + b"0000")


POLICY = refpolicy.RefPolicy(namespace="ns", build="b", task="b-t", attempt=2, role="worker",
                             branch="longshot/ns/b/b-t")


@pytest.mark.parametrize("command", [
    Command(A, B, "refs/heads/longshot/ns/b/b-t"),
    Command(Z, B, "refs/heads/longshot/ns/b/b-t"),
    Command(Z, B, "refs/longshot/handoffs/ns/b/b-t/2"),
    Command(A, B, "refs/longshot/handoffs/ns/b/b-t/2"),
])
def test_an_attempt_may_create_and_update_its_own_branch_and_handoff_ref(command):
    assert POLICY.check(command) is None


@pytest.mark.parametrize("command, reason", [
    (Command(A, B, "refs/heads/main"),
     "may only update refs/heads/longshot/ns/b/b-t or refs/longshot/handoffs/ns/b/b-t/2"),
    (Command(A, B, "refs/heads/longshot/ns/b/b-other"), "may only update"),
    (Command(A, B, "refs/longshot/handoffs/ns/b/b-t/1"), "may only update"),
    (Command(A, B, "refs/tags/v1"), "may only update"),
    (Command(A, Z, "refs/heads/longshot/ns/b/b-t"), "deleting refs is not allowed"),
    (Command(A, Z, "refs/heads/main"), "deleting refs is not allowed"),
    (Command(A, B, "refs/heads/longshot/ns/b/b-t/../../../main"), "invalid ref name"),
    (Command(A, B, "HEAD"), "invalid ref name"),
])
def test_every_other_update_and_every_delete_is_refused_with_a_reason(command, reason):
    assert reason in (POLICY.check(command) or "")


def test_one_refused_ref_refuses_the_whole_push():
    results = POLICY.decide([Command(A, B, "refs/heads/longshot/ns/b/b-t"), Command(A, B, "refs/heads/main")])
    assert results[0] == ("refs/heads/longshot/ns/b/b-t", "not updated: another ref of this push was refused")
    assert "may only update" in (results[1][1] or "")


def test_readers_may_push_only_their_handoff_and_a_branch_outside_the_build_is_never_theirs():
    reviewer = refpolicy.RefPolicy(namespace="ns", build="b", task="b-r", attempt=1, role="reviewer",
                                   branch="longshot/ns/b/b-t")
    assert reviewer.allowed == ("refs/longshot/handoffs/ns/b/b-r/1",)
    assert reviewer.check(Command(A, B, "refs/heads/longshot/ns/b/b-t")) is not None
    fixer = refpolicy.RefPolicy(namespace="ns", build="b", task="b-f", attempt=1, role="fixer",
                                branch="main")
    assert fixer.branch_ref is None and fixer.check(Command(A, B, "refs/heads/main")) is not None
    other_build = refpolicy.RefPolicy(namespace="ns", build="b", task="b-t", attempt=1, role="worker",
                                      branch="longshot/ns/c/b-t")
    assert other_build.branch_ref is None


@pytest.mark.parametrize("ref", [
    "refs/heads/longshot/other/b/b-t",        # the build of the same name in another namespace
    "refs/heads/longshot/b/b-t",              # the name without a namespace (before the namespace was in refs)
    "refs/longshot/handoffs/other/b/b-t/2",   # the other namespace's handoff ref
    "refs/longshot/handoffs/b-t/2",
])
def test_a_build_of_the_same_name_in_another_namespace_shares_no_ref(ref):
    assert POLICY.allowed == ("refs/heads/longshot/ns/b/b-t", "refs/longshot/handoffs/ns/b/b-t/2")
    assert "may only update" in (POLICY.check(Command(A, B, ref)) or "")
    tenant_b = refpolicy.RefPolicy(namespace="other", build="b", task="b-t", attempt=2, role="worker",
                                   branch="longshot/ns/b/b-t")
    assert tenant_b.branch_ref is None  # a branch of namespace ns is never another namespace's attempt's


def test_a_clone_hides_the_builds_other_task_branches_and_shows_the_ones_the_attempt_reads() -> None:
    entries = refpolicy.read_config("ns", "b1", ["longshot/ns/b1/b1-t1", "main", "longshot/ns/b1/b1-t0",
                                                 "longshot/ns/b2/b2-t1", "", "longshot/ns/b1/bad..name"])
    assert entries == [("uploadpack.hideRefs", "refs/heads/longshot/ns/b1"),
                       ("uploadpack.hideRefs", "!refs/heads/longshot/ns/b1/b1-t0"),
                       ("uploadpack.hideRefs", "!refs/heads/longshot/ns/b1/b1-t1"),
                       ("uploadpack.allowTipSHA1InWant", "true")]
    assert refpolicy.read_config("", "b1", ["main"]) == []  # no build prefix: nothing hidden
