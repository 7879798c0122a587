"""What each role does between the clone and the handoff.

Every role function takes an :class:`Attempt` (the checkout, the tools, the settings) and returns the
fields of a successful handoff; failures are raised as :class:`~longshot.agent.errors.AgentFailure`.
"""

from __future__ import annotations

import os
import random
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from longshot.agent import (
    delegation,
    errors,
    events,
    gates,
    gitops,
    hooks,
    mcptools,
    messages,
    prompts,
    results,
    sandbox,
    settings,
    skills,
    tools,
)
from longshot.agent import gateway as agent_gateway
from longshot.agent.backends import base
from longshot.api import handoff
from longshot.vcs import secretscan

CONFLICT_MARKERS = ("<<<<<<< ", ">>>>>>> ")


@dataclass
class Attempt:
    """Everything a role needs; built by the runner after the clone."""

    task: handoff.TaskInput
    paths: settings.Paths
    settings: settings.Settings
    events: events.Events
    git: gitops.Git
    api_key: str | None
    known_secrets: list[str]
    command_env: dict[str, str]
    sleep: Callable[[float], None] = time.sleep
    rand: Callable[[], float] = random.random
    usage: handoff.Usage = field(default_factory=handoff.Usage)
    base_commit: str | None = None
    gateway: agent_gateway.Gateway | None = None
    """Set in a Pod: model calls go through the gateway with the Pod's token as their key."""
    key_source: Callable[[], str | None] | None = None
    """The model key, read per request (the gateway token rotates); ``api_key`` when unset."""
    inbox: messages.Inbox | None = None
    """People's messages to this attempt (docs/agent.md, "Talking to a running agent"), when the backend takes
    them; its interrupt kills the sandbox's running command."""
    installed: skills.Installed | None = None
    """The build's skills and instructions written into the checkout (:func:`install_skills`), taken out again
    before the runner commits."""

    def sandbox(self) -> sandbox.Sandbox:
        return sandbox.Sandbox(self.paths.checkout, env=self.command_env, output_cap=self.settings.output_cap,
                               default_timeout=self.settings.command_timeout_seconds,
                               interrupt=self.inbox.interrupted if self.inbox is not None else None,
                               watching=self.inbox.watching if self.inbox is not None else None)


# --- backends ----------------------------------------------------------------------------------------

def make_backend(attempt: Attempt) -> base.Backend:
    spec = attempt.task.backend
    s = attempt.settings
    gw = attempt.gateway
    if spec.name == "scripted":
        from longshot.agent.backends import scripted

        return scripted.ScriptedBackend(attempt.paths.script)
    if spec.name == "command":
        from longshot.agent.backends import command

        return command.CommandBackend(template=spec.command or "", model=spec.model,
                                      timeout=s.agent_timeout_seconds, output_cap=s.output_cap,
                                      env_source=(lambda: gateway_env(gw)) if gw is not None else None)
    if not spec.model:
        raise errors.ConfigError(f"the {spec.name} backend needs a model (spec.agent.model)")
    from longshot.agent.backends import http

    policy = http.RetryPolicy(max_attempts=s.retry_max_attempts, base_delay=s.retry_base_seconds,
                              max_delay=s.retry_max_seconds)
    # through the gateway the build's baseUrl is the gateway's upstream, not ours
    base_url = gw.model_url(spec.name) if gw is not None else spec.base_url
    if spec.name == "openai":
        from longshot.agent.backends import openai

        return openai.OpenAIBackend(model=spec.model, base_url=base_url, policy=policy,
                                    timeout=s.http_timeout_seconds, rand=attempt.rand)
    from longshot.agent.backends import anthropic

    return anthropic.AnthropicBackend(model=spec.model, base_url=base_url, policy=policy,
                                      timeout=s.http_timeout_seconds, max_tokens=s.max_output_tokens,
                                      rand=attempt.rand)


def gateway_env(gw: agent_gateway.Gateway) -> dict[str, str]:
    """What a CLI agent (the command backend) needs to call models through the gateway: both SDK families'
    base URL and key variables, the key being this Pod's token (valid for this attempt only)."""
    token = gw.token()
    return {"OPENAI_BASE_URL": gw.model_url("openai"), "OPENAI_API_KEY": token,
            "ANTHROPIC_BASE_URL": gw.model_url("anthropic"), "ANTHROPIC_API_KEY": token,
            "LONGSHOT_API_KEY": token, "LONGSHOT_GATEWAY_URL": gw.url}


