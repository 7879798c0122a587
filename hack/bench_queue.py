#!/usr/bin/env python3
"""Benchmark: the speculative merge queue against the serial one, on real git repositories.

    python hack/bench_queue.py [--candidates 64] [--culprit-every 16] [--gate-seconds 2] [--window 8]
                               [--depth 2] [--max-probes 0] [--seed 7] [--gate tester|ci|both]

The REAL queue code decides and does the git work: ``core.mergequeue`` (which batch, which prefixes to gate,
bisection, what to land, the window) and ``vcs.speculate`` (the speculative commits built with the rebase strategy
in the operator's bare workspace, published to queue branches, landed with a compare-and-swap push). What stands
in for the cluster: the MergeJobs are kept in memory by a small driver that applies the queue's effects the way
``controllers/queue/`` does, and each gate (a tester Pod) is a local process, run in parallel, that takes
the published queue branch's tree out of the server repository and runs ``sleep <gate-seconds> && sh test.sh``.

The repository: a base commit with ``test.sh`` (fails when any file under ``tasks/`` says ``BROKEN``) and N
candidate branches that each add their own file; one in ``--culprit-every`` (one per group, at a random place
in it) writes ``BROKEN``: a planted culprit. The serial queue (``window 1``, one batch at a time) and the
speculative one (``--window``, ``--depth`` batches at once: stacked on the one under test) run in the same
invocation, each on its own copy of the repository.

With ``--gate ci`` the gate is the team's CI, as ``spec.merge.gate.by: ci`` makes it (issue 52 item 5): the forge
stand-in (tests/integration/forge_server.py, GitHub's API) and the CI stand-in (tests/ci_standin.py, a process that
runs ``sleep <gate-seconds> && sh test.sh`` on every pushed queue branch, runs in parallel, and posts each verdict as
a GitHub check run). The driver asks for a prefix, then reads its check runs through the operator's forge client
(``runtime.forge``'s ``checks``, every 0.2 s) and decides with ``core.cigate.verdict``, as the batch step does; at the
end every GitHub exchange is checked against GitHub's published description. ``--gate both`` (the default) runs the
tester-gated pair and then the CI-gated pair; each pair prints its own summary line.

Afterwards every commit on the target's first-parent history since the base (every position the target moved to
is one of them) is tested again, without the sleep; a failing one is a red target commit. The last line reads
``speculative_vs_serial=<throughput ratio> red_target_commits=<n> culprits_evicted=<found>/<planted>
innocent_evicted=<n>``. Target: ratio >= 4 with window 8, 0 red, every culprit evicted and no innocent one.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import queue
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from longshot.core import cigate  # noqa: E402
from longshot.core import mergequeue as q  # noqa: E402
from longshot.vcs import speculate  # noqa: E402
from longshot.vcs import workspace as vws  # noqa: E402

BUILD = "bench"
NAMESPACE = "bench"
TARGET = "main"
TEST_SH = """#!/bin/sh
# the project's tests: every task file must be healthy
if grep -rl BROKEN tasks/ 2>/dev/null; then
  echo "FAILED: the files above are broken" >&2
  exit 1
