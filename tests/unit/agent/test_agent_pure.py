"""Pure parts of the agent runner: plan and verdict checks, retries, scripts, prompts, redaction."""

from __future__ import annotations

import pytest

from longshot.agent import errors, prompts, redact, results, roles, settings
from longshot.agent.backends import command, http, scripted
from longshot.api import handoff

pytestmark = pytest.mark.unit


def t(name, *deps, **extra):
    return {"name": name, "description": f"do {name}", "depends_on": list(deps), **extra}


# --- plans -------------------------------------------------------------------------------------------

def test_a_valid_plan():
    plan = results.validate_plan([t("a"), t("b", "a"), t("c", "a", "b")], max_tasks=5)
    assert [p.name for p in plan] == ["a", "b", "c"]
    assert all(isinstance(p, handoff.PlannedTask) for p in plan)


@pytest.mark.parametrize(("tasks", "kwargs", "message"), [
    ("nope", {}, "tasks must be a list"),
    ([t("a"), t("b"), t("c")], {"max_tasks": 2}, "3 tasks; at most 2"),
    ([t("a"), t("a")], {}, "repeated: a"),
    ([t("a", "zzz")], {}, "unknown task(s): zzz"),
    ([t("a", "a")], {}, "depends on itself"),
    ([t("a", "c"), t("b", "a"), t("c", "b")], {}, "cycle: a -> c -> b -> a"),
    ([t("Not_OK")], {}, "task 0 (Not_OK): name"),
    ([{"name": "a"}], {}, "task 0 (a): description: Field required"),
    ([t("a", decompose=True)], {"depth": 1, "max_depth": 2}, "asks to be decomposed"),
])
def test_invalid_plans_say_what_to_fix(tasks, kwargs, message):
    with pytest.raises(errors.ToolError) as e:
        results.validate_plan(tasks, **{"max_tasks": 10, **kwargs})
    assert message in str(e.value)


def test_find_cycle():
    assert results.find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None
    assert results.find_cycle({"x": ["y"], "y": ["x"]}) == ["x", "y", "x"]


def test_review_verdicts():
    assert results.validate_review({"verdict": "approved"}) == ("approved", [])
    assert results.validate_review({"verdict": "changes-requested", "reasons": "fix it"}) == (
        "changes-requested", ["fix it"])
    with pytest.raises(errors.ToolError):
        results.validate_review({"verdict": "lgtm"})


# --- retries -----------------------------------------------------------------------------------------

def test_backoff_is_exponential_capped_and_honours_retry_after():
    policy = http.RetryPolicy(max_attempts=10, base_delay=1, max_delay=10)
    assert [policy.delay(n, None, lambda: 1.0) for n in range(1, 6)] == [1, 2, 4, 8, 10]
    assert policy.delay(3, None, lambda: 0.0) == 2
    assert policy.delay(1, 3.5, lambda: 0.0) == 3.5
    assert policy.delay(1, 3600, lambda: 0.0) == 10


def test_retry_after_formats():
    assert http.parse_retry_after("12") == 12
    assert http.parse_retry_after(None) is None
    assert http.parse_retry_after("soon") is None
    assert http.parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0


# --- scripts -----------------------------------------------------------------------------------------

SCRIPT = {
    "tasks": {"b1-exact": ["exact"], "local": ["local"]},
    "roles": {"planner": ["planner"]},
    "steps": ["default"],
}


@pytest.mark.parametrize(("task", "role", "expected"), [
    ("b1-exact", "worker", ["exact"]),
    ("b1-local", "worker", ["local"]),
    ("b1-other", "planner", ["planner"]),
    ("b1-other", "worker", ["default"]),
])
def test_script_steps_by_task_then_role_then_default(task, role, expected):
    assert scripted.select_steps(SCRIPT, task=task, build="b1", role=role) == expected


def test_script_steps_parse():
    assert scripted.parse_step({"run": "make"}, 0) == ("run_command", {"command": "make"}, False)
    assert scripted.parse_step({"write": {"path": "a", "content": ""}, "check": True}, 1)[2] is True
    with pytest.raises(errors.ConfigError, match="exactly one action"):
        scripted.parse_step({"write": {}, "run": "x"}, 2)
    with pytest.raises(errors.ConfigError, match="must be a mapping"):
        scripted.parse_step("write", 3)


