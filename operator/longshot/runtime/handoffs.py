"""Fetch a handoff stored in git (the large-handoff path of the protocol, see ``api/handoff.py``).

The pointer and the ref's content come from the agent, the adversary, so the fetch is bounded before anything
is read into the operator's memory:

* a pointer announcing more than :data:`~longshot.api.handoff.MAX_HANDOFF_BYTES` is refused unfetched;
* the fetch is shallow and asks the server to leave out every blob over that size and every tree below the
  root (``--filter=combine:blob:limit=...+tree:2``; ``core.bigFileThreshold`` keeps git streaming big blobs to
  disk instead of holding them);
* whatever the server sends (one that ignores filters sends the commit whole), the fetch writes at most the
  handoff limit: the received pack is stored through :mod:`longshot.vcs.packlimit`, which stops git as soon as
  the pack passes :func:`pack_budget` bytes or announces more than :data:`MAX_PACK_OBJECTS` objects (a handoff
  commit has three), and the repository is created without templates; the task's handoff fails with a reason
  naming the limit;
* the real size of ``handoff.json`` is read from git (``cat-file --batch-check``, no lazy fetch) and must
  equal the pointer's and be within the limit before the blob is read;
* every failure, whatever raised it, comes back as a :class:`~longshot.api.handoff.HandoffError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from longshot.api import handoff as ho
from longshot.net import guard as gd
from longshot.runtime import kube
from longshot.vcs import packlimit
from longshot.vcs import workspace as vws

FETCH_TIMEOUT_SECONDS = 120
BIG_FILE_THRESHOLD = "1m"
"""git streams blobs over this size to disk instead of inflating them in memory (``core.bigFileThreshold``)."""
MAX_PACK_OBJECTS = 64
"""Most objects a handoff fetch stores (a handoff commit is a commit, a tree and ``handoff.json``)."""
OVERHEAD_BYTES = 32 * 1024
"""Room kept in the limit for what is not the pack: the bare repository's files, the pack's index, the refs."""


def pack_budget(limit: int) -> int:
    """The largest pack a handoff fetch with ``limit`` stores, so that everything it writes fits in ``limit`` (for
    limits over twice :data:`OVERHEAD_BYTES`, the real ones; a smaller limit, in tests, gets half of it)."""
    return limit - OVERHEAD_BYTES if limit > 2 * OVERHEAD_BYTES else max(1, limit // 2)


def git_env(credentials: vws.GitCredentials | None, workdir: Path) -> dict[str, str]:
    """Environment for a git command with the repository's credentials (the merge queue's own mechanism:
    askpass, ``http.extraHeader`` or an ssh key file), never in the URL or argv."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_", "LONGSHOT_GIT_"))}
    env.update(GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL=os.devnull, HOME=str(workdir), GIT_NO_LAZY_FETCH="1",
               GIT_TERMINAL_PROMPT="0")
    env.update((credentials or vws.GitCredentials()).environment(workdir / "private"))
    return env


def fetch(k: kube.KubeAPI, build: Mapping[str, Any], pointer: ho.HandoffPointer, *,
          guard: gd.Guard | None = None) -> ho.Handoff | ho.HandoffError:
    """Fetch ``handoff.json`` from the pointer's ref in the build's repository and validate it.

    Never raises: a failure of any kind (the Secret, git, the content) is returned as a HandoffError.
    """
    try:
        repo = (build.get("spec") or {}).get("repository") or {}
        namespace, secret_name = build["metadata"]["namespace"], repo.get("credentialsSecret")
        try:
            data = k.get_secret(namespace, secret_name) if secret_name else None
        except Exception as e:  # Forbidden (the operator may not read Secrets there), the API server away
            status = getattr(e, "status", None)
            hint = "; grant the operator get on it (docs/install.md, RBAC)" if status == 403 else ""
            return ho.HandoffError(f"could not read Secret {namespace}/{secret_name} (spec.repository."
                                   f"credentialsSecret) to fetch the handoff at {pointer.ref}: "
                                   f"{status or type(e).__name__}{hint}")
        credentials = vws.GitCredentials.from_secret_data(data) if data else None
        return fetch_from(str(repo["url"]), credentials, pointer, guard=guard)
    except ho.HandoffError as e:
        return e
    except Exception as e:  # reported on the task, never raised into the operator
        return ho.HandoffError(f"could not fetch the handoff at {pointer.ref}: {type(e).__name__}")