fi
echo "all tests passed"
"""
ENV = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | {
    "GIT_AUTHOR_NAME": "Agent", "GIT_AUTHOR_EMAIL": "agent@example.com",
    "GIT_COMMITTER_NAME": "Agent", "GIT_COMMITTER_EMAIL": "agent@example.com",
    "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": os.devnull, "LC_ALL": "C",
}


def log(msg: str) -> None:
    print(f"[bench-queue] {msg}", flush=True)


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> bytes:
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=ENV, input=input,
                          check=True, capture_output=True).stdout


# --- the repository ------------------------------------------------------------------------------------


def candidate_name(i: int) -> str:
    return f"c{i:03d}"


def plant_culprits(n: int, every: int, rng: random.Random) -> set[str]:
    """One culprit in each full group of ``every`` candidates, at a random place in the group."""
    return {candidate_name(g * every + rng.randrange(every)) for g in range(n // every)} if every > 0 else set()


def seed(bare: Path, n: int, culprits: set[str]) -> None:
    """The base commit (``test.sh``) and one branch per candidate adding ``tasks/<name>.txt`` (fast-import)."""
    git("init", "--quiet", "--bare", str(bare))
    out: list[bytes] = []

    def data(text: str) -> None:
        raw = text.encode()
        out.append(b"data %d\n%s\n" % (len(raw), raw))

    out.append(b"commit refs/heads/main\nmark :1\ncommitter Bench <bench@example.com> 1700000000 +0000\n")
    data("Base: the tests")
    out.append(b"M 755 inline test.sh\n")
    data(TEST_SH)
    out.append(b"M 644 inline tasks/.keep\n")
    data("")
    for i in range(n):
        name = candidate_name(i)
        out.append(f"commit refs/heads/longshot/{NAMESPACE}/{BUILD}/{name}\nmark :{i + 2}\n"
                   f"committer Agent <agent@example.com> {1700000100 + i} +0000\n".encode())
        data(f"Task {name}: add tasks/{name}.txt")
        out.append(b"from :1\n")
        out.append(f"M 644 inline tasks/{name}.txt\n".encode())
        data("BROKEN\n" if name in culprits else f"result of task {name}\n")
    git("fast-import", "--quiet", cwd=bare, input=b"".join(out))


def run_tests(bare: Path, commit: str, work: Path, sleep: float = 0.0) -> tuple[bool, str]:
    """The gate: the commit's tree taken out of the server repository, then ``sleep && sh test.sh``."""
    work.mkdir(parents=True, exist_ok=True)
    script = (f"git --git-dir={bare} archive {commit} | tar -x -C {work} && cd {work} && "
              + (f"sleep {sleep} && " if sleep > 0 else "") + "sh ./test.sh")
    proc = subprocess.run(["sh", "-c", script], env=ENV, capture_output=True, text=True, check=False)
    shutil.rmtree(work, ignore_errors=True)
    return proc.returncode == 0, (proc.stdout + proc.stderr)[-2000:]


# --- gates as local processes --------------------------------------------------------------------------


@dataclass
class Gate:
    batch: str
    position: int
    commit: str
    proc: subprocess.Popen[str] | None = None
    cancelled: bool = False


