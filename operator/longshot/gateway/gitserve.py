"""Git smart HTTP through the gateway: a caching mirror per repository, the attempt's ref policy, and the
build's git credential injected upstream.

Routes (``<ns>/<build>`` must be the caller's own build)::

    GET  /git/<ns>/<build>.git/info/refs?service=git-upload-pack|git-receive-pack
    POST /git/<ns>/<build>.git/git-upload-pack
    POST /git/<ns>/<build>.git/git-receive-pack

Each repository (upstream URL, namespace and credentials Secret: two tenants never share a mirror) has a
bare mirror under ``mirror_dir``. Every ref advertisement (the first request of any clone, fetch or push)
first fetches the upstream into the mirror (``+refs/heads/*``, ``+refs/tags/*``, ``+refs/longshot/*``,
pruned), coalesced per mirror (the upstream's HEAD, what a clone checks out, is read again at most every
:data:`HEAD_SYNC_SECONDS`); then ``git http-backend`` serves the request from the mirror, streamed in
both directions. Clones therefore cost the upstream only what changed since the last one.

A push (``git-receive-pack``) is read up to the end of its command list (:mod:`pktline`, bounded) and
checked against :class:`~longshot.gateway.refpolicy.RefPolicy` before git sees a byte: a refused push is
answered by the gateway itself with ``ng <ref> <reason>`` per ref (git prints
``! [remote rejected] <ref> (<reason>)``). An allowed push goes to ``git receive-pack`` in the mirror,
whose ``pre-receive`` hook (:mod:`longshot.gateway.hook`) checks the refs again and pushes the new
commits to the upstream with the build's credential and ``--force-with-lease`` on the values the agent
saw; only when the upstream accepted do the mirror's refs move and the agent hear ``ok``.

The credential never leaves the gateway: an http(s) username/password or token becomes an
``Authorization: Basic`` header (``http.extraHeader``) in a git config file of its own, mode 0600 in a 0700
directory, written for one request and removed after it (:meth:`GitService.credential_file`); the git that
talks to the upstream includes it (``include.path``, the only thing in its environment). It is never in argv,
a URL, or the environment of a process that handles agent bytes: ``git receive-pack`` and the ``index-pack``
it runs on the agent's pack get the file's path only through the hook's variable
``LONGSHOT_GATEWAY_CREDENTIALS_FILE``, and only the hook's ``git push`` reads the file.
An ssh key is written to a 0600 file used by ``GIT_SSH_COMMAND``. The gateway's git runs with a config of
its own (``GIT_CONFIG_NOSYSTEM``, ``GIT_CONFIG_GLOBAL``), allowed protocols limited, no redirects.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import math
import os
import re
import shlex
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from longshot.api import sanitize
from longshot.gateway import hook as ghook
from longshot.gateway import metrics, pktline, refpolicy
from longshot.gateway.identity import Caller, Reader
from longshot.gateway.settings import GatewaySettings
from longshot.net import guard as gd
from longshot.vcs import gitexec, packlimit

log = logging.getLogger(__name__)
CHUNK = 64 * 1024
SERVICES = ("git-upload-pack", "git-receive-pack")
_GIT_PROTOCOL = re.compile(r"^[A-Za-z0-9=:._-]{1,200}$")
HOOK = """#!/bin/sh
# Longshot gateway: check the refs again and push them to the upstream before the mirror accepts them.
exec {python} -m longshot.gateway.hook
"""
DEFAULT_USERNAME = "x-access-token"
HEAD_SYNC_SECONDS = 60.0
"""How often a mirror's HEAD is read again from the upstream (``git ls-remote --symref``: one more round trip to
the upstream) after the mirror's first fetch: a repository's default branch rarely changes, and reading it on every
refresh doubled the upstream requests of every clone and push (``make bench-fleet --through-gateway``)."""
REPACK_PACKS = 8
"""Packs in a mirror beyond which it is repacked into one. Git's automatic maintenance is off in a mirror (``gc.auto
= 0``: never on a request's path), and a fetch into it that brings 100 objects or more keeps them as a pack of their
own: a mirror never repacked held 52 packs and 2,496 loose objects after 350 merges (``make bench-fleet
BENCH_FLEET_ARGS=--through-gateway``), and every clone's ``pack-objects`` searched them all and compressed the loose
objects again. A clone of it cost 0.13 CPU s, of the repacked mirror (one pack, a bitmap) 0.03."""
REPACK_LOOSE = 1024
"""Loose objects (estimated from one of the 256 fan-out directories, as ``git gc --auto`` does) beyond which a
mirror is repacked: a push (``receive.unpackLimit``) or a fetch of fewer than 100 objects leaves them loose."""
REPACK = ("repack", "-a", "-d", "-l", "-q", "--keep-unreachable", "--write-bitmap-index")
"""The repack: every object into one pack with a reachability bitmap (a clone then reuses the pack as it is).
``--keep-unreachable`` keeps what no ref reaches yet: a push's objects are moved into the mirror before its refs are
(its ``pre-receive`` hook runs in between), and a repack in that moment must not drop them. Nothing is ever pruned
here; the mirror's size cap (``mirror_max_bytes``) removes a mirror grown too large, and the next request fetches it
again."""
_AUTH_FAILURE = re.compile(r"Authentication failed|could not read (Username|Password)|returned error: (401|403)|"
                           r"Permission denied \(publickey|Invalid username or password", re.IGNORECASE)


class RequestTooLarge(Exception):
    pass


class UpstreamError(Exception):
    """The upstream repository could not be reached or refused the gateway; the message is for the agent."""


@dataclass
class Upstream:
    """Where a build's repository is and how the gateway authenticates there."""

    url: str
    env: dict[str, str] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)
    key: str = ""
    """The mirror's name: a digest of the namespace, the credentials Secret and the URL."""
    secret_name: str = ""
    credential: list[tuple[str, str]] = field(default_factory=list)
    """git config entries that carry the credential (``http.extraHeader``): never put in an environment, only in
    the 0600 file of :meth:`GitService.credential_file`."""

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return re.sub(r"(://)[^/@\s]+@", r"\1***@", text)