def run_backend(attempt: Attempt, *, validator: tools.Validator | None = None, template: str | None = None,
                **context: Any) -> tools.Finish:
    """Render the role's prompts (``template`` instead of the role's, e.g. ``judge``) and let the
    configured backend drive the tools to ``finish``."""
    task = attempt.task
    installed = install_skills(attempt)
    system, prompt = prompts.role_prompts(task.role, attempt.paths.prompts, template=template, task=task,
                                          persona=task.persona.prompt if task.persona is not None else None,
                                          **installed.prompt(), **context)
    backend = make_backend(attempt)
    gw = attempt.gateway
    toolbox = tools.Toolbox(attempt.sandbox(), attempt.events, task.role, validator=validator,
                            max_corrections=attempt.settings.max_corrections,
                            delegation=delegation.Client.from_gateway(gw) if gw is not None and task.delegate
                            else None, ask=task.ask,
                            mcp=mcptools.McpTools.connect(gw, task.mcp_servers, attempt.events)
                            if gw is not None and task.mcp_servers else None,
                            allow=task.persona.tools if task.persona is not None else None)
    session = base.Session(
        task=task, system_prompt=system, prompt=prompt, toolbox=toolbox, events=attempt.events,
        workdir=attempt.paths.checkout, scratch=attempt.paths.scratch, api_key=attempt.api_key,
        api_key_source=attempt.key_source, max_turns=task.backend.max_turns, sleep=attempt.sleep,
        inbox=attempt.inbox if base.MESSAGES.get(backend.name, "none") != "none" else None,
    )
    attempt.events.log("agent started", backend=backend.name, model=task.backend.model)
    for role, text in (("system", system), ("user", prompt)):  # what the model is told first (the ledger keeps it)
        attempt.events.emit("message", role=role, content=sandbox.truncate(text, 3500))
    try:
        return backend.run(session)
    finally:
        attempt.usage = session.usage


def install_skills(attempt: Attempt) -> skills.Installed:
    """Write the build's skills and instructions into the checkout (once per attempt, just before the model runs:
    after the role's checkout, merge and hooks, so they never stand in git's way)."""
    if attempt.installed is None:
        attempt.installed = skills.install(attempt.task, attempt.paths.checkout, skills_dir=attempt.paths.skills,
                                           instructions_dir=attempt.paths.instructions, ev=attempt.events)
    return attempt.installed


def hook(attempt: Attempt, name: hooks.HookName) -> None:
    """Run workspace hook ``name`` (``spec.agent.hooks``) in the checkout when the task sets it and the role runs
    it (:data:`longshot.agent.hooks.ROLE_HOOKS`); a failing hook fails the attempt."""
    hooks.run(name, attempt.task, cwd=attempt.paths.checkout, env=attempt.command_env, ev=attempt.events)


# --- git helpers -------------------------------------------------------------------------------------

def _remote_base(attempt: Attempt) -> str:
    base_commit = attempt.git.remote_branch(attempt.task.base_branch)
    if base_commit is None:
        raise errors.InfrastructureError(
            f"the base branch {attempt.task.base_branch!r} does not exist in the repository; "
            "check spec.repository.baseBranch"
        )
    attempt.base_commit = base_commit
    return base_commit


def _existing_branch(attempt: Attempt) -> str:
    head = attempt.git.remote_branch(attempt.task.branch)
    if head is None:
        raise errors.InfrastructureError(
            f"the branch {attempt.task.branch!r} to {attempt.task.role} does not exist in the repository")
    return head