class Gates:
    """Tester Pods standing in: one local process per gated prefix, in parallel; results arrive on a queue."""

    def __init__(self, bare: Path, scratch: Path, seconds: float) -> None:
        self.bare, self.scratch, self.seconds = bare, scratch, seconds
        self.results: queue.Queue[tuple[Gate, bool, str]] = queue.Queue()
        self.running: dict[tuple[str, int], Gate] = {}
        self.started = 0
        self.answered = 0
        self._lock = threading.Lock()

    def start(self, batch: str, position: int, commit: str) -> None:
        gate = Gate(batch, position, commit)
        self.started += 1
        work = self.scratch / f"gate-{self.started}"
        work.mkdir(parents=True)
        script = (f"git --git-dir={self.bare} archive {commit} | tar -x -C {work} && cd {work} && "
                  f"sleep {self.seconds} && sh ./test.sh")
        with self._lock:
            gate.proc = subprocess.Popen(["sh", "-c", script], env=ENV, stdout=subprocess.PIPE,
                                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
            self.running[(batch, position)] = gate
        threading.Thread(target=self._wait, args=(gate, work), daemon=True).start()

    def _wait(self, gate: Gate, work: Path) -> None:
        assert gate.proc is not None
        output, _ = gate.proc.communicate()
        shutil.rmtree(work, ignore_errors=True)
        self.results.put((gate, gate.proc.returncode == 0, output[-2000:]))

    def cancel(self, batch: str) -> None:
        with self._lock:
            for (b, _), gate in list(self.running.items()):
                if b == batch and gate.proc is not None and gate.proc.poll() is None:
                    gate.cancelled = True
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(gate.proc.pid, 9)

    def next(self, block: bool) -> tuple[Gate, bool, str] | None:
        """A verdict (every started gate gives one, a cancelled one too), or None when none is waiting (or,
        blocking, when no gate is outstanding)."""
        if self.answered >= self.started:
            return None
        try:
            got = self.results.get(block=block)
        except queue.Empty:
            return None
        self.answered += 1
        return got


class CiGates:
    """The team's CI as the gate: the CI stand-in runs on every pushed queue branch of the repository and posts its
    verdict as a check run on the forge stand-in; a started gate is a prefix whose check runs the driver reads
    (``runtime.forge``) and decides on (``core.cigate``). Same interface as :class:`Gates`."""

    CHECK = "ci/test"
    TOKEN = "bench-forge-token"
    TIMEOUT = 300.0
    POLL = 0.2

    def __init__(self, forge: object, project: str) -> None:
        from longshot.api.buildrequest import PullRequestSettings
        from longshot.runtime import forge as rforge

        settings = PullRequestSettings.model_validate({"project": project, "tokenSecretRef": {"name": "t"},
                                                       "apiUrl": forge.github_url})  # type: ignore[attr-defined]
        self.client = rforge.make_forge(settings, self.TOKEN, timeout=10.0)
        self.waiting: dict[tuple[str, int], tuple[Gate, float]] = {}
        self.ready: list[tuple[Gate, bool, str]] = []
        self.read_at: dict[tuple[str, int], float] = {}
        self.started = 0
        self.answered = 0
        self.reads = 0

    def start(self, batch: str, position: int, commit: str) -> None:
        self.started += 1
        self.waiting[(batch, position)] = (Gate(batch, position, commit), time.monotonic())

    def cancel(self, batch: str) -> None:
        for (b, _), (gate, _) in self.waiting.items():
            if b == batch:
                gate.cancelled = True  # a CI run cannot be called back: its verdict is ignored

    def next(self, block: bool) -> tuple[Gate, bool, str] | None:
        """A verdict: from the last sweep's, else one sweep reading each waiting prefix's checks (at most every
        :data:`POLL` seconds each, as ``spec.merge.gate.pollSeconds`` spaces the operator's reads), repeated while
        ``block``."""
        while self.ready or self.waiting:
            if self.ready:
                self.answered += 1
                return self.ready.pop(0)
            now = time.monotonic()
            for key, (gate, since) in list(self.waiting.items()):
                if now - self.read_at.get(key, 0.0) < self.POLL:
                    continue
                self.read_at[key] = now
                self.reads += 1
                v = cigate.verdict((self.CHECK,), self.client.checks(gate.commit, (self.CHECK,)), now - since,
                                   self.TIMEOUT)
                if v.state == "broken":
                    raise RuntimeError(f"the CI gate broke: {v.message}")
                if v.state != "pending":
                    del self.waiting[key]
                    self.ready.append((gate, v.state == "passed", v.message))
            if self.ready:
                continue
            if not block:
                return None
            time.sleep(0.05)
        return None


# --- the queue driver ----------------------------------------------------------------------------------


@dataclass
class Run:
    """One queue mode's run over its own copy of the repository."""

    window: int
    bare: Path
    work: Path
    gate_seconds: float
    max_probes: int = 0
    depth: int = q.DEFAULT_DEPTH
    ci: CiGates | None = None
    """The CI as the gate (``--gate ci``), else tester processes."""
    did_not_stack: set[tuple[str, str]] = field(default_factory=set)
    candidates: dict[str, q.Candidate] = field(default_factory=dict)
    commits: dict[str, str] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    probes: dict[str, dict[int, q.Probe]] = field(default_factory=dict)
    windows: dict[str, int] = field(default_factory=dict)
    broke: set[str] = field(default_factory=set)
    merged: list[str] = field(default_factory=list)
    evicted: list[str] = field(default_factory=list)
    landed_at: list[str] = field(default_factory=list)
    pushes: int = 0
    seconds: float = 0.0
    decisions: int = 0
    window_trace: list[int] = field(default_factory=list)

    def setup(self, n: int) -> None:
        for i in range(n):
            name = candidate_name(i)
            branch = f"longshot/{NAMESPACE}/{BUILD}/{name}"
            self.commits[name] = git("--git-dir", str(self.bare), "rev-parse", branch).decode().strip()
            self.candidates[name] = q.Candidate(name, BUILD, uid=str(uuid.uuid4()))
            self.order.append(name)

    def state(self, head: str) -> q.QueueState:
        live = [self.candidates[n] for n in self.order if n in self.candidates]
        batches = {c.batch_id for c in live if c.batch_id}
        probes = tuple(p for b in sorted(batches) for p in self.probes.get(b, {}).values())
        return q.QueueState(tuple(live), probes, head, dict(self.windows), {BUILD: self.window},
                            max_probes=self.max_probes, broke=frozenset(self.broke), depth=self.depth,
                            did_not_stack=frozenset(self.did_not_stack))

    def member(self, name: str) -> speculate.Member:
        c = self.candidates[name]
        return speculate.Member(name=name, namespace=NAMESPACE, uid=c.uid,
                                branch=f"longshot/{NAMESPACE}/{BUILD}/{name}",
                                commit=self.commits[name], strategy="rebase", task=name, build=BUILD)

    def go(self) -> None:
        w = vws.Workspace(str(self.bare), self.work / "workspaces", committer=("Longshot", "longshot@example.com"))
        gates: Gates | CiGates = self.ci or Gates(self.bare, self.work / "gates", self.gate_seconds)
        start = time.monotonic()
        while self.candidates:
            head = speculate.head_of(w, TARGET)  # the shell fetches the target on every reconcile
            while (got := gates.next(block=False)) is not None:  # take every verdict that arrived
                self._verdict(*got)
            state = self.state(head)
            effects = q.decide(state)
            self.decisions += 1
            if all(isinstance(e, q.Wait) for e in effects):
                got = gates.next(block=True)  # until a gate answers
                if got is None:
                    raise RuntimeError(f"the queue waits with no gate running: {effects}")
                self._verdict(*got)
                continue
            self._carry_out(effects, state, w, gates)
        self.seconds = time.monotonic() - start

    def _verdict(self, gate: Gate, ok: bool, output: str) -> None:
        if gate.cancelled:
            return
        self.probes.setdefault(gate.batch, {})[gate.position] = q.Probe(gate.position, "passed" if ok else "failed",
                                                                        output, gate.batch)

    def _carry_out(self, effects: list[q.Effect], state: q.QueueState, w: vws.Workspace,
                   gates: Gates | CiGates) -> None:
        for e in effects:
            if isinstance(e, q.PrepareBatch):
                below = (speculate.queue_branch(NAMESPACE, BUILD, e.onto_batch, e.onto_position)
                         if e.onto_batch else None)
                prepared = speculate.prepare(w, TARGET, [self.member(n) for n in e.members], e.onto, below)
                more = q.prepared(state, prepared)
                joins = [m for m in more if isinstance(m, q.JoinBatch)]
                if joins:
                    speculate.publish(w, NAMESPACE, BUILD, joins[0].batch_id, [(j.position, j.commit) for j in joins])
                self._carry_out(more, state, w, gates)
            elif isinstance(e, q.JoinBatch):
                self.candidates[e.name] = replace(self.candidates[e.name], batch_id=e.batch_id, position=e.position,
                                                  commit=e.commit, base=e.base)
            elif isinstance(e, q.StartProbes):
                members = {c.position: c for c in self.candidates.values() if c.batch_id == e.batch_id}
                for pos in e.positions:
                    commit = members[pos].commit
                    assert commit is not None
                    self.probes.setdefault(e.batch_id, {})[pos] = q.Probe(pos, "running", "", e.batch_id)
                    gates.start(e.batch_id, pos, commit)
            elif isinstance(e, q.Land):
                if not e.pushed:
                    ok, why = speculate.land(w, TARGET, e.base, e.commit,
                                             speculate.queue_branch(NAMESPACE, BUILD, e.batch_id, e.position))
                    if not ok:
                        raise RuntimeError(f"nothing else pushes to {TARGET}, yet the compare-and-swap failed: {why}")
                    self.pushes += 1
                self.landed_at.append(e.commit)
                for n in e.members:
                    self.merged.append(n)
                    del self.candidates[n]
                positions = [p for p in range(1, e.position + 1)]
                speculate.cleanup(w, NAMESPACE, BUILD, e.batch_id, positions)
            elif isinstance(e, q.Evict):
                self.evicted.append(e.name)
                del self.candidates[e.name]
            elif isinstance(e, q.Requeue):
                for n in e.names:
                    if n in self.candidates:
                        self.candidates[n] = replace(self.candidates[n], batch_id=None, position=None, commit=None,
                                                     base=None)
            elif isinstance(e, q.SetWindow):
                self.windows[e.build] = e.window
                (self.broke.add if e.broke else self.broke.discard)(e.build)
                self.window_trace.append(e.window)
            elif isinstance(e, q.CancelProbes):
                gates.cancel(e.batch_id)
            elif isinstance(e, q.Recorded):
                self.merged.append(e.name)
                del self.candidates[e.name]
            elif isinstance(e, q.DidNotStack):
                self.did_not_stack.add((e.name, e.onto))
            elif isinstance(e, q.Conflicted):
                raise RuntimeError(f"no candidate of this benchmark conflicts, yet {e.name} did: {e.files}")

    # --- checking the result -----------------------------------------------------------------------

    def red_commits(self, base: str) -> tuple[int, int]:
        """(red commits on the target's first-parent history since ``base``, commits checked)."""
        history = git("--git-dir", str(self.bare), "rev-list", "--first-parent", f"{base}..{TARGET}").decode().split()
        checked = set(history) | set(self.landed_at)
        red = 0
        for i, commit in enumerate(sorted(checked)):
            ok, _ = run_tests(self.bare, commit, self.work / f"verify-{i}")
            red += 0 if ok else 1
        return red, len(checked)

    def merged_twice(self) -> int:
        """Candidates whose UID trailer appears on more than one first-parent commit (rebase: one commit each)."""
        text = git("--git-dir", str(self.bare), "log", "--first-parent", "--format=%B%x00", TARGET).decode()
        seen: dict[str, int] = {}
        for message in text.split("\0"):
            for line in message.splitlines():
                if line.startswith(f"{speculate.ID_TRAILER}: "):
                    uid = line.split(": ", 1)[1].strip()
                    seen[uid] = seen.get(uid, 0) + 1
        return sum(1 for c in seen.values() if c > 1)


def run_mode(label: str, template: Path, work: Path, n: int, window: int, gate_seconds: float,
             max_probes: int, depth: int, forge: object = None) -> Run:
    bare = work / f"{label}.git"
    shutil.copytree(template, bare)
    r = Run(window=window, bare=bare, work=work / label, gate_seconds=gate_seconds, max_probes=max_probes,
            depth=depth)
    r.setup(n)
    if forge is None:
        r.go()
        return r
    project = f"bench/{label}"
    forge.repo(project, f"file://{bare}")  # type: ignore[attr-defined]
    token = work / "ci-token"
    token.write_text(CiGates.TOKEN)
    with open(work / f"ci-{label}.log", "w") as out:
        ci = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ci_standin.py"), "--git-dir", str(bare),
                               "--api", forge.github_url, "--project", project,  # type: ignore[attr-defined]
                               "--token-file", str(token), "--name", CiGates.CHECK, "--command", "sh ./test.sh",
                               "--delay", str(gate_seconds)], stdout=out, stderr=subprocess.STDOUT, env=ENV)
        try:
            r.ci = CiGates(forge, project)
            r.go()
        finally:
            ci.terminate()
            ci.wait(timeout=30)
    return r


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=64)
    parser.add_argument("--culprit-every", type=int, default=16, help="one planted culprit per this many candidates")
    parser.add_argument("--gate-seconds", type=float, default=2.0, help="the gate's fixed duration (its sleep)")
    parser.add_argument("--window", type=int, default=8, help="spec.merge.window of the speculative run")
    parser.add_argument("--depth", type=int, default=q.DEFAULT_DEPTH,
                        help="batches under test at once in the speculative run (1: no stacking)")
    parser.add_argument("--max-probes", type=int, default=0, help="prefixes gated per bisection round (0: all)")
    parser.add_argument("--seed", type=int, default=7, help="where the culprits are planted")
    parser.add_argument("--only", choices=("serial", "speculative"), default=None, help="run one mode only")
    parser.add_argument("--gate", choices=("tester", "ci", "both"), default="both",
                        help="tester processes, the team's CI through the forge (spec.merge.gate.by: ci), or both runs")
    args = parser.parse_args(argv)
    code = 0
    for gate in (("tester", "ci") if args.gate == "both" else (args.gate,)):
        if gate == "ci":
            code |= with_forge(lambda forge: bench(args, forge))
        else:
            code |= bench(args, None)
    return code