@contextlib.contextmanager
def stage(name: str) -> Iterator[None]:
    """Time the block as one stage of a git request (``longshot_gateway_git_stage_seconds``), however it ends."""
    started = time.monotonic()
    try:
        yield
    finally:
        metrics.GIT_STAGE.labels(stage=name).observe(time.monotonic() - started)


class MirrorLock:
    """Pushes into a mirror run side by side (each moves its own attempt's refs); a fetch runs beside them but
    leaves the refs they are moving alone.

    A push's ``pre-receive`` hook updates the upstream first and the mirror's refs move after it. A fetch in
    between (another agent's clone) that wrote the pushed ref into the mirror first would make git refuse the push
    the upstream had accepted ("cannot lock ref ...: reference already exists"): seen with 20 agents pushing to one
    repository. Until 2026-11-28 a fetch therefore waited for every push in flight, and new pushes for it: clones
    and pushes ran as one chain of fetches, each as long as the pushes it waited for (docs/benchmarks.md, the gateway
    at fleet scale). Now a fetch starts at once and is told the refs being pushed (:meth:`fetch` yields them), which
    it leaves out of its refspecs (``^ref``: neither written nor pruned); only a push that would start while a fetch
    runs waits for it (a fetch started before the push's upstream update could otherwise see that update, with its
    ref not left out), and a fetch waits for such pushes to register first, so neither starves.
    """

    def __init__(self) -> None:
        self._cond = asyncio.Condition()
        self._moving: dict[str, int] = {}
        self._fetching = False
        self._pushes_waiting = 0

    @property
    def pushes(self) -> int:
        """Refs being pushed now (each counted once per push moving it)."""
        return sum(self._moving.values())

    @contextlib.asynccontextmanager
    async def push(self, refs: tuple[str, ...] = ()) -> AsyncIterator[None]:
        async with self._cond:
            self._pushes_waiting += 1
            try:
                await self._cond.wait_for(lambda: not self._fetching)
            finally:
                self._pushes_waiting -= 1
            for ref in refs:
                self._moving[ref] = self._moving.get(ref, 0) + 1
            self._cond.notify_all()
        try:
            yield
        finally:
            async with self._cond:
                for ref in refs:
                    left = self._moving.get(ref, 0) - 1
                    if left > 0:
                        self._moving[ref] = left
                    else:
                        self._moving.pop(ref, None)
                self._cond.notify_all()

    @contextlib.asynccontextmanager
    async def fetch(self) -> AsyncIterator[frozenset[str]]:
        """Run a fetch; yields the refs being pushed, which the fetch must leave out."""
        async with self._cond:
            await self._cond.wait_for(lambda: not self._fetching and not self._pushes_waiting)
            self._fetching = True
            moving = frozenset(self._moving)
        try:
            yield moving
        finally:
            async with self._cond:
                self._fetching = False
                self._cond.notify_all()


FETCHED_PREFIXES = ("refs/heads/", "refs/tags/", "refs/longshot/")
"""The namespaces a mirror fetch writes (its refspecs)."""
_PLAIN_REF = re.compile(r"^refs/[A-Za-z0-9._/-]{1,250}$")


