"""A sentence in the docs is a promise: every ``make`` target, repository path and metric name that README.md and
docs/*.md mention exists.

* ``make <target>`` must be a target of the Makefile;
* a backticked repository path (``hack/bench_cache.py``, ``charts/longshot/values.yaml``, ``docs/install.md``, and
  package paths such as ``core/mergequeue.py`` under ``operator/longshot/``) and a relative Markdown link must exist;
* a metric name ``longshot_*`` must be defined in ``operator/longshot/metrics.py`` or
  ``operator/longshot/gateway/metrics.py`` (a histogram's ``_bucket``, ``_sum`` and ``_count`` series included).

Paths that only exist at run time, and targets promised by work that has not landed yet, are listed below, with why.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
PACKAGE = ROOT / "operator" / "longshot"

TOP = ("operator/", "hack/", "charts/", "docs/", "tests/", "crds/", "examples/", "images/", ".ci/", "_artifacts/")
"""A backticked token starting with one of these is a path in the repository."""
TOP_FILES = frozenset({"Makefile", "pyproject.toml", "README.md", "CHANGELOG.md", ".importlinter", "skaffold.yaml"})
IN_PACKAGE = ("api/", "core/", "controllers/", "runtime/", "vcs/", "agent/", "gateway/", "testing/")
"""A backticked ``<one of these>...py`` is a module of the package (docs say ``core/mergequeue.py``)."""

RUN_TIME_PATHS = frozenset({
    "_artifacts",  # test and benchmark output (ignored by git)
    "build", "dist",  # packaging output (ignored by git)
})
"""Paths the docs name that are created at run time, not committed."""
PENDING_PATHS: frozenset[str] = frozenset()
"""Files the README promises and another change of the same session adds; remove a name once it lands."""
PENDING_TARGETS: frozenset[str] = frozenset()
"""Targets the README promises and another change of the same session adds; remove a name once it lands."""

TARGET = re.compile(r"^([a-zA-Z0-9_.-]+):", re.MULTILINE)
TICKED = re.compile(r"`([^`\s]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
METRIC = re.compile(r"\blongshot_(?!testing\b)[a-z0-9_]+")  # longshot_testing is the test support package
DEFINED = re.compile(r"""["'](longshot_[a-z0-9_]+)["']""")


def mentions(pattern: re.Pattern[str], group: int = 1) -> list[tuple[str, str]]:
    return [(doc.relative_to(ROOT).as_posix(), m.group(group)) for doc in DOCS
            for m in pattern.finditer(doc.read_text(encoding="utf-8"))]


def makefile_targets() -> set[str]:
    return set(TARGET.findall((ROOT / "Makefile").read_text(encoding="utf-8")))


def mentioned_targets(docs: list[Path] = DOCS) -> list[tuple[str, str]]:
    """Every ```make X``` in the docs' text, and every ``make X`` command in their code blocks."""
    out: list[tuple[str, str]] = []
    for doc in docs:
        text = doc.read_text(encoding="utf-8")
        for m in re.finditer(r"`make ([a-z0-9][a-z0-9_-]*)", text):
            out.append((doc.name, m.group(1)))
        for block in re.findall(r"```[a-z]*\n(.*?)```", text, re.DOTALL):
            for line in block.splitlines():
                m = re.match(r"\s*(?:\$ )?(?:\S+=\S+ )*make ([a-z0-9][a-z0-9_-]*)", line)
                if m:
                    out.append((doc.name, m.group(1)))
    return out


def candidate_path(token: str) -> str | None:
    """The repository path a backticked token names, or None when it is not one (a glob, a placeholder, a URL)."""
    token = token.strip(".,;:()")
    token = token.split("::", 1)[0].split("#", 1)[0]
    token = re.sub(r":\d+(-\d+)?$", "", token)
    if any(c in token for c in "*<>{}$|") or "..." in token or "://" in token or not token:
        return None
    if token in TOP_FILES or token.startswith(TOP):
        return token
    if token.startswith(IN_PACKAGE) and token.endswith(".py"):
        return f"operator/longshot/{token}"
    return None


def linked_path(doc: str, link: str) -> str | None:
    link = link.split("#", 1)[0]
    if not link or "://" in link or link.startswith("mailto:"):
        return None
    base = (ROOT / doc).parent
    return (base / link).resolve().relative_to(ROOT).as_posix()


def defined_metrics() -> set[str]:
    names: set[str] = set()
    for f in (PACKAGE / "metrics.py", PACKAGE / "gateway" / "metrics.py"):
        names |= set(DEFINED.findall(f.read_text(encoding="utf-8")))
    return names


def test_every_make_target_the_docs_mention_exists():
    targets = makefile_targets()
    mentioned = mentioned_targets()
    assert any(t == "demo" for _, t in mentioned) and any(t == "test" for _, t in mentioned)  # the reader works
    missing = sorted({f"{doc}: make {t}" for doc, t in mentioned if t not in targets and t not in PENDING_TARGETS})
    assert not missing, "the docs name make targets the Makefile does not have:\n" + "\n".join(missing)


def test_every_repository_path_the_docs_mention_exists():
    named = [(doc, p) for doc, tok in mentions(TICKED) if (p := candidate_path(tok)) is not None]
    named += [(doc, p) for doc, link in mentions(LINK) if (p := linked_path(doc, link)) is not None]
    assert len(named) > 50  # the reader finds paths at all
    missing = sorted({f"{doc}: {p}" for doc, p in named
                      if p.rstrip("/") not in RUN_TIME_PATHS | PENDING_PATHS and not (ROOT / p).exists()})
    assert not missing, "the docs name files that do not exist:\n" + "\n".join(missing)


def test_every_metric_the_docs_mention_is_defined():
    defined = defined_metrics()
    assert "longshot_tokens_total" in defined  # the reader works
    series = defined | {f"{n}{s}" for n in defined for s in ("_bucket", "_sum", "_count")}
    missing = sorted({f"{doc}: {name}" for doc, name in mentions(METRIC, 0) if name not in series})
    assert not missing, "the docs name metrics that are not defined:\n" + "\n".join(missing)


@pytest.mark.parametrize("text,expected", [
    ("run `make bench-nothing` now", {"bench-nothing"}),
    ("```bash\nmake demo   # the demo\nLONGSHOT_CLUSTER=kind make demo-nothing\n```", {"demo", "demo-nothing"}),
])
def test_the_target_reader_finds_a_missing_target(tmp_path, text, expected):
    doc = tmp_path / "README.md"
    doc.write_text(text)
    assert {t for _, t in mentioned_targets([doc])} == expected
    assert not expected <= makefile_targets()


def test_the_path_and_metric_readers_find_what_is_missing():
    assert candidate_path("hack/no_such_bench.py") == "hack/no_such_bench.py"
    assert not (ROOT / "hack/no_such_bench.py").exists()
    assert candidate_path("core/mergequeue.py") == "operator/longshot/core/mergequeue.py"
    assert candidate_path("crds/*.yaml") is None and candidate_path("longshot/<build>/<task>") is None
    assert linked_path("docs/controller.md", "install.md#rbac") == "docs/install.md"
    assert METRIC.findall("see longshot_no_such_metric_total") == ["longshot_no_such_metric_total"]
    assert "longshot_no_such_metric_total" not in defined_metrics()


README_MAX_LINES = 250
"""The README is a front door (what Longshot is, the quickstart, the two commands, Helm, an example, links); history
goes to CHANGELOG.md and per-run figures to docs/benchmarks.md."""
HISTORY = re.compile(r"^#+ .*(new since|before that|last stop|this session|diary)", re.IGNORECASE | re.MULTILINE)


def front_door_problems(text: str) -> list[str]:
    problems = []
    lines = text.count("\n")
    if lines > README_MAX_LINES:
        problems.append(f"{lines} lines, over {README_MAX_LINES}: move detail to docs/ and history to CHANGELOG.md")
    problems += [f"a history heading: {m.group(0)!r} (CHANGELOG.md)" for m in HISTORY.finditer(text)]
    for row in (r for r in text.splitlines() if r.startswith("| `make bench-")):
        if len(row) > 1200:
            problems.append(f"a benchmark row of {len(row)} characters (its last line and target; the rest in docs/)")
    for needed in ("make demo", "make test", "helm install", "kind: BuildRequest", "CHANGELOG.md"):
        if needed not in text:
            problems.append(f"no {needed!r}")
    return problems


def test_the_readme_is_a_front_door():
    problems = front_door_problems((ROOT / "README.md").read_text(encoding="utf-8"))
    assert not problems, "README.md:\n" + "\n".join(problems)


def test_the_front_door_check_finds_history_and_length():
    good = "make demo\nmake test\nhelm install\nkind: BuildRequest\nCHANGELOG.md\n"
    assert front_door_problems(good) == []
    assert any("history heading" in p for p in front_door_problems(good + "## New since the last stop\n"))
    assert any("lines, over" in p for p in front_door_problems(good + "x\n" * README_MAX_LINES))
    assert any("benchmark row" in p for p in front_door_problems(good + "| `make bench-x` | " + "y" * 1300 + " |\n"))