def test_a_checked_command_fails_on_a_non_zero_exit_wherever_check_is_written():
    """``run: {command: ..., check: true}`` used to pass ``check`` to the tool and go on after any exit."""
    from longshot.agent.tools import ToolResult

    assert scripted.parse_step({"run": {"command": "test -f a", "check": True}}, 0) == (
        "run_command", {"command": "test -f a"}, True)
    assert scripted.parse_step({"run": {"command": "test -f a"}, "check": True}, 0)[2] is True
    assert scripted.failed("run_command", ToolResult("[exit code 1]\n"))
    assert not scripted.failed("run_command", ToolResult("[exit code 0]\nok"))
    assert scripted.failed("run_command", ToolResult("[timed out after 9.0s and was killed]\n"))
    assert not scripted.failed("read_file", ToolResult("[exit code 1] is what the file says"))


def test_missing_script_is_a_configuration_error(tmp_path):
    with pytest.raises(errors.ConfigError, match=r"script\.yaml"):
        scripted.load_script(tmp_path)
    (tmp_path / "script.yaml").write_text("- finish: done\n")
    assert scripted.load_script(tmp_path) == {"steps": [{"finish": "done"}]}


# --- command templates -------------------------------------------------------------------------------

def test_command_placeholders_are_shell_quoted():
    line = command.render("agent -p {prompt} --model {model} {unknown}", {
        "prompt": "it's $(rm -rf /)", "model": "m", "prompt_file": "", "workdir": "", "result_file": ""})
    assert line == "agent -p 'it'\"'\"'s $(rm -rf /)' --model m {unknown}"
    out = '{"verdict": "changes-requested"}\nnoise\n{"verdict": "approved"}\n{broken\ntrailing'
    assert command.last_json_object(out) == {"verdict": "approved"}
    assert command.last_json_object("no json") is None


# --- prompts -----------------------------------------------------------------------------------------

def task_input(**fields):
    return handoff.TaskInput.model_validate({
        "task": "b1-t", "build": "b1", "namespace": "ns", "role": "worker", "description": "Add login",
        "repository_url": "https://user:pw@git.example.com/app.git", "branch": "longshot/b1/t", **fields})


@pytest.mark.parametrize("role", ["planner", "worker", "reviewer", "tester", "fixer"])
def test_every_role_has_packaged_prompts(role):
    system, prompt = prompts.role_prompts(role, None, task=task_input(role=role, test_command="make test"),
                                          diff="+x", diff_files=["x"], conflicts=["x"])
    assert "git.example.com/app.git" in system and "pw@" not in system
    assert prompt.strip()


def test_prompts_are_overridden_by_files_in_the_prompts_dir(tmp_path):
    (tmp_path / "worker.j2").write_text("Custom: {{ task.description }}")
    _, prompt = prompts.role_prompts("worker", tmp_path, task=task_input())
    assert prompt == "Custom: Add login\n"
    (tmp_path / "worker.j2").write_text("{{ nope }}")
    with pytest.raises(errors.ConfigError, match=r"worker\.j2 .*nope"):
        prompts.role_prompts("worker", tmp_path, task=task_input())


# --- redaction, settings, commit messages ------------------------------------------------------------

def test_redaction():
    r = redact.Redactor(["my-password", None, "ab"])
    assert r.text("pw=my-password ab") == "pw=*** ab"
    assert r.text("https://bob:hunter2@host/x") == "https://***@host/x"
    assert r.text("token ghp_" + "x" * 36) == "token ***"
    assert r.value({"a": ["my-password", 1]}) == {"a": ["***", 1]}


def test_settings_from_env():
    s = settings.Settings.from_env({"LONGSHOT_OUTPUT_CAP": "100", "LONGSHOT_RETRY_BASE_SECONDS": "0.5"})
    assert s.output_cap == 100 and s.retry_base_seconds == 0.5
    with pytest.raises(errors.ConfigError, match="LONGSHOT_OUTPUT_CAP='x'"):
        settings.Settings.from_env({"LONGSHOT_OUTPUT_CAP": "x"})
    paths = settings.Paths.from_env({"LONGSHOT_WORKSPACE_DIR": "/w"})
    assert str(paths.checkout) == "/w/repo" and str(paths.task_input) == handoff.TASK_INPUT_PATH


def test_commit_message():
    message = roles.commit_message(task_input(), "\n  Add the login form  \nmore")
    title, blank, body = message.split("\n", 2)
    assert (title, blank) == ("Add the login form", "")
    assert "Add login" in body and "Longshot-Task: b1-t" in body
    assert roles.commit_message(task_input(), "").startswith("Add login\n")
    assert len(roles.commit_message(task_input(), "x" * 200).split("\n")[0]) == 72
