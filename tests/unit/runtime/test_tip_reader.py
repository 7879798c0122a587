"""The branch-tip reads of ended workers' handoffs: coalesced per repository, each served by a call that started after
it was asked, failures given to the reads a call carried."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from longshot.runtime import handoffs

pytestmark = pytest.mark.unit


def build(url: str = "https://git.example/r.git", secret: str = "git") -> dict[str, Any]:
    return {"metadata": {"namespace": "ns", "name": "b"},
            "spec": {"repository": {"url": url, "credentialsSecret": secret}}}


class Forge:
    """A repository whose ls-remote blocks until released, and says which branches each call asked for."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[str, ...]]] = []
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)
        self.tips: dict[str, str] = {}
        self.fail = False

    def read(self, k: Any, b: Mapping[str, Any], branches: Sequence[str]) -> dict[str, str | None]:
        self.calls.append((b["spec"]["repository"]["url"], tuple(branches)))
        seen = dict(self.tips)  # what the repository holds when the call starts
        self.entered.release()
        self.gate.wait(10)
        if self.fail:
            raise handoffs.TipUnknown("git ls-remote exited 128")
        return {br: seen.get(br) for br in branches}


async def entered(forge: Forge) -> None:
    assert await asyncio.to_thread(forge.entered.acquire, True, 10), "no ls-remote started"


async def test_reads_asked_while_a_call_runs_share_the_next_call_which_starts_after_them():
    forge = Forge()
    forge.tips = {"t1": "a" * 40, "t2": "b" * 40}
    reader = handoffs.TipReader(forge.read)
    first = asyncio.create_task(reader.tip(None, build(), "t1"))  # type: ignore[arg-type]
    await entered(forge)  # the first call runs: t1's Pod ended before it started
    forge.tips["t1"] = "c" * 40  # (a read asked now must not be answered by the call already running)
    later = [asyncio.create_task(reader.tip(None, build(), b)) for b in ("t1", "t2", "t3")]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    forge.gate.set()
    assert await first == "a" * 40
    assert await asyncio.gather(*later) == ["c" * 40, "b" * 40, None]
    assert forge.calls == [("https://git.example/r.git", ("t1",)),
                           ("https://git.example/r.git", ("t1", "t2", "t3"))]
    assert reader.calls == 2


async def test_repositories_are_read_apart_and_a_failed_call_fails_only_the_reads_it_carried():
    forge = Forge()
    forge.gate.set()
    forge.fail = True
    reader = handoffs.TipReader(forge.read)
    with pytest.raises(handoffs.TipUnknown, match="exited 128"):
        await reader.tip(None, build(), "t1")  # type: ignore[arg-type]
    forge.fail = False
    forge.tips = {"t1": "d" * 40}
    got = await asyncio.gather(reader.tip(None, build(), "t1"),  # type: ignore[arg-type]
                               reader.tip(None, build("https://git.example/other.git"), "t1"))  # type: ignore[arg-type]
    assert got == ["d" * 40, "d" * 40]
    assert sorted(u for u, _ in forge.calls[1:]) == ["https://git.example/other.git", "https://git.example/r.git"]


async def test_a_call_asks_for_at_most_its_share_of_branches(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(handoffs, "TIPS_PER_CALL", 2)
    forge = Forge()
    reader = handoffs.TipReader(forge.read)
    tasks = [asyncio.create_task(reader.tip(None, build(), f"t{i}")) for i in range(5)]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    forge.gate.set()
    assert await asyncio.gather(*tasks) == [None] * 5
    assert [len(b) for _, b in forge.calls] == [2, 2, 1]


class _Kube:
    def get_secret(self, namespace: str, name: str) -> dict[str, str]:
        raise AssertionError("a refused URL reads no Secret")


def test_a_tip_read_is_held_to_the_egress_policy_before_any_git_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from longshot.core import egress
    from longshot.net import guard as gd

    def no_git(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("git ran for a refused URL")

    monkeypatch.setattr(handoffs.subprocess, "run", no_git)
    guard = gd.Guard(egress.Policy.parse(allowed_hosts="github.com"), resolve=lambda h, p: ["140.82.112.3"])
    with pytest.raises(handoffs.TipUnknown, match=r"spec\.repository\.url"):
        handoffs.branch_tips(_Kube(), build("http://169.254.169.254/r.git"), ["main"], egress=guard)  # type: ignore[arg-type]

    # the TipReader asks the guard it is given at each call (the operator's Context.egress)
    seen: list[Any] = []

    def read(k: Any, b: Mapping[str, Any], branches: Sequence[str], *, egress: Any = None) -> dict[str, str | None]:
        seen.append(egress)
        return dict.fromkeys(branches)

    monkeypatch.setattr(handoffs, "branch_tips", read)
    reader = handoffs.TipReader(egress=lambda: guard)
    assert asyncio.run(reader.tip(_Kube(), build(), "main")) is None  # type: ignore[arg-type]
    assert seen == [guard]
