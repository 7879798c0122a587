"""Roadmap intake: checklist parsing, dependencies, stable names and byte-exact check-offs."""

from __future__ import annotations

import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from longshot.api.handoff import PLAN_TASK_NAME, PlannedTask
from longshot.core import roadmap
from property_budget import examples

ROADMAP = """\
# Roadmap

Some intro text with a - [ ] fake box in the middle of a sentence.

## Accounts

- [ ] Accounts: sign-up and login
  - [ ] User model with a hashed password
  - [x] Choose the hashing library
  - [ ] Login endpoint
    returning a session token
- [x] Project skeleton

* [ ] Star bullets work
+ [X] Plus bullets work, capital X too
1. [ ] Ordered items work

```markdown
- [ ] not a task: inside a code fence
```

## Later
\t- [ ] Tab-indented item
"""


def names_of(tasks):
    return [t.name for t in tasks]


def test_unchecked_items_become_tasks_with_their_text():
    tasks = roadmap.plan(ROADMAP)
    assert all(isinstance(t, PlannedTask) for t in tasks)
    assert names_of(tasks) == [
        "accounts-sign-up-and-login", "user-model-with-a-hashed-password", "login-endpoint",
        "star-bullets-work", "ordered-items-work", "tab-indented-item",
    ]
    by = {t.name: t for t in tasks}
    assert by["login-endpoint"].description == "Login endpoint\nreturning a session token"
    assert by["star-bullets-work"].description == "Star bullets work"


def test_a_parent_depends_on_its_unchecked_sub_items():
    by = {t.name: t for t in roadmap.plan(ROADMAP)}
    # the checked sub-item is done and adds no dependency
    assert by["accounts-sign-up-and-login"].depends_on == ["user-model-with-a-hashed-password", "login-endpoint"]
    assert by["user-model-with-a-hashed-password"].depends_on == []
    # a heading ends the list: the tab-indented item is not nested under "Ordered items work"
    assert by["tab-indented-item"].depends_on == []


def test_parse_reports_checked_items_and_the_tree():
    items = {i.name: i for i in roadmap.parse(ROADMAP)}
    assert items["project-skeleton"].checked and items["plus-bullets-work-capital-x-too"].checked
    assert items["choose-the-hashing-library"].parent == "accounts-sign-up-and-login"
    assert items["accounts-sign-up-and-login"].children == (
        "user-model-with-a-hashed-password", "choose-the-hashing-library", "login-endpoint")
    assert not any("fence" in name for name in items)


def test_unchecked_items_under_a_checked_item_count_for_the_nearest_open_ancestor():
    text = "- [ ] Release\n  - [x] Backend\n    - [ ] Backend docs\n  - [ ] Frontend\n"
    by = {t.name: t for t in roadmap.plan(text)}
    assert by["release"].depends_on == ["backend-docs", "frontend"]


def test_plain_bullets_between_boxes_are_transparent():
    text = "- [ ] Parent\n  - notes about it\n    - [ ] Child\n"
    by = {t.name: t for t in roadmap.plan(text)}
    assert by["parent"].depends_on == ["child"]
    assert by["parent"].description == "Parent"  # the plain bullet is not part of the text


def test_an_unindented_paragraph_after_a_blank_line_ends_the_list():
    text = "- [ ] First\n\nA paragraph.\n\n  - [ ] Not a child of First\n"
    by = {t.name: t for t in roadmap.plan(text)}
    assert by["first"].depends_on == [] and by["first"].description == "First"


def test_names_are_dns_labels_unique_and_short():
    long = "Implement the whole thing described in the specification document, including the edge cases"
    text = f"- [ ] {long}\n- [ ] {long}\n- [ ] Planner\n- [ ] !!!\n- [ ] Café crème\n- [ ] add  API\n- [ ] Add API!\n"
    names = [i.name for i in roadmap.parse(text)]
    assert len(set(names)) == len(names) == 7
    assert all(re.match(PLAN_TASK_NAME, n) and len(n) <= 40 for n in names), names
    assert names[0].startswith("implement-the-whole-thing-describ") and len(names[0]) == 40
    assert names[1] != names[0]
    assert names[2] != "planner" and names[2].startswith("planner-")  # the build's planner task is reserved
    assert names[3].startswith("item-")
    assert names[4] == "cafe-creme"
    assert names[5] == "add-api" and names[6].startswith("add-api-")


def test_names_are_deterministic_and_survive_check_offs():
    first = [i.name for i in roadmap.parse(ROADMAP)]
    assert first == [i.name for i in roadmap.parse(ROADMAP)]
    checked = roadmap.check_off(ROADMAP, ["login-endpoint", "accounts-sign-up-and-login"])
    assert [i.name for i in roadmap.parse(checked)] == first