def fetch_from(url: str, credentials: vws.GitCredentials | None, pointer: ho.HandoffPointer,
               *, limit: int = ho.MAX_HANDOFF_BYTES, workdir: Path | None = None,
               guard: gd.Guard | None = None) -> ho.Handoff | ho.HandoffError:
    """Fetch and validate the handoff of ``pointer`` from the repository at ``url`` (bounded; never raises).

    The fetch happens in a temporary directory, or in ``workdir`` (kept, for tests and debugging). With
    ``guard``, the fetch connects only to the addresses the egress policy checked.
    """
    try:
        ho.check_pointer(pointer)
        pins = guard.git_pins(url, "spec.repository.url") if guard is not None else gd.GitPins()
        if pointer.size > limit:
            raise ho.HandoffError(f"the handoff at {pointer.ref} has {pointer.size} bytes, more than the {limit} "
                                  "accepted")
        with contextlib.nullcontext(str(workdir)) if workdir else tempfile.TemporaryDirectory(
                prefix="longshot-handoff-") as tmp:
            data = _fetch_blob(url, credentials, pointer, Path(tmp), limit, pins)
        return ho.parse_handoff_bytes(data, pointer)
    except ho.HandoffError as e:
        return e
    except gd.Refused as e:
        return ho.HandoffError(f"could not fetch the handoff at {pointer.ref}: {e}")
    except subprocess.TimeoutExpired:
        return ho.HandoffError(f"fetching the handoff at {pointer.ref} timed out")
    except Exception as e:  # reported on the task, never raised into the operator
        return ho.HandoffError(f"could not fetch the handoff at {pointer.ref}: {type(e).__name__}")


def _fetch_blob(url: str, credentials: vws.GitCredentials | None, pointer: ho.HandoffPointer, work: Path,
                limit: int, pins: gd.GitPins) -> bytes:
    env = pins.env(git_env(credentials, work))
    repo = work / "repo"
    bounded = {**env, **packlimit.environment(pack_budget(limit), MAX_PACK_OBJECTS)}

    def git(*args: str, timeout: float = 30, stdin: bytes | None = None, limited: bool = False) -> bytes:
        try:
            return subprocess.run(["git", *vws.GIT_OPTIONS, "-c", f"core.bigFileThreshold={BIG_FILE_THRESHOLD}",
                                   "-C", str(repo), *args], check=True, env=bounded if limited else env,
                                  capture_output=True, timeout=timeout, input=stdin).stdout
        except subprocess.CalledProcessError as e:
            text = e.stderr.decode(errors="replace")
            if limited and packlimit.is_over_limit(text):
                raise ho.HandoffError(f"the commit at {pointer.ref} is larger than the handoff limit of {limit} "
                                      "bytes (the repository's server sent it whole: it ignores fetch filters, or "
                                      "the commit holds more than handoff.json); nothing over the limit was "
                                      "written") from None
            lines = text.strip().splitlines() or ["?"]
            err = next((line for line in lines if line.startswith(("fatal:", "error:"))), lines[-1])
            raise ho.HandoffError(f"could not fetch the handoff at {pointer.ref}: {err[:300]}") from None

    subprocess.run(["git", "init", "-q", "--bare", "--template=", str(repo)], check=True, env=env,
                   capture_output=True, timeout=30)
    git(*pins.args(), "fetch", "-q", "--no-tags", "--no-write-fetch-head", "--depth=1",
        f"--filter=combine:blob:limit={limit + 1}+tree:2", url, f"+{pointer.ref}:refs/longshot/handoff",
        timeout=FETCH_TIMEOUT_SECONDS, limited=True)
    # a filtered fetch records the URL as a promisor remote; forget it so that nothing is fetched lazily
    subprocess.run(["git", "-C", str(repo), "config", "--remove-section", f"remote.{url}"], env=env,
                   capture_output=True, timeout=30, check=False)
    spec = f"refs/longshot/handoff:{ho.HANDOFF_FILE}"
    info = git("cat-file", "--batch-check=%(objecttype) %(objectsize)", stdin=spec.encode() + b"\n").decode()
    fields = info.split()
    if len(fields) != 2 or fields[0] != "blob" or not fields[1].isdigit():
        raise ho.HandoffError(f"the commit at {pointer.ref} has no {ho.HANDOFF_FILE} of at most {limit} bytes")
    size = int(fields[1])
    if size > limit or size != pointer.size:
        raise ho.HandoffError(f"{ho.HANDOFF_FILE} at {pointer.ref} has {size} bytes but its pointer says "
                              f"{pointer.size} (at most {limit} are accepted)")
    return git("cat-file", "blob", spec)


class TipUnknown(Exception):
    """The branch's tip could not be read now (the server or the Secret is away): try again later."""


def branch_tip(k: kube.KubeAPI, build: Mapping[str, Any], branch: str) -> str | None:
    """The commit ``refs/heads/<branch>`` points to in the build's repository (``git ls-remote`` with the build's
    credentials), or None when the branch does not exist. Raises :class:`TipUnknown` when it cannot be read."""
    return branch_tips(k, build, [branch])[branch]


