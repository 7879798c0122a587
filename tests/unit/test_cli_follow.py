"""``logs -f`` and ``tree -w`` against a fake behind the plugin's own interface (``cli.Kube``'s ``watch``,
``follow_log``, ``list_versioned``): the cases the real API server does not stage easily (a container that starts
late or never, an end recorded late or never, an expired watch, Ctrl-C). tests/integration/test_cli.py runs both
against the real API server (a Pod log that grows, served by a kubelet's log endpoint there)."""

from __future__ import annotations

import io
import threading
import types
from collections.abc import Iterator
from typing import Any

import kubernetes
import pytest
import urllib3

from longshot.cli import follow
from longshot.cli import main as cli

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def use(monkeypatch: pytest.MonkeyPatch, clock: Clock) -> None:
    """The plugin's clock and pauses are ``clock``'s (its module's names only: nothing else's time moves)."""
    monkeypatch.setattr(cli, "time", types.SimpleNamespace(monotonic=clock, time=lambda: 0.0))
    monkeypatch.setattr(cli, "threading", types.SimpleNamespace(Event=lambda: types.SimpleNamespace(wait=clock.pause)))


def task_obj(attempts: list[dict[str, Any]], rv: str = "1") -> dict[str, Any]:
    return {"metadata": {"name": "b-t", "resourceVersion": rv, "creationTimestamp": "x"},
            "spec": {"buildRef": {"name": "b"}}, "status": {"phase": "Running", "attempts": attempts}}


RUNNING = {"number": 2, "pod": "b-t-a2", "startTime": "t0"}
ENDED = {**RUNNING, "endTime": "t1", "exitReason": "Completed", "ledger": "b-t-a2-ledger"}


