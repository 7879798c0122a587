"""The two commands of ``kubectl longshot`` that keep going: ``tree -w`` and ``logs -f``.

``tree -w`` lists the build, its namespace's AgentTasks and MergeJobs once, then watches the three (one watch
each, from the list's resourceVersion; a watch that expires, 410 Gone, lists again), folds every event into
``view.Watched`` and redraws the tree when it changed. It ends when the build reaches a terminal phase (or is
deleted), at Ctrl-C, or after ``--watch-timeout`` seconds: bounded in time, and in memory by what the namespace
holds (events wait in a queue of ``QUEUE`` at most; a full queue holds the watch back, not the memory).

``logs -f`` follows the running attempt's Pod log (waiting up to ``POD_START`` seconds for its container to
start), and when the log ends, waits up to ``END_WAIT`` seconds (a watch of the AgentTask) for the attempt's end to
be recorded, then prints its ``result`` line from its ledger entry and says on stderr where the entry is, as
``logs`` does for a finished attempt.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol

import kubernetes

from longshot.cli import view

if TYPE_CHECKING:
    from longshot.cli.main import CleanOutput

QUEUE = 10_000
"""Watch events waiting to be drawn, at most."""
WATCH_SECONDS = 50
"""One watch request's length (the API server ends it; the next starts from the last resourceVersion)."""
POD_START = 60.0
"""How long ``logs -f`` waits for the attempt's container to start."""
END_WAIT = 60.0
"""How long ``logs -f`` waits, after the log ended, for the attempt's end to be recorded."""


class Streams:
    """The open watch and log responses, so that one ``stop()`` ends them all from any thread (a blocked read
    returns at once)."""

    def __init__(self) -> None:
        self.stopped = threading.Event()
        self._open: set[Any] = set()
        self._lock = threading.Lock()

    def hold(self, resp: Any) -> None:
        with self._lock:
            self._open.add(resp)
        if self.stopped.is_set():
            self._shut(resp)

    def release(self, resp: Any) -> None:
        with self._lock:
            self._open.discard(resp)
        resp.release_conn()

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            held = list(self._open)
        for resp in held:
            self._shut(resp)

    @staticmethod
    def _shut(resp: Any) -> None:
        shutdown = getattr(resp, "shutdown", None)  # urllib3 >= 2.3: unblocks a read in another thread
        if shutdown is not None:
            shutdown()
        else:
            resp.close()


class Source(Protocol):
    """What the two loops read (``main.Kube``; a fake in the unit tests)."""

    namespace: str

    def must(self, kind: str, name: str) -> dict[str, Any]: ...

    def get(self, kind: str, name: str) -> dict[str, Any] | None: ...

    def list_versioned(self, kind: str, *, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]: ...

    def watch(self, kind: str, resource_version: str, streams: Streams, *, field_selector: str | None = None,
              timeout_seconds: int = WATCH_SECONDS) -> Iterator[tuple[str, dict[str, Any]]]: ...

    def follow_log(self, pod: str, container: str, streams: Streams) -> Iterator[str]: ...


# --- tree -w -----------------------------------------------------------------------------------------


def _pump(k: Source, kind: str, rv: str, selector: str | None, events: queue.Queue[tuple[str, str, Any]],
          streams: Streams) -> None:
    """One kind's watch, restarted where it ended, into ``events`` (``SYNC`` with a fresh list after a 410)."""
    try:
        while not streams.stopped.is_set():
            try:
                for event, obj in k.watch(kind, rv, streams, field_selector=selector):
                    rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                    if event != "BOOKMARK":
                        events.put((kind, event, obj))
            except kubernetes.client.ApiException as e:
                if e.status != 410 or streams.stopped.is_set():
                    raise
                items, rv = k.list_versioned(kind, field_selector=selector)
                events.put((kind, "SYNC", items))
    except Exception as e:  # the main thread says what it was, in one sentence
        if not streams.stopped.is_set():
            events.put(("", "ERROR", e))