def with_forge(body: object) -> int:
    """Run ``body(forge)`` with the forge stand-in serving; then check every GitHub exchange against GitHub's
    published description (tests/forge_contract.py)."""
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "tests" / "integration")]
    from forge_server import forge_server

    with forge_server(CiGates.TOKEN) as forge:
        code = body(forge)  # type: ignore[operator]
        exchanges = len(forge.github_exchanges())
    log(f"external checks: {exchanges} requests to the forge, each checked against GitHub's OpenAPI description")
    return int(code)


def bench(args: argparse.Namespace, forge: object) -> int:
    gate_text = (f"the CI stand-in (`sleep {args.gate_seconds} && sh test.sh` on each pushed queue branch, a check "
                 "run on the forge)" if forge is not None else f"gate `sleep {args.gate_seconds} && sh test.sh`")

    culprits = plant_culprits(args.candidates, args.culprit_every, random.Random(args.seed))
    log(f"{args.candidates} candidates, culprits {sorted(culprits)}, {gate_text}")
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        work = Path(tmp)
        template = work / "template.git"
        seed(template, args.candidates, culprits)
        base = git("--git-dir", str(template), "rev-parse", TARGET).decode().strip()
        modes = [("serial", 1, 1), ("speculative", args.window, args.depth)]
        if args.only:
            modes = [m for m in modes if m[0] == args.only]
        runs: dict[str, Run] = {}
        red_total = 0
        for label, window, depth in modes:
            r = run_mode(label, template, work, args.candidates, window, args.gate_seconds, args.max_probes, depth,
                         forge)
            red, checked = r.red_commits(base)
            red_total += red
            found = len(set(r.evicted) & culprits)
            innocent = sorted(set(r.evicted) - culprits)
            log(f"{label} (window {window}, depth {depth}): {len(r.merged)} merged, {len(r.evicted)} evicted in "
                f"{r.seconds:.1f}s "
                f"({len(r.merged) / r.seconds * 3600:.0f} merges/hour); {r.pushes} pushes, "
                f"{len(r.merged) / max(1, r.pushes):.1f} merges per push, gate runs "
                f"{sum(len(p) for p in r.probes.values())}, decisions {r.decisions}; "
                f"red target commits {red} of {checked}; culprits evicted {found}/{len(culprits)}, "
                f"innocent evicted {len(innocent)} {innocent or ''}; merged twice {r.merged_twice()}")
            if len(r.merged) + len(r.evicted) != args.candidates:
                log(f"{label}: {args.candidates - len(r.merged) - len(r.evicted)} candidates were lost")
            runs[label] = r
    if "serial" not in runs or "speculative" not in runs:
        return 0
    serial, spec = runs["serial"], runs["speculative"]
    ratio = (len(spec.merged) / spec.seconds) / (len(serial.merged) / serial.seconds)
    found = len(set(spec.evicted) & culprits)
    found = min(found, len(set(serial.evicted) & culprits))
    innocents = len((set(spec.evicted) | set(serial.evicted)) - culprits)
    print(("external_checks " if forge is not None else "") + f"speculative_vs_serial={ratio:.2f} "
          f"red_target_commits={red_total} "
          f"culprits_evicted={found}/{len(culprits)} innocent_evicted={innocents}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
