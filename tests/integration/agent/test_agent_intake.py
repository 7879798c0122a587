"""Issue 14 in a real checkout with real git: ask/answer, the iterative planner, the judge of a fan-out, and
the retry and dependency context a re-attempt or a dependent task gets."""

from __future__ import annotations

import json

import agent_servers as servers
import pytest
from agent_servers import openai_tools, task_input

from longshot.api import handoff

pytestmark = pytest.mark.integration

BRANCH = "longshot/default/b1/b1-api"


# --- ask / answer -------------------------------------------------------------------------------------

ASKING = {"tasks": {"api": {
    "answered": [
        {"run": {"command": "test -f server.py", "check": True}},  # the first attempt's work is on the branch
        {"edit": {"path": "server.py", "old": "PORT = None", "new": "PORT = 8080"}},
        {"finish": "Listen on port 8080"},
    ],
    "steps": [
        {"write": {"path": "server.py", "content": "PORT = None\n"}},
        {"ask": "Which port should the server listen on, 8080 or 9090?"},
        {"write": {"path": "never.py", "content": "not reached\n"}},
    ],
}}}


def test_ask_ends_the_attempt_with_the_question_and_the_answer_resumes_it(daemon, repo, run_agent, tmp_path):
    first = run_agent(task_input(daemon.url(repo), task="b1-api"), script=ASKING)

    assert first.exit_code == 0, first.stdout
    h = first.handoff
    assert h.outcome == "needs-input"
    assert h.question == "Which port should the server listen on, 8080 or 9090?"
    assert h.failure is None and h.files_changed == ["server.py"]
    # the work so far is kept on the task branch (never merged: the outcome is not succeeded)
    remote = daemon.ls_remote(repo)
    assert remote[f"refs/heads/{BRANCH}"] == h.commit
    assert daemon.repos.show(repo, h.commit, "server.py") == "PORT = None\n"
    assert [c["tool"] for c in first.tool_calls()] == ["write_file", "ask"]

    second = run_agent(task_input(daemon.url(repo), task="b1-api", attempt=2, question=h.question,
                                  answer="8080, like the other services"), script=ASKING)

    assert second.exit_code == 0, second.stdout
    h2 = second.handoff
    assert h2.outcome == "succeeded" and h2.question is None
    assert daemon.repos.show(repo, h2.commit, "server.py") == "PORT = 8080\n"
    assert h2.files_changed == ["server.py"]


def test_a_model_sees_the_ask_tool_and_the_answer_in_its_prompt(daemon, repo, run_agent, model):
    model.script(openai_tools(("ask", {"question": "Should bye() return 'bye' or 'goodbye'?"})))
    backend = {"name": "openai", "model": "m", "baseUrl": model.base_url + "/v1"}
    result = run_agent(task_input(daemon.url(repo), task="b1-t1", backend=backend), api_key="sk-test-000000000000")

    assert result.exit_code == 0, result.stdout
    assert result.handoff.outcome == "needs-input"
    assert result.handoff.question == "Should bye() return 'bye' or 'goodbye'?"
    offered = [t["function"]["name"] for t in model.requests[0].body["tools"]]
    assert "ask" in offered and offered[-1] == "finish"
    assert len(model.requests) == 1  # the attempt ended with the question
    assert "refs/heads/longshot/default/b1/b1-t1" not in daemon.ls_remote(repo)  # nothing was changed, nothing pushed

    model.script(openai_tools(("write_file", {"path": "bye.py", "content": "def bye():\n    return 'goodbye'\n"})),
                 openai_tools(("finish", {"summary": "Add bye()"})))
    again = run_agent(task_input(daemon.url(repo), task="b1-t1", attempt=2, backend=backend,
                                 question=result.handoff.question, answer="'goodbye', please"),
                      api_key="sk-test-000000000000")

    assert again.exit_code == 0 and again.handoff.outcome == "succeeded"
    prompt = model.requests[1].body["messages"][1]["content"]
    assert "Question: Should bye() return 'bye' or 'goodbye'?\nAnswer: 'goodbye', please" in prompt


def test_a_fixer_that_asks_pushes_nothing(daemon, repo, run_agent):
    daemon.repos.commit(repo, {"app.py": "def greet():\n    return 'hey'\n"}, branch=BRANCH, start="main")
    before = daemon.ls_remote(repo)
    script = {"roles": {"fixer": [{"write": {"path": "half.py", "content": "x\n"}}, {"ask": "Keep which greeting?"}]}}
    result = run_agent(task_input(daemon.url(repo), task="b1-fix", role="fixer", branch=BRANCH), script=script)

    assert result.exit_code == 0 and result.handoff.outcome == "needs-input"
    assert result.handoff.question == "Keep which greeting?" and result.handoff.commit is None
    assert daemon.ls_remote(repo) == before


