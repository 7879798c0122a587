"""The tools' sandbox: paths confined to the checkout, commands bounded in time and output."""

from __future__ import annotations

import os
import threading
import time

import pytest

from longshot.agent import errors, events, redact, sandbox, tools

pytestmark = pytest.mark.integration


@pytest.fixture
def box(tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.py").write_text("alpha = 1\nbeta = 2\n")
    (root / ".git").mkdir()
    (root / ".git" / "config").write_text("[core]\n")
    (tmp_path / "outside.txt").write_text("secret\n")
    return sandbox.Sandbox(root, env={"PATH": os.environ["PATH"]}, output_cap=200, default_timeout=5)


@pytest.mark.parametrize("path", ["../outside.txt", "src/../../outside.txt", "/etc/passwd", "link/x", "alink"])
def test_paths_escaping_the_root_are_refused(box, tmp_path, path):
    (box.root / "link").symlink_to(tmp_path)
    (box.root / "alink").symlink_to(tmp_path / "outside.txt")
    with pytest.raises(errors.ToolError, match="outside the workspace"):
        box.resolve(path)


def test_symlinks_inside_the_root_and_absolute_paths_inside_it_are_fine(box):
    (box.root / "b.py").symlink_to(box.root / "src" / "a.py")
    assert box.read_file("b.py") == "alpha = 1\nbeta = 2\n"
    assert box.read_file(str(box.root / "src" / "a.py")).startswith("alpha")


def test_git_internals_are_refused(box):
    with pytest.raises(errors.ToolError, match=r"inside \.git"):
        box.write_file(".git/hooks/pre-commit", "#!/bin/sh\n")


def test_edit_file_needs_exactly_one_match(box):
    with pytest.raises(errors.ToolError, match="not found"):
        box.edit_file("src/a.py", "gamma", "delta")
    box.write_file("src/b.py", "x\nx\n")
    with pytest.raises(errors.ToolError, match="occurs 2 times"):
        box.edit_file("src/b.py", "x", "y")
    assert box.edit_file("src/b.py", "x", "y", replace_all=True) == "edited src/b.py (2 replacements)"
    assert box.read_file("src/b.py") == "y\ny\n"


def test_list_and_search_skip_git(box):
    box.write_file("docs/readme.md", "beta test\n")
    assert box.list_files().splitlines() == ["docs/readme.md", "src/a.py"]
    assert box.list_files(pattern="*.py") == "src/a.py"
    assert box.search(r"beta\b") == "docs/readme.md:1: beta test\nsrc/a.py:2: beta = 2"
    assert box.search("core") == "(no matches)"
    with pytest.raises(errors.ToolError, match="invalid regular expression"):
        box.search("(")


def test_a_hanging_command_and_its_children_are_killed(box, tmp_path):
    pidfile = tmp_path / "pid"
    start = time.monotonic()
    result = box.run_command(f"sleep 100 & echo $! > {pidfile}; sleep 100", timeout=0.3)
    assert result.timed_out and result.exit_code is None
    assert time.monotonic() - start < 10
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the background child survived"
        time.sleep(0.02)


def test_a_persons_interrupt_kills_the_command_and_its_children_within_a_second(tmp_path):
    interrupt = threading.Event()
    box = sandbox.Sandbox(tmp_path, env={"PATH": os.environ["PATH"]}, default_timeout=600, interrupt=interrupt)
    pidfile = tmp_path / "pid"
    threading.Timer(0.5, interrupt.set).start()
    start = time.monotonic()
    result = box.run_command(f"sleep 600 & echo $! > {pidfile}; echo working; sleep 600")
    took = time.monotonic() - start
    assert result.interrupted and not result.timed_out and result.exit_code is None
    assert took < 5, took
    assert result.render().startswith("[interrupted by a person after") and "working" in result.output
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid):
        assert time.monotonic() < deadline, "the background child survived the interrupt"
        time.sleep(0.02)
    # a command that ends by itself is not marked interrupted
    interrupt.clear()
    assert box.run_command("echo done").render() == "[exit code 0]\ndone\n"


def test_background_children_do_not_hold_a_finished_command(box):
    start = time.monotonic()
    result = box.run_command("sleep 100 & echo started")
    assert result.exit_code == 0 and result.output == "started\n"
    assert time.monotonic() - start < 10


def test_the_group_is_killed_before_the_command_is_reaped(tmp_path, monkeypatch):
    """Killing the group after reaping the command could reach an unrelated group that reused its pid."""
    states: list[str] = []
    kill = sandbox._kill_group

    def spy(pgid: int, sig: int) -> None:
        with open(f"/proc/{pgid}/stat") as f:  # the leader must still exist (a zombie): its pid is not free
            states.append(f.read().rsplit(")", 1)[1].split()[0])
        kill(pgid, sig)

    monkeypatch.setattr(sandbox, "_kill_group", spy)
    result = sandbox.run(["sh", "-c", "echo done"], cwd=tmp_path, env=dict(os.environ), timeout=30)
    assert result.exit_code == 0 and "done" in result.output
    assert states == ["Z"]


def test_output_is_capped_to_head_and_tail(box):
    result = box.run_command("seq 1 100000")
    assert result.output.startswith("1\n2\n3\n")
    assert result.output.endswith("99999\n100000\n")
    assert "[... truncated" in result.output and len(result.output) < 300


def test_truncate():
    assert sandbox.truncate("short", 10) == "short"
    text = sandbox.truncate("a" * 50 + "b" * 50, 20)
    assert text.startswith("a" * 10) and text.endswith("b" * 10) and "truncated 80 characters" in text


def test_toolbox_turns_bad_calls_into_errors_the_model_sees(box):
    import io

    out = io.StringIO()
    ev = events.Events(redact.Redactor(["topsecretvalue"]), stream=out)
    toolbox = tools.Toolbox(box, ev, "worker")
    assert toolbox.call("nope", {}).content.startswith("error: unknown tool 'nope'")
    assert "not valid JSON" in toolbox.call("read_file", "{bad").content
    assert "must be a JSON object" in toolbox.call("read_file", "[1]").content
    assert "missing required argument 'path'" in toolbox.call("read_file", {}).content
    assert toolbox.call("run_command", {"command": "echo topsecretvalue"}).content == "[exit code 0]\n***\n"
    assert "topsecretvalue" not in out.getvalue()
    assert toolbox.call("finish", {"summary": "done"}).content == "finished"
    assert toolbox.finished.summary == "done"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