def watch_tree(k: Source, name: str, out: CleanOutput, err: CleanOutput, *, limit: float,
               clock: Callable[[], float], frame: Callable[[CleanOutput, str, bool], None]) -> int:
    """``tree BUILD -w``: draw, then redraw on every change until the build is terminal (exit 0), ``limit`` seconds
    passed (exit 0, with a note on stderr) or Ctrl-C (``KeyboardInterrupt`` goes up; the watches are closed)."""
    start = clock()
    by_name = f"metadata.name={name}"
    builds, build_rv = k.list_versioned("BuildRequest", field_selector=by_name)
    state = view.Watched(builds[0] if builds else k.must("BuildRequest", name))  # must: not found, one sentence
    versions = {"BuildRequest": build_rv}
    for kind in ("AgentTask", "MergeJob"):
        items, versions[kind] = k.list_versioned(kind)
        state.replace(kind, items)
    drawn = state.view()
    frame(out, view.tree_text(drawn), True)
    if state.finished:
        return 0
    events: queue.Queue[tuple[str, str, Any]] = queue.Queue(maxsize=QUEUE)
    streams = Streams()
    for kind, rv in versions.items():
        threading.Thread(target=_pump, name=f"watch-{kind}", daemon=True,
                         args=(k, kind, rv, by_name if kind == "BuildRequest" else None, events, streams)).start()
    try:
        while True:
            left = limit - (clock() - start)
            if left <= 0:
                err.write(f"stopped watching after {limit:g} s (--watch-timeout); the build is "
                          f"{(state.build.get('status') or {}).get('phase') or 'Pending'}\n")
                return 0
            try:
                batch = [events.get(timeout=left)]
            except queue.Empty:
                continue
            while len(batch) < QUEUE:  # coalesce what already arrived into one redraw
                try:
                    batch.append(events.get_nowait())
                except queue.Empty:
                    break
            for kind, event, obj in batch:
                if event == "ERROR":
                    raise obj
                if event == "SYNC":
                    if kind == "BuildRequest":
                        if obj:
                            state.apply(kind, "MODIFIED", obj[0])
                        else:
                            state.apply(kind, "DELETED", state.build)
                    else:
                        state.replace(kind, obj)
                else:
                    state.apply(kind, event, obj)
            now = state.view()
            if now != drawn:
                frame(out, view.tree_text(now), False)
                drawn = now
            if state.finished:
                if state.build.get("deleted"):
                    err.write(f"BuildRequest {name!r} was deleted\n")
                return 0
    finally:
        streams.stop()


# --- logs -f -----------------------------------------------------------------------------------------


def _record(task: dict[str, Any] | None, number: int) -> dict[str, Any] | None:
    for a in ((task or {}).get("status") or {}).get("attempts") or []:
        if a.get("number") == number:
            found: dict[str, Any] = a
            return found
    return None


def follow_attempt(k: Source, task: str, number: int, pod: str, out: CleanOutput, *, raw: bool,
                   clock: Callable[[], float], pause: Callable[[float], object],
                   streams: Streams | None = None) -> dict[str, Any] | None:
    """Print the Pod's log as it grows until it ends; then the attempt's record once its end is recorded (None:
    not within ``END_WAIT`` seconds, or stopped).

    ``streams``: the caller's, so that its ``stop()`` from another thread ends the follow promptly (the blocked read
    of the log or of the watch returns; a ``pause`` should be ``streams.stopped.wait``); None: one of its own. Either
    way they are stopped when the follow ends (nothing it opened stays open)."""
    streams = streams or Streams()
    started = clock()
    try:
        while not streams.stopped.is_set():
            try:
                for line in k.follow_log(pod, "agent", streams):
                    (out.raw if raw else out).write(line)
                    out.flush()
                break
            except kubernetes.client.ApiException as e:
                if e.status == 404:  # the Pod is gone already: its end is in the task's status
                    break
                if e.status == 400 and clock() - started < POD_START:  # the container has not started yet
                    pause(1.0)
                    continue
                raise
        if streams.stopped.is_set():
            return None
        record = _record(k.get("AgentTask", task), number)
        if record is not None and record.get("endTime"):
            return record
        deadline = clock() + END_WAIT
        items, rv = k.list_versioned("AgentTask", field_selector=f"metadata.name={task}")
        record = _record(items[0] if items else None, number)
        while (record is None or not record.get("endTime")) and clock() < deadline and not streams.stopped.is_set():
            left = max(1, int(deadline - clock()))
            for event, obj in k.watch("AgentTask", rv, streams, field_selector=f"metadata.name={task}",
                                      timeout_seconds=left):
                rv = (obj.get("metadata") or {}).get("resourceVersion") or rv
                if event in ("ADDED", "MODIFIED"):
                    record = _record(obj, number)
                    if record is not None and record.get("endTime"):
                        return record
        return record if record is not None and record.get("endTime") else None
    finally:
        streams.stop()