# --- the iterative planner ----------------------------------------------------------------------------

PLANS = {"roles": {"planner": {"iteration": {
    1: [{"finish": {"summary": "models first", "tasks": [
        {"name": "models", "description": "Add models.py with a User class"}]}}],
    2: [{"run": {"command": "grep -q 'class User' models.py", "check": True}},
        {"finish": {"summary": "now the API", "tasks": [
            {"name": "api", "description": "Add api.py using models.User"}]}}],
    3: [{"finish": {"summary": "the request is met", "done": True}}],
}}}}


def planner_input(url, **fields):
    return task_input(url, task="b1-planner", role="planner", branch="longshot/default/b1/planner",
                      description="Build a user API", max_iterations=3, **fields)


def test_the_planner_plans_again_on_the_merged_work_and_then_says_done(daemon, repo, run_agent):
    one = run_agent(planner_input(daemon.url(repo)), script=PLANS)
    assert one.exit_code == 0 and [t.name for t in one.handoff.tasks] == ["models"] and not one.handoff.done

    # iteration 1's task merged: the target now has models.py, and the next planner reads it
    merged = daemon.repos.commit(repo, {"models.py": "class User:\n    pass\n"}, message="models")
    previous = [{"task": "models", "outcome": "merged", "summary": "Added User",
                 "files_changed": ["models.py"]}]
    two = run_agent(planner_input(daemon.url(repo), iteration=2, previous=previous), script=PLANS)

    assert two.exit_code == 0, two.stdout
    assert [t.name for t in two.handoff.tasks] == ["api"] and two.handoff.base_commit == merged
    assert two.tool_calls("run_command")[0]["ok"] is True

    three = run_agent(planner_input(daemon.url(repo), iteration=3, previous=[
        {"task": "api", "outcome": "merged", "summary": "Added the API", "files_changed": ["api.py"]}]),
        script=PLANS)
    assert three.exit_code == 0
    assert three.handoff.done is True and three.handoff.tasks == [] and three.handoff.outcome == "succeeded"


def test_a_later_iteration_cannot_reuse_an_earlier_tasks_name(daemon, repo, run_agent):
    # keyed by iteration: a plain planner entry plans the first iteration only and answers done after it
    script = {"roles": {"planner": {"iteration": {2: [
        {"finish": {"summary": "again", "tasks": [{"name": "models", "description": "redo"}]}},
        {"finish": {"summary": "again", "tasks": [{"name": "models-v2", "description": "redo"}]}},
    ]}}}}
    result = run_agent(planner_input(daemon.url(repo), iteration=2, previous=[
        {"task": "models", "outcome": "failed", "failure": {"class": "AgentError", "message": "tests failed"}}]),
        script=script)

    assert result.exit_code == 0
    assert "were used by an earlier iteration" in result.tool_calls("finish")[0]["result"]
    assert [t.name for t in result.handoff.tasks] == ["models-v2"]


def test_the_model_planner_sees_the_previous_iteration(daemon, repo, run_agent, model):
    model.script(openai_tools(("finish", {"summary": "met", "done": True})))
    backend = {"name": "openai", "model": "m", "baseUrl": model.base_url + "/v1"}
    previous = [{"task": "models", "outcome": "merged", "summary": "Added User", "files_changed": ["models.py"]},
                {"task": "api", "outcome": "failed", "failure": {"class": "Timeout", "message": "killed at 1800s"}}]
    result = run_agent(planner_input(daemon.url(repo), iteration=2, previous=previous, backend=backend),
                       api_key="sk-test-000000000000")

    assert result.exit_code == 0 and result.handoff.done is True
    prompt = model.requests[0].body["messages"][1]["content"]
    assert "planning iteration 2 of at most 3" in prompt
    assert "- models [merged]: Added User" in prompt and "failed (Timeout): killed at 1800s" in prompt
    finish = next(t for t in model.requests[0].body["tools"] if t["function"]["name"] == "finish")
    assert "done" in finish["function"]["parameters"]["properties"]


# --- the judge ------------------------------------------------------------------------------------------

@pytest.fixture
def candidates(daemon, repo):
    """Three candidate branches of task b1-api: two pass their gate, one failed it."""
    made = []
    for n, body in enumerate(["return 'bye'", "return 'good' + 'bye'", "raise NotImplementedError"], start=1):
        branch = f"longshot/default/b1/b1-api-c{n}"
        commit = daemon.repos.commit(repo, {"app.py": f"def greet():\n    return 'hi'\n\n\ndef bye():\n    {body}\n"},
                                     branch=branch, start="main", message=f"candidate {n}")
        made.append({"name": f"b1-api-c{n}", "branch": branch, "commit": commit,
                     "gate": "Failed" if n == 3 else "Passed", "gateSummary": f"gate of candidate {n}",
                     "model": f"model-{n}"})
    return made


