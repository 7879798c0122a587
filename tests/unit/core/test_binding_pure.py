"""Binding work to one commit and one Pod (core.binding), and agent text made safe to show (api.sanitize)."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from longshot.api import handoff as ho
from longshot.api import sanitize
from longshot.core import binding
from property_budget import examples

pytestmark = pytest.mark.unit

TIP = "a" * 40
OTHER = "b" * 40


def mismatch(**kw):
    args = {"role": "worker", "outcome": "succeeded", "branch": "longshot/b/t", "commit": TIP,
            "expected_branch": "longshot/b/t", "tip": TIP, "bound_commit": None}
    return binding.handoff_mismatch(**{**args, **kw})


def test_a_worker_hands_off_its_own_branch_at_its_tip():
    assert mismatch() is None
    assert mismatch(commit=TIP[:12]) is None  # an abbreviated id of the tip


def test_a_handoff_naming_another_branch_names_both():
    why = mismatch(branch="longshot/b/other-task")
    assert why is not None and "'longshot/b/other-task'" in why and "'longshot/b/t'" in why


def test_a_handoff_whose_commit_is_not_the_tip_names_both_commits():
    why = mismatch(tip=OTHER)
    assert why is not None and TIP[:12] in why and OTHER[:12] in why and "moved" in why
    assert "does not exist" in (mismatch(tip=None) or "")


def test_only_delivered_work_is_checked_against_the_branch():
    assert mismatch(outcome="empty", branch=None, commit=None) is None
    assert mismatch(role="planner", branch="anything", tip=None) is None


def test_a_reviewer_bound_to_a_commit_must_name_it():
    assert mismatch(role="reviewer", commit=TIP, bound_commit=TIP, branch="x", tip=None) is None
    why = mismatch(role="tester", commit=OTHER, bound_commit=TIP)
    assert why is not None and "spec.commit" in why and OTHER[:12] in why and TIP[:12] in why


def test_a_review_of_another_commit_is_void():
    assert binding.review_mismatch(TIP, TIP) is None
    why = binding.review_mismatch(OTHER, TIP)
    assert why is not None and why.startswith("the review is void") and OTHER[:12] in why and TIP[:12] in why
    assert binding.review_mismatch(None, TIP) is not None


def test_a_pod_is_adopted_only_when_its_controller_is_the_task_and_its_uid_the_recorded_one():
    assert binding.adoption_refused("t-a1", "task-uid", "task-uid", None, "pod-uid") is None
    assert binding.adoption_refused("t-a1", "task-uid", "task-uid", "pod-uid", "pod-uid") is None
    foreign = binding.adoption_refused("t-a1", "other-uid", "task-uid", None, "pod-uid")
    assert foreign is not None and "other-uid" in foreign and "not adopted and not deleted" in foreign
    assert "no AgentTask controller" in (binding.adoption_refused("t-a1", "", "task-uid", None, "p") or "")
    replaced = binding.adoption_refused("t-a1", "task-uid", "task-uid", "old-uid", "new-uid")
    assert replaced is not None and "old-uid" in replaced and "new-uid" in replaced


def test_control_characters_escapes_and_bidi_overrides_are_removed():
    text = ("ok\x1b[31mred\x1b[0m\x1b]0;title\x07 \x1b]8;;http://evil\x1b\\link\x1b]8;;\x1b\\ "
            "\u202eevil\u2066 \x00\x7f\x9b2J")
    cleaned = sanitize.clean(text)
    assert not any(ch in cleaned for ch in "\x1b\x07\x00\x7f\x9b\u202e\u2066")
    assert "red" in cleaned and "link" in cleaned and "title" not in cleaned


def test_newlines_stay_in_a_text_and_go_from_a_line():
    assert sanitize.clean("a\nb\tc\r") == "a\nb\tc"
    assert sanitize.one_line("refs/heads/x\n2026-01-01 INFO forged") == "refs/heads/x2026-01-01 INFO forged"


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=2000))
def test_clean_leaves_no_control_character_whatever_the_text(text):
    for out, allowed in ((sanitize.clean(text), "\n\t"), (sanitize.one_line(text), "")):
        bad = [c for c in out if (ord(c) < 0x20 and c not in allowed) or 0x7f <= ord(c) <= 0x9f
               or c in "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"]
        assert not bad


@pytest.mark.parametrize("text", ["\x1b[" + "0;" * 500_000, "\x1b]" + "a" * 1_000_000, "\x1b" * 1_000_000,
                                  "\x1b[1" * 300_000])
def test_clean_is_linear_on_a_large_adversarial_text(text):
    start = time.perf_counter()
    sanitize.clean(text)
    print(f"clean of {len(text)} characters: {time.perf_counter() - start:.3f}s")


def test_userinfo_is_stripped_from_a_url():
    assert sanitize.strip_userinfo("https://bot:s3cret@git.example.com/o/r.git") == "https://git.example.com/o/r.git"
    assert sanitize.strip_userinfo("https://git.example.com/o/r@x") == "https://git.example.com/o/r@x"
    assert sanitize.strip_userinfo("git@github.com:o/r.git") == "git@github.com:o/r.git"


def test_a_parsed_handoff_has_no_escape_in_its_text():
    h = ho.Handoff(task="t", role="worker", outcome="failed", summary="done\x1b[2J\x1b[31m!",
                   reasons=["r\x1b]0;x\x07"], failure=ho.Failure.model_validate({"class": "AgentError",
                                                                                "message": "m\x9b1m"}))
    parsed = ho.parse_termination_message(ho.encode(h).decode())
    assert isinstance(parsed, ho.Handoff)
    assert (parsed.summary, parsed.reasons, parsed.failure.message if parsed.failure else None) == (
        "done!", ["r"], "m")