def _bound_checkout(attempt: Attempt) -> str:
    """Check out what a reviewer or tester reads: the exact commit it is bound to (``TaskInput.commit``, the
    MergeJob's commit), detached, when it has one; else the branch's tip. The branch is fetched again when the
    clone lacks the commit; a commit the repository does not hold is refused (never a tip that moved since)."""
    task, git = attempt.task, attempt.git
    tip = _existing_branch(attempt)
    if not task.commit:
        git.checkout(task.branch, tip)
        return tip
    if git.rev(task.commit) is None:
        url = git.url or task.repository_url
        git.run("fetch", "--quiet", "--no-tags", "--", url,
                f"+refs/heads/{task.branch}:refs/remotes/origin/{task.branch}", check=False)
    head = git.rev(task.commit)
    if head is None:
        raise errors.InfrastructureError(
            f"commit {task.commit[:12]} to {task.role} is not in the repository (branch {task.branch!r} is at "
            f"{tip[:12]}): refusing to {task.role} another commit")
    git.run("checkout", "--quiet", "--detach", head, what=f"checkout of commit {head[:12]}")
    attempt.events.log("checked out the bound commit", commit=head, branch=task.branch, tip=tip)
    return head


STACKED_TRAILER = "Longshot-Stacked-On"
"""Trailer naming each dependency commit a stacked branch was built on, so a later attempt continuing the branch
still knows them after the dependencies merged (they are no longer in ``TaskInput.stack`` then)."""


def commit_message(task: handoff.TaskInput, summary: str, stacked_on: list[str] | None = None) -> str:
    first = next((line.strip() for line in summary.splitlines() if line.strip()), "")
    if not first:
        first = next((line.strip() for line in task.description.splitlines() if line.strip()), task.task)
    title = first if len(first) <= 72 else first[:69].rstrip() + "..."
    description = task.description if len(task.description) <= 2000 else task.description[:2000] + " [...]"
    body = "\n".join(textwrap.fill(p, 72) if p.strip() else "" for p in description.splitlines())
    trailers = (f"Longshot-Build: {task.build}\nLongshot-Task: {task.task}\n"
                f"Longshot-Attempt: {task.attempt}\nLongshot-Role: {task.role}")
    trailers += "".join(f"\n{STACKED_TRAILER}: {c}" for c in stacked_on or ())
    return f"{title}\n\n{body.strip()}\n\n{trailers}\n"


def scan_and_push(attempt: Attempt, since: str, head: str) -> None:
    """Refuse to push when the new commits add a credential; otherwise push the branch.

    The same scan as the merge queue's (:func:`longshot.vcs.secretscan.scan_range`): every commit of
    ``since..head``, binary and big files included, the allow marker not honoured on added lines (a line already
    on the base branch is not new), so what passes here is not refused later at the merge.
    """
    trusted = attempt.git.remote_branch(attempt.task.base_branch) or since
    try:
        findings = secretscan.scan_range(attempt.paths.checkout, since, head, known=attempt.known_secrets,
                                         trusted=trusted)
    except secretscan.ScanError as e:
        raise errors.InfrastructureError(f"the secret scan before the push could not read the commits: {e}"
                                         ) from None
    if findings:
        where = ", ".join(str(f) for f in findings[:10])
        more = f" and {len(findings) - 10} more" if len(findings) > 10 else ""
        raise errors.AgentError(
            f"refusing to push {attempt.task.branch}: the change adds what looks like a credential at {where}"
            f"{more}; remove it from every commit (a later commit deleting it does not help: rewrite the branch, "
            f"for example `git reset --soft {since[:12]}` and commit again) and use a Secret or an environment "
            "variable instead"
        )
    attempt.events.log("pushing", branch=attempt.task.branch, commit=head)
    attempt.git.push(f"{head}:refs/heads/{attempt.task.branch}", what=f"push of {attempt.task.branch}",
                     sleep=attempt.sleep)


def _commit_if_dirty(attempt: Attempt, summary: str, *, allow_empty: bool = False,
                     stacked_on: list[str] | None = None) -> str:
    git = attempt.git
    if attempt.installed is not None:  # the build's skills and instructions are never committed
        attempt.installed.withdraw(attempt.events)
    if git.dirty() or allow_empty:
        return git.commit_all(commit_message(attempt.task, summary, stacked_on), name=attempt.task.author_name,
                              email=attempt.task.author_email, allow_empty=allow_empty)
    return git.head()