def test_check_off_marks_exactly_the_named_items():
    out = roadmap.check_off(ROADMAP, ["login-endpoint", "star-bullets-work"])
    before, after = ROADMAP.split("\n"), out.split("\n")
    changed = [(b, a) for b, a in zip(before, after, strict=True) if b != a]
    assert changed == [("  - [ ] Login endpoint", "  - [x] Login endpoint"),
                       ("* [ ] Star bullets work", "* [x] Star bullets work")]
    assert names_of(roadmap.plan(out)) == [
        "accounts-sign-up-and-login", "user-model-with-a-hashed-password", "ordered-items-work", "tab-indented-item"]
    # the parent no longer waits for the merged child
    assert {t.name: t for t in roadmap.plan(out)}["accounts-sign-up-and-login"].depends_on == [
        "user-model-with-a-hashed-password"]


def test_check_off_is_idempotent_and_keeps_line_endings():
    text = "- [ ] One\r\n- [ ] Two\r\n\r\n```\r\n- [ ] One\r\n```\r\nno final newline"
    once = roadmap.check_off(text, ["one"])
    assert once == text.replace("- [ ] One\r\n- [ ] Two", "- [x] One\r\n- [ ] Two", 1)
    assert roadmap.check_off(once, ["one"]) == once
    assert roadmap.check_off(text, []) == text


def test_unknown_names_are_skipped_and_reported():
    assert roadmap.check_off(ROADMAP, ["no-such-item"]) == ROADMAP
    assert roadmap.unknown_names(ROADMAP, ["no-such-item", "login-endpoint"]) == ["no-such-item"]


def test_an_empty_or_finished_roadmap_plans_nothing():
    assert roadmap.plan("") == []
    assert roadmap.plan("# Roadmap\n\n- [x] all done\n") == []


# --- properties ------------------------------------------------------------------------------------

WORDS = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"),
                min_size=1, max_size=40)
BULLET = st.sampled_from(["-", "*", "+", "1.", "2)"])
INDENT = st.sampled_from(["", "  ", "    ", "\t", "      "])
NEWLINE = st.sampled_from(["\n", "\r\n"])


@st.composite
def documents(draw):
    lines = []
    for _ in range(draw(st.integers(0, 25))):
        kind = draw(st.sampled_from(["item", "item", "item", "text", "blank", "heading", "fence", "plain"]))
        if kind == "item":
            mark = draw(st.sampled_from([" ", "x", "X"]))
            lines.append(f"{draw(INDENT)}{draw(BULLET)} [{mark}] {draw(WORDS)}")
        elif kind == "text":
            lines.append(f"{draw(INDENT)}{draw(WORDS)}")
        elif kind == "heading":
            lines.append(f"## {draw(WORDS)}")
        elif kind == "fence":
            lines.append("```")
        elif kind == "plain":
            lines.append(f"{draw(INDENT)}- {draw(WORDS)}")
        else:
            lines.append("")
    newline = draw(NEWLINE)
    return newline.join(lines) + draw(st.sampled_from(["", newline]))


@settings(max_examples=examples(150), deadline=None)
@given(documents(), st.data())
def test_check_off_changes_only_the_marks_of_the_named_items(text, data):
    items = roadmap.parse(text)
    chosen = data.draw(st.lists(st.sampled_from([i.name for i in items]), unique=True) if items else st.just([]))
    out = roadmap.check_off(text, chosen)

    assert len(out) == len(text)
    diffs = [i for i, (a, b) in enumerate(zip(text, out, strict=True)) if a != b]
    assert all(text[i] == " " and out[i] == "x" for i in diffs)
    assert len(diffs) == sum(1 for i in items if i.name in chosen and not i.checked)
    after = roadmap.parse(out)
    assert [i.name for i in after] == [i.name for i in items]  # names are stable
    assert [i.checked for i in after] == [i.checked or i.name in chosen for i in items]
    assert roadmap.check_off(out, chosen) == out
    assert roadmap.check_off(text, []) == text


@settings(max_examples=examples(150), deadline=None)
@given(documents())
@example("- [ ] \x1f")  # found by Hypothesis: text that str.strip() empties gave an empty description
def test_every_plan_is_valid_and_acyclic(text):
    from longshot.agent import results

    tasks = roadmap.plan(text)
    names = [t.name for t in tasks]
    assert len(set(names)) == len(names)
    assert all(re.match(PLAN_TASK_NAME, n) for n in names)
    # the same checks the agent applies to an LLM planner's list (unknown dependency, cycle, ...)
    assert results.validate_plan([t.model_dump() for t in tasks], max_tasks=max(len(tasks), 1)) == tasks
    assert roadmap.plan(text) == tasks
