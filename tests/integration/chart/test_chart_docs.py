"""charts/longshot/README.md is what helm-docs writes (``make chart-docs``: hack/chart-docs.sh, helm-docs built at
its pin by hack/go-tools.sh) from README.md.gotmpl and values.yaml's ``# --`` comments, and every value has a
description: the check ``make lint`` runs, as the CRDs' drift check."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]  # a cold build of helm-docs: about a minute

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "longshot"
SCRIPT = ROOT / "hack" / "chart-docs.sh"


@pytest.fixture(scope="module")
def helm_docs() -> Iterator[str]:
    if os.environ.get("HELM_DOCS"):  # a helm-docs binary given, as hack/chart-docs.sh takes it
        yield os.environ["HELM_DOCS"]
        return
    built = subprocess.run(["bash", str(ROOT / "hack" / "go-tools.sh"), "helm-docs"], capture_output=True, text=True,
                           timeout=900, check=False)
    if built.returncode != 0 and shutil.which("go") is None:
        pytest.skip(f"no Go toolchain to build helm-docs: {built.stderr.strip()}")
    assert built.returncode == 0, built.stderr
    yield built.stdout.strip()


def run(helm_docs: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, check=False, timeout=120,
                          env={**os.environ, "HELM_DOCS": helm_docs})


def copy_chart(tmp_path: Path) -> Path:
    chart = tmp_path / "longshot"
    shutil.copytree(CHART, chart)
    return chart


def test_the_chart_readme_is_what_helm_docs_writes(helm_docs: str) -> None:
    result = run(helm_docs, "--check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_comment_makes_the_check_fail_and_the_generator_fixes_it(helm_docs: str, tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    values = (chart / "values.yaml").read_text()
    assert "# -- Create the PrometheusRule." in values
    (chart / "values.yaml").write_text(values.replace("# -- Create the PrometheusRule.",
                                                      "# -- Create the PrometheusRule (alerts).", 1))
    result = run(helm_docs, "--check", "--chart", str(chart))
    assert result.returncode == 1
    assert "README.md is out of date: run make chart-docs" in result.stderr
    assert "+| `prometheusRule.enabled` | bool | `false` | Create the PrometheusRule (alerts). |" in result.stdout
    assert run(helm_docs, "--chart", str(chart)).returncode == 0
    assert run(helm_docs, "--check", "--chart", str(chart)).returncode == 0
    # the hand-written part, from the template, is kept
    assert (chart / "README.md").read_text().split("## Values")[0] == (CHART / "README.md").read_text().split(
        "## Values")[0]


def test_a_value_without_a_description_fails_the_check(helm_docs: str, tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    with (chart / "values.yaml").open("a") as f:
        f.write("\n# -- A described mapping: its keys are its default, not rows.\nthing:\n  size: 3\n"
                "other:\n  bare: 1\n")
    assert run(helm_docs, "--chart", str(chart)).returncode == 0
    result = run(helm_docs, "--check", "--chart", str(chart))
    assert result.returncode == 1
    assert "values without a `# --` description in" in result.stderr and result.stderr.rstrip().endswith(
        ": other.bare")
    readme = (chart / "README.md").read_text()
    assert "| `thing` | object | `{\"size\":3}` | A described mapping: its keys are its default, not rows. |" in readme


def test_the_tables_escape_what_markdown_would_read(helm_docs: str, tmp_path: Path) -> None:
    chart = copy_chart(tmp_path)
    with (chart / "values.yaml").open("a") as f:
        f.write('\nextra:\n  # -- a <release> `b <c>` | d\n  name: "x|y"\n')
    assert run(helm_docs, "--chart", str(chart)).returncode == 0
    readme = (chart / "README.md").read_text()
    assert "### `extra`\n\n| key | type | default | description |\n|---|---|---|---|\n" in readme
    assert '| `extra.name` | string | `"x\\|y"` | a &lt;release&gt; `b <c>` \\| d |' in readme
    # the top-level scalars have a table of their own, first
    assert readme.split("## Values")[1].split("###")[1].startswith(" General\n")