def _result_fields(attempt: Attempt, *, start: str, head: str, base_commit: str, summary: str,
                   stacked_on: list[str] | None = None, own_since: str | None = None) -> dict[str, Any]:
    """The handoff fields of a branch at ``head``. Without a stack, files are those changed against the base.
    Stacked (``stacked_on``), they are the task's own changes only: against ``own_since`` (the stacked start of a
    fresh branch), else those of the branch's commits not reachable from the base or the stacked commits;
    ``base_commit`` is then the target's commit, not the start."""
    if not stacked_on:
        files = attempt.git.changed_files(f"{base_commit}...{head}")
    elif own_since is not None:
        files = attempt.git.changed_files(f"{own_since}...{head}")
    else:
        files = own_files(attempt.git, head, [base_commit, *stacked_on])
    outcome = "succeeded" if files else "empty"
    fields: dict[str, Any] = {
        "outcome": outcome,
        "branch": attempt.task.branch if outcome == "succeeded" else None,
        "commit": head if outcome == "succeeded" else None,
        "base_commit": start if not stacked_on else base_commit,
        "files_changed": files,
        "summary": summary,
    }
    if stacked_on and outcome == "succeeded":
        fields["stacked_on"] = list(stacked_on)
    return fields


# --- stacked dependencies ----------------------------------------------------------------------------

def is_ancestor(git: gitops.Git, ancestor: str, commit: str) -> bool:
    return git.run("merge-base", "--is-ancestor", ancestor, commit, check=False).returncode == 0


def own_files(git: gitops.Git, head: str, exclude: list[str]) -> list[str]:
    """Files changed by the commits of ``head`` that are not reachable from ``exclude`` (merge commits, which
    only bring other branches' changes together, left out)."""
    out = git.run("log", "--no-merges", "--no-renames", "--format=", "--name-only", head, "--not", *exclude,
                  "--").stdout
    return sorted({line for line in out.splitlines() if line})


def _fetch_stacked(attempt: Attempt, entry: handoff.StackEntry, index: int) -> None:
    """Make ``entry.commit`` present in the checkout: fetch its branch, then the commit itself."""
    git = attempt.git
    if git.rev(entry.commit) is not None:
        return
    url = git.url or attempt.task.repository_url
    git.run("fetch", "--quiet", "--no-tags", "--", url, f"+refs/heads/{entry.branch}:refs/longshot/stack/{index}",
            check=False)
    if git.rev(entry.commit) is None:
        git.run("fetch", "--quiet", "--no-tags", "--", url, entry.commit, check=False)
    if git.rev(entry.commit) is None:
        raise errors.InfrastructureError(
            f"dependency {entry.task}'s commit {entry.commit[:12]} (branch {entry.branch}) is not in the "
            "repository; the stacked start (spec.dependencies: stacked) needs it")


def stacked_start(attempt: Attempt) -> tuple[str, list[str]] | None:
    """Check out a fresh branch on the stacked dependencies (``TaskInput.stack``): the first one's commit, the
    others merged in (``git merge --no-edit``). ``(start, stacked_on)``, or None when there is no stack.

    Two dependencies that conflict with each other cannot both be stacked on: the merge is aborted and the attempt
    fails (AgentError) naming them and the files; a later attempt starts once one of them has merged (then the
    target has it and the stack is shorter)."""
    task = attempt.task
    if not task.stack:
        return None
    git = attempt.git
    for i, entry in enumerate(task.stack):
        _fetch_stacked(attempt, entry, i)
    first = task.stack[0]
    git.checkout(task.branch, first.commit)
    env = gitops.author_env(task.author_name, task.author_email)
    for entry in task.stack[1:]:
        if is_ancestor(git, entry.commit, "HEAD"):
            continue
        merge = git.run("merge", "--no-edit", "--quiet", "-m",
                        f"Stack {entry.task} ({entry.commit[:12]}) on {first.task}", entry.commit, check=False,
                        env=env)
        if merge.returncode != 0:
            conflicts = [p for p in git.run("diff", "--name-only", "--diff-filter=U").stdout.splitlines() if p]
            git.run("merge", "--abort", check=False)
            shown = ", ".join(conflicts[:10]) or "(unknown files)"
            raise errors.AgentError(
                f"the stacked dependencies conflict: {entry.task} ({entry.commit[:12]}) does not merge with "
                f"{', '.join(e.task for e in task.stack[:task.stack.index(entry)])} in {shown}; this attempt "
                "cannot start from both (spec.dependencies: stacked). A later attempt starts once one of them has "
                "merged, or use spec.dependencies: merged")
    head = git.head()
    attempt.events.log("stacked on dependencies", tasks=[e.task for e in task.stack],
                       commits=[e.commit for e in task.stack])
    return head, [e.commit for e in task.stack]