def branch_tips(k: kube.KubeAPI, build: Mapping[str, Any], branches: Sequence[str], *,
                egress: gd.Guard | None = None) -> dict[str, str | None]:
    """:func:`branch_tip` of several branches with one ``git ls-remote`` (and one read of the credentials). With
    ``egress`` (the operator's: ``Context.egress``), the repository's URL is checked and resolved first and git
    connects only to the checked addresses (``longshot.net.guard``); a refusal is a :class:`TipUnknown` naming the
    field, and no process runs."""
    repo = (build.get("spec") or {}).get("repository") or {}
    pins: gd.GitPins | None = None
    if egress is not None:
        try:
            pins = egress.git_pins(str(repo.get("url")), "spec.repository.url")
        except gd.Refused as e:
            raise TipUnknown(str(e)) from None
    namespace, secret_name = build["metadata"]["namespace"], repo.get("credentialsSecret")
    try:
        data = k.get_secret(namespace, secret_name) if secret_name else None
    except Exception as e:
        raise TipUnknown(f"could not read Secret {namespace}/{secret_name}: {type(e).__name__}") from None
    credentials = vws.GitCredentials.from_secret_data(data) if data else None
    refs = {f"refs/heads/{b}": b for b in branches}
    with tempfile.TemporaryDirectory(prefix="longshot-tip-") as tmp:
        try:
            env = git_env(credentials, Path(tmp))
            pinned = pins.args() if pins is not None else []
            proc = subprocess.run(["git", *vws.GIT_OPTIONS, *pinned, "ls-remote", "--", str(repo["url"]), *refs],
                                  env=pins.env(env) if pins is not None else env, capture_output=True,
                                  timeout=FETCH_TIMEOUT_SECONDS, check=False)
        except subprocess.TimeoutExpired:
            raise TipUnknown(f"git ls-remote of {len(refs)} branch(es) timed out") from None
    if proc.returncode != 0:
        raise TipUnknown(f"git ls-remote of {len(refs)} branch(es) exited {proc.returncode}")
    tips: dict[str, str | None] = dict.fromkeys(branches)
    for line in proc.stdout.decode(errors="replace").splitlines():
        sha, _, name = line.partition("\t")
        branch = refs.get(name.strip())
        if branch is not None:
            tips[branch] = sha.strip()
    return tips


TIPS_PER_CALL = 128
"""Most branches one ``git ls-remote`` of :class:`TipReader` asks for."""
TipsFn = Callable[[kube.KubeAPI, Mapping[str, Any], Sequence[str]], dict[str, str | None]]


class TipReader:
    """Branch tips of ended tasks' handoffs, read with few ``git ls-remote`` calls.

    Every worker's handoff is checked against its branch's tip once its Pod has ended. One ``ls-remote`` (a
    process, a Secret read, a connection to the forge) per handoff made the AgentTask controller's workers wait on
    git: with hundreds of agents ending a minute, the ends of the merge queue's gate Pods waited behind them.
    Here the reads of one repository (namespace, credentials Secret, URL) are coalesced:
    one ``ls-remote`` runs at a time per repository, and each read waits for the first one that *starts after it
    was asked* (so a tip is never read before the Pod that asked had ended), which carries every branch asked
    meanwhile (up to :data:`TIPS_PER_CALL`). A failed call fails the reads it carried (:class:`TipUnknown`)."""

    def __init__(self, read: TipsFn | None = None, egress: Callable[[], gd.Guard | None] | None = None) -> None:
        self.read = read
        self.egress = egress
        """The operator's egress guard, read at each call (the manager sets it after the reconcilers are made)."""
        self.calls = 0
        self._waiting: dict[tuple[str, str, str], list[tuple[str, asyncio.Future[str | None]]]] = {}
        self._last: dict[tuple[str, str, str], tuple[kube.KubeAPI, Mapping[str, Any]]] = {}
        self._running: set[asyncio.Task[None]] = set()
        self._busy: set[tuple[str, str, str]] = set()

    async def tip(self, k: kube.KubeAPI, build: Mapping[str, Any], branch: str) -> str | None:
        repo = (build.get("spec") or {}).get("repository") or {}
        key = (str(build["metadata"]["namespace"]), str(repo.get("credentialsSecret") or ""), str(repo.get("url")))
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(key, []).append((branch, future))
        self._last[key] = (k, build)
        if key not in self._busy:
            self._busy.add(key)
            task = asyncio.create_task(self._drain(key), name=f"branch tips of {key[2]}")
            self._running.add(task)
            task.add_done_callback(self._running.discard)
        return await future

    async def _drain(self, key: tuple[str, str, str]) -> None:
        try:
            while self._waiting.get(key):
                waiting = self._waiting[key]
                batch, self._waiting[key] = waiting[:TIPS_PER_CALL], waiting[TIPS_PER_CALL:]
                k, build = self._last[key]
                guard = self.egress() if self.egress is not None else None
                read = self.read or functools.partial(branch_tips, egress=guard)
                self.calls += 1
                try:
                    tips = await asyncio.to_thread(read, k, build, sorted({b for b, _ in batch}))
                except asyncio.CancelledError:  # shutting down: nobody waits for ever
                    for _, f in batch:
                        f.cancel()
                    raise
                except Exception as e:
                    error = e if isinstance(e, TipUnknown) else TipUnknown(f"{type(e).__name__}: {e}")
                    for _, f in batch:
                        if not f.done():
                            f.set_exception(error)
                    continue
                for b, f in batch:
                    if not f.done():
                        f.set_result(tips.get(b))
        finally:
            self._busy.discard(key)
            if not self._waiting.get(key):
                self._waiting.pop(key, None)
                self._last.pop(key, None)