def fetch_refspecs(moving: frozenset[str]) -> list[str]:
    """The mirror fetch's refspecs, leaving out (``^ref``, git >= 2.29) the refs pushes are moving now. The refs are
    the ref policy's exact names (never a pattern); one that is not a plain ref name is not passed to git."""
    return [f"+{p}*:{p}*" for p in FETCHED_PREFIXES] + [
        f"^{ref}" for ref in sorted(moving) if ref.startswith(FETCHED_PREFIXES) and _PLAIN_REF.match(ref)]


class GitService:
    def __init__(self, settings: GatewaySettings, egress: gd.Guard | None = None) -> None:
        self.settings = settings
        self.egress = egress or gd.Guard(settings.egress_policy())
        self.root = Path(settings.mirror_dir)
        self.repos = self.root / "repos"
        self.keys = self.root / "keys"
        self.home = self.root / "home"
        self._running: dict[str, tuple[float, asyncio.Task[None]]] = {}
        """The fetch running into each mirror, with when it started."""
        self._queued: dict[str, asyncio.Task[None]] = {}
        """The fetch queued for each mirror: it starts when the running one ends."""
        self._mirror_locks: dict[str, MirrorLock] = {}
        self._fetched: dict[str, float] = {}
        self._head_synced: dict[str, float] = {}
        self._repacking: dict[str, asyncio.Task[None]] = {}
        for d in (self.repos, self.keys, self.home, self.root / "hooks"):
            d.mkdir(parents=True, exist_ok=True)
        self.keys.chmod(stat.S_IRWXU)
        self.config = self.root / "gitconfig"
        protocols = ["https", "http", "ssh", "git"] + (["file"] if settings.allow_file_urls else [])
        lines = ["[protocol]", "\tallow = never"]
        lines += [f'[protocol "{p}"]\n\tallow = always' for p in protocols]
        lines += ["[http]", "\tfollowRedirects = false", "[credential]", "\thelper = ",
                  "[core]", "\tfsmonitor = false", "[safe]", "\tdirectory = *",
                  "[gc]", "\tauto = 0", "[receive]", "\tautogc = false", "\tdenyDeletes = true",
                  "\tdenyNonFastForwards = false", "[uploadpack]", "\tallowFilter = true"]
        self.config.write_text("\n".join(lines) + "\n")
        hook = self.root / "hooks" / "pre-receive"
        hook.write_text(HOOK.format(python=shlex.quote(sys.executable)))
        hook.chmod(stat.S_IRWXU)

    # --- environment ------------------------------------------------------------------------------------

    def base_env(self) -> dict[str, str]:
        """The environment of every git the gateway runs: its own config, nothing from the machine's."""
        keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TZ", "PYTHONPATH")}
        return {**keep, "HOME": str(self.home), "GIT_CONFIG_NOSYSTEM": "1", "GIT_CONFIG_GLOBAL": str(self.config),
                "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "/bin/false", "SSH_ASKPASS": "/bin/false",
                "GCM_INTERACTIVE": "never", "GIT_NO_REPLACE_OBJECTS": "1"}

    def upstream(self, caller: Caller | Reader, secret: Mapping[str, str] | None) -> Upstream:
        repo = caller.build_spec.get("repository") or {}
        url = str(repo.get("url") or "")
        shown = sanitize.strip_userinfo(url)
        scheme = url.split("://", 1)[0].lower() if "://" in url else "ssh"
        if scheme == "file" and not self.settings.allow_file_urls:
            raise UpstreamError(f"spec.repository.url {shown!r} is a file:// URL, which the gateway does not serve "
                                "(set LONGSHOT_GATEWAY_ALLOW_FILE_URLS=true only on a single-user machine)")
        if scheme not in ("https", "http", "ssh", "git", "file"):
            raise UpstreamError(f"spec.repository.url {shown!r}: the gateway serves https, http, ssh and git URLs")
        secret_name = str(repo.get("credentialsSecret") or "")
        key = hashlib.sha256(f"{caller.namespace}\0{secret_name}\0{url}".encode()).hexdigest()[:40]
        up = Upstream(url=url, key=key, secret_name=secret_name)
        if not secret:
            return up
        config: list[tuple[str, str]] = []
        password = (secret.get("password") or secret.get("token") or "").strip()
        if password:
            user = (secret.get("username") or "").strip() or DEFAULT_USERNAME
            header = base64.b64encode(f"{user}:{password}".encode()).decode()
            config.append(("http.extraHeader", f"Authorization: Basic {header}"))
            up.secrets += [password, header]
        private = secret.get("ssh-privatekey")
        if private:
            path = self.keys / f"{key}.key"
            _write_private(path, private if private.endswith("\n") else private + "\n")
            known = secret.get("known_hosts")
            if known:
                hosts_file = self.keys / f"{key}.known_hosts"
                _write_private(hosts_file, known)
                hosts = f"-o UserKnownHostsFile={shlex.quote(str(hosts_file))} -o StrictHostKeyChecking=yes"
            else:
                hosts = (f"-o UserKnownHostsFile={shlex.quote(str(self.keys / (key + '.seen_hosts')))} "
                         "-o StrictHostKeyChecking=accept-new")
            up.env["GIT_SSH_COMMAND"] = (f"ssh -i {shlex.quote(str(path))} -o IdentitiesOnly=yes -o BatchMode=yes "
                                         f"-F /dev/null {hosts}")
            up.env["GIT_SSH_VARIANT"] = "ssh"
        up.credential = config
        return up

    @contextlib.contextmanager
    def credential_file(self, up: Upstream) -> Iterator[str | None]:
        """The path of a git config file (mode 0600, in the 0700 ``keys`` directory) holding ``up``'s credential,
        for the duration of the ``with`` block; removed afterwards. None when the upstream has no http credential."""
        if not up.credential:
            yield None
            return
        fd, path = tempfile.mkstemp(prefix=".credential-", suffix=".gitconfig", dir=str(self.keys))
        try:
            with os.fdopen(fd, "w") as f:
                f.write(ghook.config_text(up.credential))
            yield path
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)

    async def pin(self, up: Upstream) -> None:
        """Hold the upstream to the egress policy: resolve its host once, check every address, and make every
        git of this request (the mirror's fetch, the hook's push) connect to those addresses only."""
        try:
            pins = await self.egress.agit_pins(up.url, "spec.repository.url")
        except gd.Refused as e:
            raise UpstreamError(str(e)) from None
        up.env = pins.env(up.env)

    # --- the mirror -------------------------------------------------------------------------------------

    def mirror(self, up: Upstream) -> Path:
        return self.repos / f"{up.key}.git"

    async def _git(self, *args: str, cwd: Path, env: Mapping[str, str]) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            "git", *args, cwd=cwd, env=dict(env), stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), self.settings.git_timeout_seconds)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            return 124, f"timed out after {self.settings.git_timeout_seconds:g}s"
        return proc.returncode or 0, out.decode(errors="replace")

    def mirror_lock(self, up: Upstream) -> MirrorLock:
        return self._mirror_locks.setdefault(up.key, MirrorLock())

    async def refresh(self, up: Upstream, max_age: float = 0.0) -> None:
        """Bring the mirror up to date with the upstream: one fetch that started after this call did, or at most
        ``max_age`` seconds before it (a clone's: ``mirror_max_age_seconds``; a push's is 0).

        One fetch per mirror runs at a time, and every request waiting for the mirror waits on a shared fetch
        rather than in line for a lock: one that is running, when it started late enough, else the one queued to
        start when the running one ends (created by the first request that needs it, joined by the others). So a
        fetch that ends wakes all of its waiters at once. (Until 2026-11-29 the waiters took a lock in turn, each
        checking whether the last fetch had started after it asked: on a busy gateway each turn cost an event loop
        pass, and a push waited 17 s at p50 for fetches that took 0.95 s: docs/benchmarks.md.) A fetch that fails
        fails each of its waiters with its error."""
        asked = time.monotonic()
        key = up.key
        if max_age > 0 and self._fetched.get(key, -math.inf) >= asked - max_age:
            metrics.MIRROR_SERVED.labels(freshness="recent").inc()
            return  # a fetch that started moments ago: served from it, without waiting for one that runs now
        running = self._running.get(key)
        if running is not None and running[0] >= asked - max_age:
            metrics.MIRROR_SERVED.labels(freshness="waited").inc()
            await asyncio.shield(running[1])  # started after this call asked (or recently enough): its outcome
            return
        queued = self._queued.get(key)
        if queued is None:
            metrics.MIRROR_SERVED.labels(freshness="fetched").inc()
            queued = asyncio.get_running_loop().create_task(
                self._queued_fetch(up, None if running is None else running[1]), name=f"fetch {key}")
            queued.add_done_callback(_retrieved)
            self._queued[key] = queued
        else:
            metrics.MIRROR_SERVED.labels(freshness="waited").inc()
        await asyncio.shield(queued)

    async def _queued_fetch(self, up: Upstream, after: asyncio.Task[None] | None) -> None:
        """The fetch that starts when ``after`` (the one running when it was queued) has ended, however it ended:
        it starts after every request that joined it had asked."""
        if after is not None:
            await asyncio.wait([after])
        key = up.key
        me = asyncio.current_task()
        assert me is not None
        if self._queued.get(key) is me:
            del self._queued[key]
        entry: tuple[float, asyncio.Task[None]] = (time.monotonic(), me)
        self._running[key] = entry
        try:
            await self._fetch(up, entry[0])
        finally:
            if self._running.get(key) is entry:
                del self._running[key]
        self.maintain(up)

    async def _fetch(self, up: Upstream, started: float) -> None:
        """One fetch into the mirror (created first when there is none); ``_fetched`` records its start."""
        path = self.mirror(up)
        env = self.base_env()
        if not (path / "HEAD").exists():
            code, out = await self._git("init", "--quiet", "--bare", str(path), cwd=self.root, env=env)
            if code != 0:
                raise UpstreamError(f"cannot create the mirror: {out.strip()[-300:]}")
            (path / "hooks").mkdir(exist_ok=True)
            for k, v in (("core.hooksPath", str(self.root / "hooks")), ("http.receivepack", "true")):
                await self._git("config", k, v, cwd=path, env=env)
            self._head_synced.pop(up.key, None)  # a new mirror (or one removed over its cap) reads it first
        async with self.mirror_lock(up).fetch() as moving:
            bound = await asyncio.to_thread(self._fetch_bound, path)
            with self.credential_file(up) as credential:
                code, out = await self._git(
                    "fetch", "--quiet", "--prune", "--no-tags", "--no-write-fetch-head", "--", up.url,
                    *fetch_refspecs(moving),
                    cwd=path, env=ghook.with_include({**env, **up.env, **bound}, credential))
            if code == 0:
                code, out = await asyncio.to_thread(self._check_size, path, up)
        elapsed = time.monotonic() - started
        metrics.MIRROR_FETCH.labels(result="ok" if code == 0 else "error").observe(elapsed)
        if code != 0:
            detail = up.redact(out.strip())[-600:]
            log.warning("mirror fetch failed: %s", sanitize.one_line(detail))
            why = (f"the repository refused the credentials of spec.repository.credentialsSecret "
                   f"{up.secret_name or '(none set)'}; " if _AUTH_FAILURE.search(out) else "")
            if packlimit.is_over_limit(out):
                for tmp in (path / "objects" / "pack").glob("tmp_*"):  # what the stopped fetch left
                    tmp.unlink(missing_ok=True)
                raise UpstreamError(
                    f"the repository {up.redact(up.url)} is larger than the gateway's mirror cap of "
                    f"{self.settings.mirror_max_bytes} bytes (LONGSHOT_GATEWAY_MIRROR_MAX_BYTES, chart value "
                    "gateway.mirrorMaxBytes); the fetch was stopped at the cap")
            raise UpstreamError(f"the gateway could not fetch the repository {up.redact(up.url)}: {why}{detail}")
        if started - self._head_synced.get(up.key, -HEAD_SYNC_SECONDS) >= HEAD_SYNC_SECONDS:
            await self._sync_head(path, up, env)
            self._head_synced[up.key] = started
        self._fetched[up.key] = started

    # --- maintenance ------------------------------------------------------------------------------------

    def maintain(self, up: Upstream) -> asyncio.Task[None] | None:
        """After a write into the mirror (a fetch, a push): repack it in the background when it is due
        (:data:`REPACK_PACKS`, :data:`REPACK_LOOSE`), one repack per mirror at a time. Requests go on meanwhile:
        git's readers find objects that moved to the new pack, and objects written during the repack stay where
        they were written. Returns the repack started, else None."""
        running = self._repacking.get(up.key)
        if running is not None and not running.done():
            return None
        path = self.mirror(up)
        if not repack_due(path):
            return None
        task = asyncio.get_running_loop().create_task(self._repack(path), name=f"repack {up.key}")
        self._repacking[up.key] = task
        return task

    async def _repack(self, path: Path) -> None:
        started = time.monotonic()
        env = self.base_env()
        code, out = await self._git(*REPACK, cwd=path, env=env)
        if code == 0:
            code, out = await self._git("prune-packed", "-q", cwd=path, env=env)
        metrics.MIRROR_REPACK.labels(result="ok" if code == 0 else "error").observe(time.monotonic() - started)
        if code != 0 and path.exists():
            log.warning("repack of the mirror %s failed: %s", path.name, sanitize.one_line(out.strip()[-300:]))

    def _fetch_bound(self, path: Path) -> dict[str, str]:
        """The environment that bounds a fetch into the mirror at ``path`` to what is left under
        ``mirror_max_bytes`` (``vcs.packlimit``); empty without a cap."""
        cap = self.settings.mirror_max_bytes
        if not cap:
            return {}
        return packlimit.environment(max(1, cap - packlimit.tree_bytes(path / "objects")))

    def _check_size(self, path: Path, up: Upstream) -> tuple[int, str]:
        """``(0, "")`` when the mirror is within ``mirror_max_bytes``; else the mirror is removed (a cache: the
        next request fetches it again) and ``(1, why)``."""
        cap = self.settings.mirror_max_bytes
        size = packlimit.tree_bytes(path / "objects") if cap else 0
        if size <= cap:
            return 0, ""
        shutil.rmtree(path, ignore_errors=True)
        return 1, f"{packlimit.OVER_LIMIT_MARKERS[0]}: the mirror held {size} bytes"

    async def _sync_head(self, path: Path, up: Upstream, env: Mapping[str, str]) -> None:
        """Point the mirror's HEAD at the upstream's default branch (what a clone checks out)."""
        with self.credential_file(up) as credential:
            code, out = await self._git("ls-remote", "--symref", "--", up.url, "HEAD", cwd=path,
                                        env=ghook.with_include({**env, **up.env}, credential))
        match = re.search(r"^ref: (refs/heads/\S+)\tHEAD$", out, re.MULTILINE) if code == 0 else None
        if match:
            await self._git("symbolic-ref", "HEAD", match.group(1), cwd=path, env=env)

    # --- requests ---------------------------------------------------------------------------------------

    async def info_refs(self, request: web.Request, caller: Caller | Reader, up: Upstream) -> web.StreamResponse:
        service = request.query.get("service", "")
        if service not in SERVICES:
            raise web.HTTPForbidden(text="only smart HTTP is served: git-upload-pack or git-receive-pack\n")
        # a clone or fetch may be served from a fetch that started moments before it asked; a push's advertisement
        # always waits for a fetch that started after it asked (the values it pushes against must be the upstream's)
        clone = service == "git-upload-pack"
        with stage("refresh_clone" if clone else "refresh_push"):
            await self.refresh(up, self.settings.mirror_max_age_seconds if clone else 0.0)
        with stage("info_refs"):
            return await self._backend(request, caller, up, "info/refs", None,
                                       extra_env=read_env(caller) if clone else None)

    async def upload_pack(self, request: web.Request, caller: Caller | Reader, up: Upstream) -> web.StreamResponse:
        body = _body(request, self.settings.max_fetch_request_bytes)
        with stage("upload_pack"):
            return await self._backend(request, caller, up, "git-upload-pack", body, extra_env=read_env(caller))

    async def receive_pack(self, request: web.Request, caller: Caller, up: Upstream) -> web.StreamResponse:
        policy = refpolicy.RefPolicy(namespace=caller.namespace, build=caller.build, task=caller.task,
                                     attempt=caller.attempt, role=caller.role, branch=caller.task_input.branch)
        body = _body(request, self.settings.max_push_bytes)
        buf = bytearray()
        commands: pktline.Commands | None = None
        try:
            async for chunk in body:
                buf += chunk
                commands = pktline.parse_commands(buf)
                if commands is not None:
                    break
        except pktline.ProtocolError as e:
            metrics.GIT_PUSHES.labels(result="invalid").inc()
            raise web.HTTPBadRequest(text=f"longshot-gateway: {e}\n") from None
        except RequestTooLarge:
            raise web.HTTPRequestEntityTooLarge(max_size=self.settings.max_push_bytes, actual_size=-1) from None
        if commands is None:
            metrics.GIT_PUSHES.labels(result="invalid").inc()
            raise web.HTTPBadRequest(text="longshot-gateway: the push ended before its command list did\n")
        results = policy.decide(commands.commands)
        refused = [(ref, reason) for ref, reason in results if reason]
        if refused:
            metrics.GIT_PUSHES.labels(result="refused").inc()
            # ref names come from the agent: one line each, so that a newline in one cannot forge a log line
            log.warning("refused push of %s by %s/%s attempt %d: %s",
                        ", ".join(sanitize.one_line(r)[:256] for r, _ in refused[:10]), caller.namespace,
                        caller.task, caller.attempt, sanitize.one_line(refused[0][1] or ""))
            with contextlib.suppress(RequestTooLarge):
                async for _ in body:  # read the rest (the pack) so git hears the answer, not a reset
                    pass
            messages = [f"longshot-gateway: refused {ref}: {reason}" for ref, reason in refused
                        if not reason.startswith("not updated")]
            payload = pktline.report(results, sideband=commands.sideband, messages=messages)
            return web.Response(body=payload, content_type="application/x-git-receive-pack-result",
                                headers={"Cache-Control": "no-cache"})

        ti = caller.task_input
        repo = caller.build_spec.get("repository") or {}
        enforce = (caller.build_spec.get("scope") or {}).get("enforce") is True
        hook_env = {**up.env, "LONGSHOT_GATEWAY_UPSTREAM_URL": up.url,
                    "LONGSHOT_GATEWAY_ALLOWED_REFS": " ".join(policy.allowed),
                    "LONGSHOT_GATEWAY_GIT_TIMEOUT": str(self.settings.git_timeout_seconds),
                    **refpolicy.scope_env(policy, enforce=enforce, scope=ti.scope,
                                          base_branches=(ti.base_branch, str(repo.get("baseBranch") or "")),
                                          stack_commits=(s.commit for s in ti.stack))}
        # the whole push is received before the mirror's push lock is taken: an agent that sends slowly must not
        # hold up every clone of its build's repository
        spool = tempfile.SpooledTemporaryFile(max_size=16 * CHUNK, dir=str(self.root))  # noqa: SIM115 (closed below)

        async def whole() -> AsyncIterator[bytes]:
            while chunk := spool.read(CHUNK):
                yield chunk

        try:
            try:
                with stage("receive"):
                    spool.write(bytes(buf))
                    async for chunk in body:
                        spool.write(chunk)
            except RequestTooLarge:
                raise web.HTTPRequestEntityTooLarge(max_size=self.settings.max_push_bytes, actual_size=-1) from None
            spool.seek(0)
            # the credential reaches only the hook's push, through a 0600 file removed when the push is over:
            # receive-pack and the index-pack it runs on the agent's pack see its path, never the credential
            asked = time.monotonic()
            async with self.mirror_lock(up).push(tuple(c.ref for c in commands.commands)):
                metrics.GIT_STAGE.labels(stage="push_lock").observe(time.monotonic() - asked)
                with self.credential_file(up) as credential, stage("receive_pack"):
                    if credential:
                        hook_env[ghook.CREDENTIALS_FILE] = credential
                    response = await self._backend(request, caller, up, "git-receive-pack", whole(),
                                                   extra_env=hook_env)
        finally:
            spool.close()
        metrics.GIT_PUSHES.labels(result="forwarded").inc()
        self.maintain(up)
        return response

    async def _backend(self, request: web.Request, caller: Caller | Reader, up: Upstream, suffix: str,
                       body: AsyncIterator[bytes] | None, extra_env: Mapping[str, str] | None = None
                       ) -> web.StreamResponse:
        """Run ``git http-backend`` on the mirror for this request and stream its answer."""
        env = {**self.base_env(), **(extra_env or {}),
               "GIT_PROJECT_ROOT": str(self.repos), "GIT_HTTP_EXPORT_ALL": "1",
               "PATH_INFO": f"/{up.key}.git/{suffix}", "QUERY_STRING": request.query_string,
               "REQUEST_METHOD": request.method, "CONTENT_TYPE": request.headers.get("Content-Type", ""),
               "REMOTE_USER": caller.pod, "REMOTE_ADDR": request.remote or "", "GATEWAY_INTERFACE": "CGI/1.1",
               "SERVER_PROTOCOL": "HTTP/1.1"}
        protocol = request.headers.get("Git-Protocol", "")
        if protocol and _GIT_PROTOCOL.match(protocol):
            env["GIT_PROTOCOL"] = protocol
        proc = await asyncio.create_subprocess_exec(
            *gitexec.http_backend(), cwd=self.repos, env=env, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
        failure: list[BaseException] = []

        async def feed() -> None:
            try:
                if body is not None:
                    async for chunk in body:
                        stdin.write(chunk)
                        await stdin.drain()
            except (BrokenPipeError, ConnectionResetError):
                pass
            except Exception as e:  # too large, the client went away: stop git
                failure.append(e)
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            finally:
                with contextlib.suppress(Exception):
                    stdin.close()

        async def drain_stderr() -> bytes:
            data = bytearray()
            while chunk := await stderr.read(CHUNK):
                if len(data) < CHUNK:
                    data += chunk[:CHUNK - len(data)]
            return bytes(data)

        feeder = asyncio.create_task(feed())
        errors = asyncio.create_task(drain_stderr())
        response: web.StreamResponse | None = None
        try:
            head = bytearray()
            while b"\r\n\r\n" not in head and b"\n\n" not in head:
                chunk = await stdout.read(CHUNK)
                if not chunk:
                    break
                head += chunk
                if len(head) > 4 * CHUNK and b"\n\n" not in head and b"\r\n\r\n" not in head:
                    break
            sep = b"\r\n\r\n" if b"\r\n\r\n" in head else b"\n\n"
            if sep not in head:
                await feeder
                detail = sanitize.one_line(up.redact((await errors).decode(errors="replace").strip()))[-400:]
                log.warning("git http-backend failed for %s/%s: %s%s", caller.namespace, caller.build, detail,
                            _why(failure))
                if failure and isinstance(failure[0], RequestTooLarge):
                    raise web.HTTPRequestEntityTooLarge(max_size=self.settings.max_push_bytes, actual_size=-1)
                raise web.HTTPBadGateway(text=f"longshot-gateway: git failed: {detail or 'no output'}\n")
            raw_head, rest = bytes(head).split(sep, 1)
            status, headers = 200, {}
            for line in raw_head.decode(errors="replace").splitlines():
                key, _, value = line.partition(":")
                if key.lower() == "status":
                    status = int(value.split()[0])
                elif key and key.lower() not in ("content-length", "transfer-encoding", "connection"):
                    headers[key.strip()] = value.strip()
            response = web.StreamResponse(status=status, headers=headers)
            await response.prepare(request)
            if rest:
                await response.write(rest)
            while chunk := await stdout.read(CHUNK):
                await response.write(chunk)
            await feeder
            code = await proc.wait()
            if code != 0 or failure:
                detail = sanitize.one_line(up.redact((await errors).decode(errors="replace").strip()))[-400:]
                log.warning("git http-backend exited %s for %s/%s: %s%s", code, caller.namespace, caller.build,
                            detail, _why(failure))
            await response.write_eof()
            return response
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
            feeder.cancel()
            errors.cancel()


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (0600) unless it holds it already; atomically, for concurrent readers."""
    try:
        if path.read_text() == text:
            return
    except FileNotFoundError:
        pass
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def read_env(caller: Caller | Reader) -> dict[str, str]:
    """The environment of a clone's or fetch's ``git http-backend``: the build's other task branches hidden from it
    (:func:`refpolicy.read_config`), as ``GIT_CONFIG_COUNT`` entries git reads after every config file."""
    if isinstance(caller, Caller):
        if caller.role == "reviewer":  # a judge reads its candidates' branches, which the operator tells it only
            return {}
        # the task input as the gateway derives it from the task alone: its stack and candidates are not in it (a
        # stacked worker fetches its dependencies' commits by id)
        visible = [caller.task_input.branch, caller.task_input.base_branch]
    else:
        visible = [str((caller.build_spec.get("repository") or {}).get("baseBranch") or "")]
    entries = refpolicy.read_config(caller.namespace, caller.build, visible)
    env = {"GIT_CONFIG_COUNT": str(len(entries))}
    for i, (key, value) in enumerate(entries):
        env[f"GIT_CONFIG_KEY_{i}"], env[f"GIT_CONFIG_VALUE_{i}"] = key, value
    return env


def _retrieved(task: asyncio.Task[None]) -> None:
    """A shared fetch's outcome is its waiters' (each sees its error); read here too, so that a fetch whose
    waiters all went away is not reported as an error never retrieved."""
    if not task.cancelled():
        task.exception()


def _why(failure: list[BaseException]) -> str:
    """Why the gateway stopped git itself (reading the request body failed), for the log."""
    return f" (request body: {type(failure[0]).__name__}: {str(failure[0])[:200]})" if failure else ""


def repack_due(path: Path) -> bool:
    """Whether the mirror at ``path`` holds more than :data:`REPACK_PACKS` packs or about :data:`REPACK_LOOSE` loose
    objects (two directory listings: cheap enough after every write)."""
    try:
        packs = sum(1 for e in os.scandir(path / "objects" / "pack") if e.name.endswith(".pack"))
    except FileNotFoundError:
        return False
    if packs > REPACK_PACKS:
        return True
    try:
        loose = sum(1 for e in os.scandir(path / "objects" / "17") if len(e.name) == 38)
    except FileNotFoundError:
        return False
    return loose > REPACK_LOOSE // 256


async def _body(request: web.Request, limit: int) -> AsyncIterator[bytes]:
    """The request body in bounded chunks; RequestTooLarge past ``limit``. A gzip-encoded body (git gzips
    upload-pack requests over 1 KiB: a fetch with a few dozen refs) arrives already inflated: aiohttp's server
    decompresses request payloads by their Content-Encoding, so ``limit`` counts inflated bytes."""
    total = 0
    async for chunk in request.content.iter_chunked(CHUNK):
        total += len(chunk)
        if total > limit:
            raise RequestTooLarge()
        if chunk:
            yield chunk