def stacked_on_branch(attempt: Attempt, base_commit: str, head: str) -> list[str]:
    """The dependency commits an existing branch (a later attempt continuing it) was stacked on: those of
    ``TaskInput.stack`` and those its own commits name in a ``Longshot-Stacked-On`` trailer, that the branch
    contains and the target does not."""
    git = attempt.git
    found = [e.commit for e in attempt.task.stack]
    log = git.run("log", "--format=%B", head, "--not", base_commit, "--").stdout
    prefix = f"{STACKED_TRAILER}: "
    found += [line[len(prefix):].strip() for line in log.splitlines() if line.startswith(prefix)]
    out: list[str] = []
    for c in found:
        if c in out or git.rev(c) is None:
            continue
        if is_ancestor(git, c, head) and not is_ancestor(git, c, base_commit):
            out.append(c)
    return out


# --- roles -------------------------------------------------------------------------------------------

def _needs_input(fields: dict[str, Any], finish: tools.Finish) -> dict[str, Any]:
    """The handoff fields of an attempt that ended with ``ask``: work so far stays on the branch (when any
    was pushed) and the question goes to a person."""
    fields.update(outcome="needs-input", question=finish.question, summary=finish.summary)
    return fields


def _start(attempt: Attempt, base_commit: str) -> tuple[str, list[str], str | None]:
    """Check out the branch to work on: the existing one (a later attempt), else the stacked dependencies
    (:func:`stacked_start`), else the base. ``(start, stacked_on, own_since)``; ``own_since`` is the stacked start
    of a fresh branch (the task's own changes are diffed against it)."""
    git = attempt.git
    existing = git.remote_branch(attempt.task.branch)
    if existing is not None:
        git.checkout(attempt.task.branch, existing)
        return existing, stacked_on_branch(attempt, base_commit, existing), None
    stacked = stacked_start(attempt)
    if stacked is not None:
        return stacked[0], stacked[1], stacked[0]
    git.checkout(attempt.task.branch, base_commit)
    return base_commit, [], None


def worker(attempt: Attempt) -> dict[str, Any]:
    git = attempt.git
    base_commit = _remote_base(attempt)
    start, stacked_on, own_since = _start(attempt, base_commit)
    attempt.base_commit = start if not stacked_on else base_commit
    hook(attempt, "afterClone")
    hook(attempt, "beforeRun")
    finish = run_backend(attempt)
    hook(attempt, "afterRun")
    summary = finish.summary if finish.question is None else f"Work in progress: {attempt.task.task}"
    head = _commit_if_dirty(attempt, summary, stacked_on=stacked_on)
    if head != start and git.changed_files(start, head):
        scan_and_push(attempt, start, head)
    fields = _result_fields(attempt, start=start, head=head, base_commit=base_commit, summary=finish.summary,
                            stacked_on=stacked_on, own_since=own_since)
    return fields if finish.question is None else _needs_input(fields, finish)


def planner(attempt: Attempt) -> dict[str, Any]:
    base_commit = _remote_base(attempt)
    attempt.git.checkout(f"longshot-plan-{attempt.task.attempt}", base_commit)
    hook(attempt, "afterClone")
    task = attempt.task
    taken = {p.task for p in task.previous}

    def validate(payload: dict[str, Any]) -> tuple[list[handoff.PlannedTask], bool]:
        return results.validate_planner_finish(payload, max_tasks=task.max_tasks, depth=task.depth,
                                               max_depth=task.max_depth, taken=taken,
                                               models={m.name for m in task.models},
                                               personas={p.name for p in task.personas})

    finish = run_backend(attempt, validator=validate)
    if finish.question is not None:
        return _needs_input({"base_commit": base_commit}, finish)
    planned, done = finish.validated
    outcome = "succeeded" if planned or done else "empty"
    return {"outcome": outcome, "tasks": planned, "done": done, "summary": finish.summary,
            "base_commit": base_commit}


