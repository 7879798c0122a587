"""Best-of-N with a judge: ``N`` candidates of one task run in parallel, each is gated, a judge picks one. Pure.

A task fans out when its ``spec.fanout`` (or, for a planned worker, the build's ``spec.fanout``) asks for two or
more candidates (:func:`effective`). Its dependencies ready, the task decider starts a *round*
(``core.tasks.StartFanout``): the shell creates the round's candidate AgentTasks (:func:`candidate_manifests`),
owned by the task, with deterministic names (``<task>-c<i>``; round ``r`` > 1: ``<task>-r<r>-c<i>``), each on
its own branch ``longshot/<namespace>/<build>/<candidate>`` and with model ``models[(i - 1) % len(models)]``.
Candidates are ordinary agent tasks for the scheduler; they never get a MergeJob themselves.

:func:`decide` then looks at a :class:`Snapshot` (the candidates, their gates, the judge) and says what is next:

* a candidate that succeeded with a commit is **gated** as it would land on the target alone
  (:class:`GateCandidate`: the shell applies it on the target tip with the build's strategy and runs the quality
  gate on that commit; a conflict fails the gate); without a gate command it passes at once;
* a candidate that failed, was cancelled, changed nothing or failed its gate is **out**, with its reason;
* when every candidate is decided: none passed -> :class:`Finish` without a winner (the task fails, naming each
  reason); one passed -> it wins without a judge; more -> a **judge** (a reviewer task ``<task>-judge`` whose
  task input has the passing candidates) picks one (:class:`StartJudge`), or with ``judge: compare`` no agent
  does: :func:`compare` ranks them on measured cost, tokens and files changed. With ``judge: summarize`` the judge
  is shown every candidate that produced a commit (gate failed or passed) as soon as two did and one passed, and
  its summary, a comparison of them all, is recorded beside its pick. The judge's answer is untrusted: the
  winner is the passing candidate whose commit and branch the judge's handoff names, else the task fails.

The task's ``status.fanout`` (:func:`status`) records every candidate (model, branch, commit, gate, reason), the
judge task, the winner and the reasons, and is the record of gate results a restart reads back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final, Literal

from longshot.api import keys
from longshot.core import manifests, names

FANOUT_LABEL: Final = keys.FANOUT_OF
"""On candidates, their gate tasks and the judge: the task they belong to."""
PURPOSE_LABEL: Final = keys.PURPOSE
CANDIDATE: Final = "candidate"
CANDIDATE_GATE: Final = "candidate-gate"
JUDGE: Final = "judge"
MODEL_ANNOTATION: Final = keys.MODEL
"""On a candidate: the model it runs with (overrides the build's ``spec.agent.model``)."""
BACKEND_ANNOTATION: Final = keys.BACKEND
"""On a candidate: the backend it runs with (overrides the task's and the build's). An annotation, as the model
is, and not the candidate's ``spec.agent.backend``: ``command`` cannot be set per task through the API (its
template is the build's ``spec.agent.command``), and ``openai``/``anthropic`` there would need a model too."""
CANDIDATE_ANNOTATION: Final = keys.CANDIDATE
"""On a candidate's gate task: the candidate it gates."""
MAX_REASON: Final = 4096
MAX_SUMMARY: Final = 16384
"""``status.fanout.summary`` (the ``summarize`` judge's comparison) is cut to this many characters."""
SUMMARIZE: Final = "summarize"

Gate = Literal["Pending", "Passed", "Failed"]


@dataclass(frozen=True)
class Settings:
    """The effective ``fanout`` of a task."""

    count: int
    models: tuple[str, ...] = ()
    backends: tuple[str, ...] = ()
    judge: str = "reviewer"
    """``reviewer`` (a judge agent picks), ``compare`` (the least costly passing candidate wins, no agent) or
    ``summarize`` (a judge agent compares every candidate that produced a commit in a summary, and picks)."""


def effective(task_fanout: Mapping[str, Any] | None, build_fanout: Mapping[str, Any] | None, *, role: str,
              planned: bool) -> Settings | None:
    """The fan-out of a task (wire-form ``spec.fanout`` of the task and of the build), or None when it runs as
    one attempt. The task's own wins; the build's applies to planned worker tasks only; ``count`` 1 is none."""
    chosen = task_fanout if task_fanout else (build_fanout if role == "worker" and planned else None)
    if not chosen or role not in ("worker", "fixer"):
        return None
    count = int(chosen.get("count", 1) or 1)
    if count < 2:
        return None
    return Settings(count, tuple(str(m) for m in chosen.get("models") or ()),
                    tuple(str(b) for b in chosen.get("backends") or ()), str(chosen.get("judge") or "reviewer"))


def candidate_name(task: str, round_: int, index: int) -> str:
    """The AgentTask name of candidate ``index`` (from 1) of round ``round_`` (from 1)."""
    return names.child_name(task, f"c{index}" if round_ <= 1 else f"r{round_}-c{index}")


def judge_name(task: str, round_: int) -> str:
    return names.child_name(task, "judge" if round_ <= 1 else f"r{round_}-judge")


def gate_name(candidate: str) -> str:
    return names.child_name(candidate, "gate")


def round_label(task: str, round_: int) -> str:
    """What a round's attempt record says in place of a Pod name (the candidates hold the Pods)."""
    return names.fit(f"{task}-c*" if round_ <= 1 else f"{task}-r{round_}-c*")


def model_for(settings: Settings, index: int, default: str | None) -> str | None:
    """The model of candidate ``index`` (from 1): the models in turn, else the build's."""
    if not settings.models:
        return default
    return settings.models[(index - 1) % len(settings.models)]


def backend_for(settings: Settings, index: int) -> str | None:
    """The backend of candidate ``index`` (from 1): the backends in turn, else None (the task's or the build's)."""
    if not settings.backends:
        return None
    return settings.backends[(index - 1) % len(settings.backends)]


def candidate_branch(namespace: str, build: str, candidate: str) -> str:
    """A candidate's own branch: ``longshot/<namespace>/<build>/<candidate>`` (``names.task_branch``)."""
    return names.task_branch(namespace, build, candidate)


def candidate_manifests(task: Mapping[str, Any], build_name: str, round_: int, settings: Settings,
                        default_model: str | None, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The candidate AgentTasks of ``task`` (an AgentTask in wire form) for round ``round_``: same work, no
    dependencies (the task's are ready), their own branch, owned by the task. ``labels`` are the build's task
    labels for the role (``plan.task_labels``)."""
    meta, spec = task["metadata"], task.get("spec") or {}
    parent = meta["name"]
    out: list[dict[str, Any]] = []
    for i in range(1, settings.count + 1):
        name = candidate_name(parent, round_, i)
        model = model_for(settings, i, default_model)
        extra = {key: spec[key] for key in ("retryPolicy", "resources", "timeoutSeconds", "agent")
                 if spec.get(key) is not None}
        backend = backend_for(settings, i)
        annotations = {MODEL_ANNOTATION: model} if model else {}
        if backend:
            annotations[BACKEND_ANNOTATION] = backend
        out.append(manifests.agent_task(
            name=name, namespace=meta.get("namespace", ""), build=build_name, role=spec.get("role", "worker"),
            description=spec.get("description", ""), priority=spec.get("priority", 5),
            owner=manifests.owned_by_task(parent, meta.get("uid", "")),
            labels={**labels, PURPOSE_LABEL: CANDIDATE, FANOUT_LABEL: names.fit(parent)},
            annotations=annotations, scope=list(spec.get("scope") or []),
            depth=spec.get("depth", 0), branch=candidate_branch(meta.get("namespace", ""), build_name, name),
            **extra))
    return out


def judge_manifest(task: Mapping[str, Any], build_name: str, round_: int, candidates: Sequence[str],
                   labels: Mapping[str, str], mode: str = "reviewer") -> dict[str, Any]:
    """The judge: a reviewer task owned by ``task``; its task input lists the candidates it is shown (the passing
    ones; with ``mode`` ``summarize`` those that failed their gate too, and the annotation says so)."""
    meta, spec = task["metadata"], task.get("spec") or {}
    parent = meta["name"]
    ask = ("Compare every candidate in a summary that names each, pick the one that should be merged, and say why."
           if mode == SUMMARIZE else "Pick the one that should be merged, and say why.")
    description = (f"Judge the candidates of task {parent} ({', '.join(candidates)}): each did this work:\n\n"
                   f"{spec.get('description', '')}\n\n{ask}")
    return manifests.agent_task(
        name=judge_name(parent, round_), namespace=meta.get("namespace", ""), build=build_name, role="reviewer",
        description=description[:100_000], priority=int(spec.get("priority", 5)) + 1,
        owner=manifests.owned_by_task(parent, meta.get("uid", "")),
        labels={**labels, PURPOSE_LABEL: JUDGE, FANOUT_LABEL: names.fit(parent)},
        annotations={keys.REDUCTION: SUMMARIZE} if mode == SUMMARIZE else None,
        branch=candidate_branch(meta.get("namespace", ""), build_name, parent))


# --- the decision ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateView:
    """One candidate, as the decision needs it."""

    name: str
    phase: str
    """The candidate AgentTask's phase, or ``Missing`` when it does not exist (yet)."""
    model: str | None = None
    branch: str | None = None
    commit: str | None = None
    backend: str | None = None
    """The backend it runs with when the fan-out names one (``fanout.backends``)."""
    tokens: int = 0
    """Tokens of its attempts (each the larger of what the gateway metered and what the handoff said)."""
    cost: float = 0.0
    """Cost of its attempts, likewise."""
    files: int = 0
    """Files its handoff says the commit changed."""
    handoff: Mapping[str, Any] | None = None
    """Its ``status.handoff`` (wire form) when it succeeded."""
    failure: str = ""
    """Why it failed, when it did."""
    gate: Gate = "Pending"
    """The gate result: recorded in ``status.fanout`` (a conflict, no gate command) or read from its gate task."""
    gate_reason: str = ""
    gate_started: bool = False
    """Its gate task exists (or its preparation was recorded)."""


@dataclass(frozen=True)
class JudgeView:
    name: str
    phase: str
    commit: str | None = None
    """The commit the judge's handoff names (its winner's)."""
    branch: str | None = None
    reasons: tuple[str, ...] = ()
    failure: str = ""
    summary: str = ""
    """Its handoff's summary (with ``judge: summarize``, its comparison of the candidates)."""


@dataclass(frozen=True)
class Snapshot:
    task: str
    round: int
    candidates: tuple[CandidateView, ...]
    judge: JudgeView | None = None
    gate_enabled: bool = True
    """The build has a quality-gate command; without one every candidate that produced a commit passes."""
    running: bool = True
    """The task is still running this round (False: it was cancelled or ended; running candidates stop)."""
    judge_mode: str = "reviewer"
    """``reviewer``: a judge agent picks among two or more passing candidates; ``compare``: :func:`compare`;
    ``summarize``: a judge agent compares every candidate that produced a commit, and picks."""


@dataclass(frozen=True)
class CreateCandidates:
    """Some candidates of the round do not exist: create them (AlreadyExists is fine)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class GateCandidate:
    """Apply the candidate on the target tip and run the quality gate on it (gate task ``gate_name``)."""

    name: str


@dataclass(frozen=True)
class StartJudge:
    name: str
    candidates: tuple[str, ...]


@dataclass(frozen=True)
class CancelTasks:
    """Cancel these candidates or judge (the task no longer runs)."""

    names: tuple[str, ...]


@dataclass(frozen=True)
class Finish:
    """The round is decided: ``winner`` (a candidate's name) or None; ``reasons`` for ``status.fanout``."""

    winner: str | None
    reasons: tuple[str, ...]
    message: str
    summary: str = ""
    """The ``summarize`` judge's comparison (``status.fanout.summary``)."""


Effect = CreateCandidates | GateCandidate | StartJudge | CancelTasks | Finish
TERMINAL: Final = frozenset({"Succeeded", "Failed", "Cancelled"})


def _out_reason(c: CandidateView) -> str | None:
    """Why the candidate is out, or None while it may still pass."""
    if c.phase in ("Failed", "Cancelled"):
        return f"{c.phase.lower()}: {c.failure}" if c.failure else c.phase.lower()
    if c.phase == "Succeeded" and not c.commit:
        return "it changed nothing"
    if c.gate == "Failed":
        return f"failed its gate: {c.gate_reason}" if c.gate_reason else "failed its gate"
    return None


def decide(s: Snapshot) -> list[Effect]:
    """What to do next for the round (see the module doc)."""
    if not s.running:
        live = [c.name for c in s.candidates if c.phase not in TERMINAL and c.phase != "Missing"]
        if s.judge is not None and s.judge.phase not in TERMINAL:
            live.append(s.judge.name)
        return [CancelTasks(tuple(live))] if live else []
    effects: list[Effect] = []
    missing = tuple(c.name for c in s.candidates if c.phase == "Missing")
    if missing:
        return [CreateCandidates(missing)]
    undecided = False
    for c in s.candidates:
        if _out_reason(c) is not None:
            continue
        if c.phase != "Succeeded":
            undecided = True
        elif c.gate == "Pending":
            undecided = True
            if not c.gate_started:
                effects.append(GateCandidate(c.name))
    if undecided:
        return effects
    passing = [c for c in s.candidates if c.gate == "Passed" and _out_reason(c) is None]
    if not passing:
        reasons = tuple(f"{c.name}: {_out_reason(c)}"[:MAX_REASON] for c in s.candidates)
        return [Finish(None, reasons, "no candidate passed: " + "; ".join(reasons)[:3000])]
    shown = judged_candidates(s, passing)
    if len(shown) == 1:
        only = passing[0]
        why = "the only candidate that passed its gate"
        return [Finish(only.name, (why,), f"{only.name} wins: {why}")]
    if s.judge_mode == "compare":
        return [compare(passing)]
    judge = s.judge
    if judge is None:
        return [StartJudge(judge_name(s.task, s.round), tuple(c.name for c in shown))]
    if judge.phase in ("Failed", "Cancelled"):
        why = f"the judge {judge.name} {judge.phase.lower()}" + (f": {judge.failure}" if judge.failure else "")
        return [Finish(None, (why,), why)]
    if judge.phase != "Succeeded":
        return []
    chosen = [c for c in passing if judge.commit and c.commit == judge.commit
              and (judge.branch is None or c.branch == judge.branch)]
    if len(chosen) != 1:
        why = (f"the judge {judge.name} named commit {str(judge.commit)[:12]} on {judge.branch}, which is not a "
               "candidate that passed its gate")
        return [Finish(None, (why,), why)]
    reasons = tuple(r[:MAX_REASON] for r in judge.reasons[:50]) or ("(the judge gave no reasons)",)
    summary = cut_summary(judge.summary) if s.judge_mode == SUMMARIZE else ""
    return [Finish(chosen[0].name, reasons, f"the judge picked {chosen[0].name}: " + "; ".join(reasons)[:2000],
                   summary)]


def judged_candidates(s: Snapshot, passing: Sequence[CandidateView]) -> list[CandidateView]:
    """The candidates the judge is shown: the passing ones; with ``judge: summarize`` every candidate that produced
    a commit, passing first, once two or more did (one alone has nothing to be compared with)."""
    if s.judge_mode != SUMMARIZE:
        return list(passing)
    failed = [c for c in s.candidates if c.phase == "Succeeded" and c.commit and c.gate == "Failed"]
    committed = [*passing, *failed]
    return committed if len(committed) >= 2 else list(passing)


def cut_summary(text: str) -> str:
    """A summary for ``status.fanout.summary``: at most :data:`MAX_SUMMARY` characters, its cut marked."""
    text = text.strip()
    if len(text) <= MAX_SUMMARY:
        return text
    mark = "\n[... cut at 16 KiB; the judge's ledger entry has it all]"
    return text[:MAX_SUMMARY - len(mark)].rstrip() + mark


def compare(passing: Sequence[CandidateView]) -> Finish:
    """The ``compare`` reduction: no judge agent; the passing candidates are ranked on what was measured (cost,
    then tokens, then files changed, then candidate order) and the first wins. The reasons are the ranking, one
    line per candidate. Every candidate passed the same gate as it would land, so the cheaper one is taken."""
    ranked = sorted(enumerate(passing), key=lambda ic: (round(ic[1].cost, 6), ic[1].tokens, ic[1].files, ic[0]))
    lines = []
    for n, (_, c) in enumerate(ranked, start=1):
        ran = ", ".join(x for x in (c.backend, c.model) if x)
        lines.append(f"{n}. {c.name}{f' ({ran})' if ran else ''}: passed its gate; cost {c.cost:.4f}, "
                     f"{c.tokens} tokens, {c.files} file(s) changed")
    winner = ranked[0][1]
    why = ("compared on cost, then tokens, then files changed (judge: compare)", *lines)
    return Finish(winner.name, tuple(r[:MAX_REASON] for r in why[:50]),
                  f"{winner.name} wins the comparison of {len(passing)} passing candidates: least cost, tokens "
                  "and files changed")


def with_gate(s: Snapshot, name: str, gate: Gate, reason: str) -> Snapshot:
    """``s`` with candidate ``name``'s gate recorded (after the shell prepared it)."""
    return replace(s, candidates=tuple(replace(c, gate=gate, gate_reason=reason[:MAX_REASON], gate_started=True)
                                       if c.name == name else c for c in s.candidates))


@dataclass(frozen=True)
class Record:
    """What ``status.fanout`` holds besides the candidates."""

    judge_task: str | None = None
    winner: str | None = None
    reasons: tuple[str, ...] = field(default_factory=tuple)
    summary: str = ""


def status(s: Snapshot, record: Record) -> dict[str, Any]:
    """``status.fanout`` in wire form."""
    cands = []
    for c in s.candidates:
        out = _out_reason(c)
        entry: dict[str, Any] = {"name": c.name, "gate": c.gate}
        if c.model:
            entry["model"] = c.model
        if c.backend:
            entry["backend"] = c.backend
        if c.branch:
            entry["branch"] = c.branch
        if c.commit:
            entry["commit"] = c.commit
        reason = out or c.gate_reason
        if reason:
            entry["reason"] = reason[:MAX_REASON]
        cands.append(entry)
    wire: dict[str, Any] = {"candidates": cands[:10], "reasons": [r[:MAX_REASON] for r in record.reasons[:50]]}
    if record.judge_task:
        wire["judgeTask"] = record.judge_task
    if record.winner:
        wire["winner"] = record.winner
    if record.summary:
        wire["summary"] = cut_summary(record.summary)
    return wire