class FakeKube(cli.Kube):
    """A task whose attempt 2 runs: its Pod's log is ``lines`` (a 400 ``starting`` times first: the container has
    not started), and the watch of the task then brings ``after`` (the attempt's end)."""

    def __init__(self, lines: list[str], after: list[dict[str, Any]], *, starting: int = 0,
                 ledger: bool = True) -> None:
        super().__init__(api=None, namespace="ns")  # type: ignore[arg-type]
        self.lines, self.after, self.starting, self.ledger = lines, after, starting, ledger
        self.task = task_obj([{"number": 1, "pod": "b-t-a1", "endTime": "t"}, RUNNING])
        self.followed: list[str] = []

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        return self.task if (kind, name) == ("AgentTask", "b-t") else None

    def list_versioned(self, kind: str, *, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        assert (kind, field_selector) == ("AgentTask", "metadata.name=b-t")
        return [self.task], "5"

    def watch(self, kind: str, resource_version: str, streams: follow.Streams, *, field_selector: str | None = None,
              timeout_seconds: int = follow.WATCH_SECONDS) -> Iterator[tuple[str, dict[str, Any]]]:
        assert resource_version == "5" and timeout_seconds <= follow.END_WAIT
        for obj in self.after:
            yield "MODIFIED", obj
        self.after = []

    def follow_log(self, pod: str, container: str, streams: follow.Streams) -> Iterator[str]:
        self.followed.append(pod)
        if self.starting:
            self.starting -= 1
            raise kubernetes.client.ApiException(status=400, reason="container agent is waiting to start")
        for line in self.lines:
            if streams.stopped.is_set():  # as the real read: a stop() ends it
                return
            yield line

    def configmap(self, name: str) -> dict[str, Any] | None:
        if not self.ledger or name != "b-t-a2-ledger":
            return None
        return {"data": {"result.json": '{"exitCode": 0, "endTime": "t1"}'}}


def logs_f(kube: FakeKube, *extra: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = cli.main(["logs", "b-t", "-f", *extra], out=out, err=err, kube=kube)
    return code, out.getvalue(), err.getvalue()


def test_follow_prints_the_growing_log_cleaned_then_the_result_and_where_the_ledger_entry_is():
    kube = FakeKube(['{"type": "text"}\n', "\x1b]0;title\x07half\r\n", "done\n"],
                    [task_obj([RUNNING], "6"), task_obj([ENDED], "7")])
    code, out, err = logs_f(kube)
    assert code == 0 and kube.followed == ["b-t-a2"]
    assert out == '{"type": "text"}\nhalf\ndone\n{"type": "result", "exitCode": 0, "endTime": "t1"}\n'
    assert err == ("attempt 2 ended (Completed); its transcript is kept in the ledger entry ConfigMap "
                   "ns/b-t-a2-ledger (kubectl longshot logs b-t --attempt 2 --ledger)\n")


def test_follow_raw_keeps_the_log_as_it_is():
    kube = FakeKube(["\x1b[31mred\x1b[0m\n"], [task_obj([ENDED], "7")])
    code, out, _ = logs_f(kube, "--raw")
    assert code == 0 and out.startswith("\x1b[31mred\x1b[0m\n")


def test_follow_waits_for_the_container_to_start(monkeypatch):
    clock = Clock()
    use(monkeypatch, clock)
    kube = FakeKube(["hello\n"], [task_obj([ENDED], "7")], starting=3)
    code, out, _ = logs_f(kube)
    assert code == 0 and out.startswith("hello\n") and kube.followed == ["b-t-a2"] * 4 and clock.now == 3.0


def test_follow_gives_up_on_a_container_that_never_starts(monkeypatch):
    clock = Clock()
    use(monkeypatch, clock)
    kube = FakeKube([], [], starting=10_000)
    code, _, err = logs_f(kube)
    assert code == 1 and err.startswith("error: the API server refused (400): container agent is waiting to start")
    assert len(kube.followed) == follow.POD_START + 1


def test_an_end_not_recorded_in_time_says_how_to_read_the_entry_later(monkeypatch):
    clock = Clock()
    use(monkeypatch, clock)
    kube = FakeKube(["x\n"], [])
    calls = {"n": 0}
    plain = kube.watch

    def slow_watch(*args: Any, **kwargs: Any) -> Iterator[tuple[str, dict[str, Any]]]:
        calls["n"] += 1
        clock.pause(follow.END_WAIT / 2)  # each watch request ends at its timeout with nothing
        yield from plain(*args, **kwargs)

    kube.watch = slow_watch  # type: ignore[method-assign]
    code, out, err = logs_f(kube)
    assert code == 0 and out == "x\n" and calls["n"] == 2
    assert err == ("the log of attempt 2 ended; its end is not recorded yet: run `kubectl longshot logs b-t "
                   "--attempt 2 --ledger` later for its ledger entry\n")


class StopAfterFirst(io.StringIO):
    def __init__(self, streams: follow.Streams) -> None:
        super().__init__()
        self.streams = streams

    def write(self, text: str) -> int:
        n = super().write(text)
        self.streams.stop()
        return n


def test_a_callers_stop_ends_the_follow_at_once_and_waits_for_no_end():
    streams = follow.Streams()
    kube = FakeKube(["one\n", "two\n", "three\n"], [task_obj([ENDED], "7")])
    out, clock = StopAfterFirst(streams), Clock()
    record = follow.follow_attempt(kube, "b-t", 2, "b-t-a2", cli.CleanOutput(out), raw=False, clock=clock,
                                   pause=clock.pause, streams=streams)
    assert record is None and out.getvalue() == "one\n"
    assert kube.after == [task_obj([ENDED], "7")] and clock.now == 0  # no watch of the end, no pause


def test_a_callers_stop_ends_the_wait_for_a_container_that_has_not_started():
    streams = follow.Streams()
    kube = FakeKube(["one\n"], [], starting=30)
    clock = Clock()

    def pause(seconds: float) -> None:
        clock.pause(seconds)
        streams.stop()

    record = follow.follow_attempt(kube, "b-t", 2, "b-t-a2", cli.CleanOutput(io.StringIO()), raw=False, clock=clock,
                                   pause=pause, streams=streams)
    assert record is None and kube.followed == ["b-t-a2"]  # asked once, then stopped


def test_an_attempt_without_a_ledger_entry_says_so():
    kube = FakeKube(["x\n"], [task_obj([ENDED], "7")], ledger=False)
    code, out, err = logs_f(kube)
    assert code == 0 and out == "x\n"
    assert err == "attempt 2 ended (Completed); it has no ledger entry (ConfigMap 'b-t-a2-ledger' not found)\n"


def test_follow_on_a_finished_attempt_is_plain_logs():
    kube = FakeKube(["never\n"], [])
    kube.task = task_obj([ENDED])
    kube.pod_log = lambda name, container, tail: "the whole log\n"  # type: ignore[method-assign]
    code, out, _ = logs_f(kube)
    assert code == 0 and out == "the whole log\n" and kube.followed == []


# --- tree -w against a fake ---------------------------------------------------------------------------


def br(phase: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": "b", "resourceVersion": rv}, "spec": {}, "status": {"phase": phase}}


class WatchKube(cli.Kube):
    """Scripted watches: each ``watch(kind)`` call takes the next script of that kind (events, an exception, or a
    ``threading.Event`` to wait for first); with no script left it blocks until ``streams.stop()``."""

    def __init__(self, scripts: dict[str, list[list[Any]]], lists: dict[str, list[list[dict[str, Any]]]]) -> None:
        super().__init__(api=None, namespace="ns")  # type: ignore[arg-type]
        self.scripts, self.lists = scripts, lists
        self.stopped = threading.Event()

    def list_versioned(self, kind: str, *, field_selector: str | None = None) -> tuple[list[dict[str, Any]], str]:
        return self.lists[kind].pop(0), "1"

    def must(self, kind: str, name: str) -> dict[str, Any]:
        raise cli.CLIError(f"{kind} {name!r} not found in namespace 'ns'")

    def watch(self, kind: str, resource_version: str, streams: follow.Streams, *, field_selector: str | None = None,
              timeout_seconds: int = follow.WATCH_SECONDS) -> Iterator[tuple[str, dict[str, Any]]]:
        script = self.scripts[kind].pop(0) if self.scripts.get(kind) else None
        if script is None:
            streams.stopped.wait(30)
            self.stopped.set()
            return
        for step in script:
            if isinstance(step, threading.Event):
                step.wait(30)
            elif isinstance(step, BaseException):
                raise step
            else:
                yield step


def test_tree_watch_lists_again_after_an_expired_watch_and_ends_when_the_build_is_terminal():
    drew_running = threading.Event()
    kube = WatchKube(
        scripts={"AgentTask": [[kubernetes.client.ApiException(status=410, reason="Expired")]],
                 "BuildRequest": [[drew_running, ("MODIFIED", br("Succeeded", "9"))]]},
        lists={"BuildRequest": [[br("Working", "1")]], "MergeJob": [[]],
               "AgentTask": [[task_obj([RUNNING])], [{**task_obj([ENDED]), "status": {"phase": "Succeeded",
                                                                                      "attempts": [ENDED]}}]]})
    frames: list[str] = []

    def frame(out: cli.CleanOutput, text: str, first: bool) -> None:
        frames.append(text)
        if "AgentTask/b-t  worker  Succeeded" in text:
            drew_running.set()

    out, err = cli.CleanOutput(io.StringIO()), cli.CleanOutput(io.StringIO())
    code = follow.watch_tree(kube, "b", out, err, limit=60, clock=Clock(), frame=frame)
    assert code == 0 and len(frames) == 3
    assert "Working" in frames[0] and "AgentTask/b-t  worker  Running" in frames[0]
    assert "AgentTask/b-t  worker  Succeeded" in frames[1] and frames[2].startswith("BuildRequest/b  Succeeded")
    assert kube.stopped.wait(10)  # the idle MergeJob watch was closed when the loop ended


def test_tree_watch_of_a_missing_build_is_an_error():
    kube = WatchKube(scripts={}, lists={"BuildRequest": [[]]})
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["tree", "nope", "-w"], out=out, err=err, kube=kube) == 1
    assert err.getvalue() == "error: BuildRequest 'nope' not found in namespace 'ns'\n"


def test_ctrl_c_ends_tree_watch_with_130_and_closes_the_watches(monkeypatch):
    def frame(out: cli.CleanOutput, text: str, first: bool) -> None:
        out.write(text)
        if not first:  # Ctrl-C while the redraw of the first change is on the screen
            raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_frame", frame)
    kube = WatchKube(scripts={"AgentTask": [[("ADDED", task_obj([RUNNING]))]]},
                     lists={"BuildRequest": [[br("Working", "1")]], "MergeJob": [[]], "AgentTask": [[]]})
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["tree", "b", "-w"], out=out, err=err, kube=kube) == 130
    assert "AgentTask/b-t  worker  Running" in out.getvalue() and err.getvalue() == ""
    assert kube.stopped.wait(10)  # the watches still open were closed


def test_a_failing_watch_ends_tree_watch_with_its_sentence():
    forbidden = kubernetes.client.ApiException(status=403, reason="Forbidden")
    kube = WatchKube(scripts={"MergeJob": [[forbidden]]},
                     lists={"BuildRequest": [[br("Working", "1")]], "MergeJob": [[]], "AgentTask": [[]]})
    out, err = io.StringIO(), io.StringIO()
    assert cli.main(["tree", "b", "-w"], out=out, err=err, kube=kube) == 1
    assert err.getvalue() == "error: the API server refused (403 Forbidden): Forbidden\n"


def test_a_terminal_build_is_drawn_once_and_not_watched():
    kube = WatchKube(scripts={}, lists={"BuildRequest": [[br("Failed", "1")]], "MergeJob": [[]], "AgentTask": [[]]})
    out = io.StringIO()
    assert cli.main(["tree", "b", "-w"], out=out, err=io.StringIO(), kube=kube) == 0
    assert out.getvalue().count("BuildRequest/b  Failed") == 1 and not kube.stopped.is_set()


def test_tree_watch_takes_no_structured_output():
    out, err = io.StringIO(), io.StringIO()
    kube = WatchKube(scripts={}, lists={})
    assert cli.main(["tree", "b", "-w", "-o", "json"], out=out, err=err, kube=kube) == 1
    assert "drop -w or -o" in err.getvalue()


# --- the stream reader behind Kube.follow_log and Kube.watch ------------------------------------------


class Resp:
    """A streamed urllib3 answer: its status and its chunks (as urllib3's ``stream`` gives them)."""

    def __init__(self, chunks: list[bytes], status: int = 200, data: bytes = b"") -> None:
        self.chunks, self.status, self.reason, self.data, self.headers = chunks, status, "Bad Request", data, {}
        self.released = False

    def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
        yield from self.chunks

    def release_conn(self) -> None:
        self.released = True


def test_a_streamed_log_is_split_into_lines_across_chunks_empty_lines_kept():
    resp = Resp([b"one\ntw", b"o\n\nthr", "é\n".encode()[:1], "é\n".encode()[1:], b"last"])
    lines = list(cli._lines(resp, follow.Streams(), text=True))
    assert lines == ["one", "two", "", "thré", "last"] and resp.released


def test_a_log_without_newlines_is_given_in_bounded_pieces(monkeypatch):
    monkeypatch.setattr(cli, "MAX_LOG_LINE", 4)
    resp = Resp([b"abcdefghij", b"k\nshort\n"])
    assert list(cli._lines(resp, follow.Streams(), text=True)) == ["abcd", "efgh", "ijk", "short"]


def test_watch_lines_skip_empty_ones_and_an_error_event_raises_with_its_code():
    resp = Resp([b'{"type": "ADDED", "object": {"metadata": {"name": "a"}}}\n\n',
                 b'{"type": "ERROR", "object": {"kind": "Status", "code": 410, "reason": "Expired", '
                 b'"message": "too old resource version"}}\n'])
    events = (cli._watch_event(line) for line in cli._lines(resp, follow.Streams()))
    assert next(events) == ("ADDED", {"metadata": {"name": "a"}})
    with pytest.raises(kubernetes.client.ApiException) as e:
        next(events)
    assert e.value.status == 410 and "too old resource version" in str(e.value.body)


def test_a_refused_stream_raises_the_api_servers_answer():
    resp = Resp([], status=400, data=b'{"kind": "Status", "message": "container agent is waiting to start"}')
    with pytest.raises(kubernetes.client.ApiException) as e:
        list(cli._lines(resp, follow.Streams(), text=True))
    assert e.value.status == 400 and resp.released
    assert "waiting to start" in cli.errors.sentence(e.value)


def test_a_stopped_stream_ends_quietly():
    streams = follow.Streams()

    class Cut(Resp):
        def stream(self, amt: Any = None, decode_content: bool = False) -> Iterator[bytes]:
            yield b"a\n"
            streams.stop()
            raise urllib3.exceptions.ProtocolError("shut down under the read")

        def shutdown(self) -> None:
            self.shut = True

    resp = Cut([])
    assert list(cli._lines(resp, streams, text=True)) == ["a"] and resp.shut and resp.released


def test_tree_watch_drawings_go_through_the_clean_door():
    evil = "\x1b]0;pwned\x07\x1b[2Jgpt\u202e\r"
    attempt = {**ENDED, "model": evil, "exitReason": evil}
    kube = WatchKube(scripts={}, lists={"BuildRequest": [[br("Failed", "1")]], "MergeJob": [[]],
                                         "AgentTask": [[task_obj([attempt])]]})
    out = io.StringIO()
    assert cli.main(["tree", "b", "-w"], out=out, err=io.StringIO(), kube=kube) == 0
    drawn = out.getvalue()
    assert "model=gpt" in drawn and not [c for c in drawn if (ord(c) < 0x20 and c != "\n") or c == "\u202e"]


def test_a_terminal_is_cleared_with_a_fixed_sequence_and_a_pipe_is_not():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty, pipe = Tty(), io.StringIO()
    cli._frame(cli.CleanOutput(tty), "BuildRequest/b  Working\x1b[31m\n", False)
    cli._frame(cli.CleanOutput(pipe), "BuildRequest/b  Working\n", False)
    assert tty.getvalue().startswith("\x1b[H\x1b[2J") and tty.getvalue().count("\x1b") == 2
    assert pipe.getvalue().startswith("\n") and "\x1b" not in pipe.getvalue()