def reviewer(attempt: Attempt) -> dict[str, Any]:
    if attempt.task.candidates:
        return judge(attempt)
    git = attempt.git
    base_commit = _remote_base(attempt)
    head = _bound_checkout(attempt)
    hook(attempt, "afterClone")
    diff = git.diff(f"{base_commit}...{head}")
    files = git.changed_files(f"{base_commit}...{head}")
    finish = run_backend(attempt, validator=results.validate_review,
                         diff=sandbox.truncate(diff, attempt.settings.max_diff_chars) or "(no changes)",
                         diff_files=files)
    verdict, reasons = finish.validated
    return {"outcome": "succeeded", "verdict": verdict, "reasons": reasons, "summary": finish.summary,
            "branch": attempt.task.branch, "commit": head, "base_commit": base_commit, "files_changed": files}


def judge(attempt: Attempt) -> dict[str, Any]:
    """A reviewer given ``candidates``: read every candidate's diff against the base and pick a winner."""
    git = attempt.git
    task = attempt.task
    base_commit = _remote_base(attempt)
    git.checkout(f"longshot-judge-{task.attempt}", base_commit)
    hook(attempt, "afterClone")
    budget = max(attempt.settings.max_diff_chars // max(len(task.candidates), 1), 2000)
    shown: list[dict[str, Any]] = []
    files_of: dict[str, list[str]] = {}
    for candidate in task.candidates:
        if git.rev(candidate.commit) is None:
            raise errors.InfrastructureError(
                f"candidate {candidate.name}'s commit {candidate.commit[:12]} (branch {candidate.branch}) is not in "
                "the repository")
        files = git.changed_files(f"{base_commit}...{candidate.commit}")
        files_of[candidate.name] = files
        diff = git.diff(f"{base_commit}...{candidate.commit}")
        shown.append({"candidate": candidate, "files": files,
                      "diff": sandbox.truncate(diff, budget) or "(no changes)"})

    summarize = task.reduction == "summarize"

    def validate(payload: dict[str, Any]) -> tuple[str, list[str]]:
        return results.validate_judgement(payload, task.candidates, summarize=summarize)

    finish = run_backend(attempt, validator=validate, template="judge", candidates=shown)
    winner, reasons = finish.validated
    chosen = next(c for c in task.candidates if c.name == winner)
    attempt.events.log("judged", winner=winner, candidates=len(task.candidates), reduction=task.reduction)
    return {"outcome": "succeeded", "winner": winner, "reasons": reasons, "summary": finish.summary,
            "branch": chosen.branch, "commit": chosen.commit, "base_commit": base_commit,
            "files_changed": files_of[winner]}


def tester(attempt: Attempt) -> dict[str, Any]:
    task = attempt.task
    if not task.test_command and not task.gate_steps:
        raise errors.ConfigError("the tester role needs a test command (spec.reconciler.command)")
    base_commit = _remote_base(attempt)
    head = _bound_checkout(attempt)
    hook(attempt, "afterClone")
    hook(attempt, "beforeGate")
    if task.gate_steps:
        return _gate_steps(attempt, head, base_commit)
    assert task.test_command is not None
    attempt.events.log("running tests", command=task.test_command)
    result = sandbox.run(["/bin/sh", "-c", task.test_command], cwd=attempt.paths.checkout,
                         env=attempt.command_env, timeout=attempt.settings.test_timeout_seconds,
                         output_cap=attempt.settings.output_cap)
    tail = attempt.events.redactor.text(sandbox.truncate(result.output, 3000))
    attempt.events.emit("tool_call", tool="test_command", ok=result.exit_code == 0, exit_code=result.exit_code,
                        result=sandbox.truncate(tail, 400))
    if result.timed_out:
        verdict, reasons = "failed", [f"`{task.test_command}` did not finish within "
                                      f"{attempt.settings.test_timeout_seconds:g}s", tail]
    elif result.exit_code == 0:
        verdict, reasons = "passed", [f"`{task.test_command}` exited with code 0", tail]
    else:
        verdict, reasons = "failed", [f"`{task.test_command}` exited with code {result.exit_code}", tail]
    return {"outcome": "succeeded", "verdict": verdict, "reasons": reasons, "branch": task.branch,
            "commit": head, "base_commit": base_commit,
            "summary": f"tests {verdict} on {task.branch} at {head[:12]}"}


def _gate_steps(attempt: Attempt, head: str, base_commit: str) -> dict[str, Any]:
    """The tester of a quality gate with named steps: run them in order, stop at the first that fails, and name
    it (with its output tail) in the reasons and the summary."""
    task = attempt.task

    def record(r: gates.StepResult) -> None:
        attempt.events.emit("tool_call", tool="gate_step", step=r.name, ok=r.passed, result=r.headline[:400])

    attempt.events.log("running the gate", steps=[s.name for s in task.gate_steps])
    results = gates.run_steps(task.gate_steps, cwd=attempt.paths.checkout, env=attempt.command_env,
                              default_timeout=attempt.settings.test_timeout_seconds,
                              output_cap=attempt.settings.output_cap, redact=attempt.events.redactor.text,
                              on_step=record)
    failed = next((r for r in results if not r.passed), None)
    verdict = "failed" if failed is not None else "passed"
    what = f"step {failed.name} failed" if failed is not None else f"{len(results)} steps passed"
    return {"outcome": "succeeded", "verdict": verdict, "reasons": gates.reasons_of(results), "branch": task.branch,
            "commit": head, "base_commit": base_commit,
            "summary": f"gate {verdict} on {task.branch} at {head[:12]}: {what}"}


def fixer(attempt: Attempt) -> dict[str, Any]:
    git = attempt.git
    task = attempt.task
    base_commit = _remote_base(attempt)
    existing = git.remote_branch(task.branch)
    stacked = stacked_start(attempt) if existing is None else None
    start = existing or (stacked[0] if stacked is not None else base_commit)
    stacked_on = stacked[1] if stacked is not None else []
    if stacked is None:
        git.checkout(task.branch, start)
    hook(attempt, "afterClone")
    merge = git.run("merge", "--no-ff", "--no-edit", "--quiet", base_commit, check=False,
                    env=gitops.author_env(task.author_name, task.author_email))
    conflicts = [p for p in git.run("diff", "--name-only", "--diff-filter=U").stdout.splitlines() if p]
    if merge.returncode != 0 and not conflicts:
        raise git.error(f"merge of {task.base_branch} into {task.branch}", merge.stderr or merge.stdout)
    if conflicts:
        attempt.events.log("merge conflicts", files=conflicts)

    def validate(payload: dict[str, Any]) -> None:
        left = [p for p in conflicts if _has_conflict_markers(attempt.paths.checkout / p)]
        if left:
            raise errors.ToolError(f"conflict markers are still in: {', '.join(left)}; resolve them")

    hook(attempt, "beforeRun")
    finish = run_backend(attempt, validator=validate, conflicts=conflicts)
    hook(attempt, "afterRun")
    if finish.question is not None:
        # nothing is pushed: a half-resolved merge must not land on the branch being fixed
        return _needs_input({"base_commit": base_commit}, finish)
    head = _commit_if_dirty(attempt, finish.summary or f"Merge {task.base_branch} into {task.branch}",
                            stacked_on=stacked_on)
    if head != start:
        scan_and_push(attempt, base_commit, head)
    fields = _result_fields(attempt, start=start, head=head, base_commit=base_commit, summary=finish.summary,
                            stacked_on=stacked_on)
    if head == start:
        fields.update(outcome="empty", branch=None, commit=None)
    return fields


def _has_conflict_markers(path: Path) -> bool:
    try:
        text = path.read_text(errors="replace")
    except (FileNotFoundError, IsADirectoryError):
        return False
    return any(line.startswith(CONFLICT_MARKERS) or line.rstrip() == "=======" for line in text.splitlines())


ROLES: dict[str, Callable[[Attempt], dict[str, Any]]] = {
    "planner": planner, "worker": worker, "reviewer": reviewer, "tester": tester, "fixer": fixer,
}


def command_env(workspace: Path, base: dict[str, str]) -> dict[str, str]:
    """Environment of model-run commands: the runner's own, minus git plumbing, with writable HOME/TMPDIR."""
    env = {k: v for k, v in base.items() if not k.startswith(("GIT_", "LONGSHOT_GIT_ASKPASS"))}
    home = env.get("HOME")
    if not home or not os.access(home, os.W_OK):
        env["HOME"] = str(workspace / ".home")
        Path(env["HOME"]).mkdir(parents=True, exist_ok=True)
    return env