def judge_input(url, candidates, **fields):
    return task_input(url, task="b1-api-judge", role="reviewer", branch="longshot/default/b1/b1-api-judge",
                      description="Add bye() returning 'bye'", candidates=candidates, **fields)


def test_the_judge_sees_every_diff_and_names_a_passed_winner(daemon, repo, candidates, run_agent, model):
    model.script(
        openai_tools(("finish", {"summary": "c3", "winner": "b1-api-c3", "reasons": ["shortest"]})),
        openai_tools(("finish", {"summary": "c1 wins", "winner": "b1-api-c1",
                                 "reasons": ["returns exactly 'bye'", "no needless concatenation"]})),
    )
    backend = {"name": "openai", "model": "m", "baseUrl": model.base_url + "/v1"}
    before = daemon.ls_remote(repo)
    result = run_agent(judge_input(daemon.url(repo), candidates, backend=backend), api_key="sk-test-000000000000")

    assert result.exit_code == 0, result.stdout
    h = result.handoff
    assert (h.winner, h.reasons) == ("b1-api-c1", ["returns exactly 'bye'", "no needless concatenation"])
    assert (h.branch, h.commit, h.files_changed) == (candidates[0]["branch"], candidates[0]["commit"], ["app.py"])
    assert h.verdict is None and h.outcome == "succeeded"
    prompt = model.requests[0].body["messages"][1]["content"]
    for n, body in enumerate(["return 'bye'", "return 'good' + 'bye'", "raise NotImplementedError"], start=1):
        assert f"## Candidate b1-api-c{n} (model model-{n})" in prompt and f"+    {body}" in prompt
    assert "quality gate: Failed (gate of candidate 3)" in prompt
    # a winner that failed its gate is refused and the model asked again
    retry = model.requests[1].body["messages"][-1]["content"]
    assert "b1-api-c3 failed its gate" in retry
    assert daemon.ls_remote(repo) == before  # a judge pushes nothing


def test_a_scripted_judge_and_a_missing_candidate_commit(daemon, repo, candidates, run_agent):
    script = {"roles": {"reviewer": {"judging": [
        {"finish": {"summary": "pick", "winner": "b1-api-c9", "reasons": ["x"]}},
        {"finish": {"summary": "pick", "winner": "b1-api-c2", "reasons": ["readable"]}}]}}}
    result = run_agent(judge_input(daemon.url(repo), candidates), script=script)
    assert result.exit_code == 0 and result.handoff.winner == "b1-api-c2"
    assert "winner must be one of the candidates: b1-api-c1, b1-api-c2" in result.tool_calls("finish")[0]["result"]

    gone = [dict(candidates[0], commit="1234567890abcdef1234567890abcdef12345678")]
    missing = run_agent(judge_input(daemon.url(repo), gone), script=script)
    assert missing.exit_code == 5
    assert "candidate b1-api-c1's commit 1234567890ab" in missing.handoff.failure.message


# --- retry and dependency context ----------------------------------------------------------------------

def test_a_retry_and_a_dependent_task_get_their_context_in_the_prompt(daemon, repo, run_agent, model):
    merged = daemon.repos.commit(repo, {"models.py": "class User:\n    pass\n"}, message="models")
    model.script(openai_tools(("finish", {"summary": "nothing yet"})))
    backend = {"name": "openai", "model": "m", "baseUrl": model.base_url + "/v1"}
    task = task_input(daemon.url(repo), task="b1-api", attempt=2, backend=backend,
                      previous_failure={"class": "AgentError", "message": "pytest: 2 failed, test_api_users"},
                      dependencies=[{"task": "models", "summary": "Added the User model",
                                     "files_changed": ["models.py"], "merged_commit": merged}])
    result = run_agent(task, api_key="sk-test-000000000000")

    assert result.exit_code == 0
    prompt = model.requests[0].body["messages"][1]["content"]
    assert f"- models (merged as {merged[:12]}): Added the User model" in prompt
    assert "previous attempt of this task failed (AgentError):\npytest: 2 failed, test_api_users" in prompt
    assert json.loads(result.termination)["attempt"] == 2


def test_the_handoff_of_needs_input_fits_the_protocol(daemon, repo, run_agent):
    result = run_agent(task_input(daemon.url(repo), task="b1-q"), script=[{"ask": "Which database?"}])
    parsed = handoff.parse_termination_message(result.termination)
    assert isinstance(parsed, handoff.Handoff) and parsed.outcome == "needs-input"
    assert result.lines[-1]["handoff"]["question"] == "Which database?"
    assert servers.git("ls-remote", daemon.url(repo)).count("refs/heads/") == 1  # only main
