"""charts/longshot/README.md's values reference is what ``hack/chart-docs.py`` writes from values.yaml's comments (a
drift check, as for the CRDs), and every value has a description."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[3]
CHART = ROOT / "charts" / "longshot"
SCRIPT = ROOT / "hack" / "chart-docs.py"


def chart_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("chart_docs", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["chart_docs"] = module
    spec.loader.exec_module(module)
    return module


def check(chart: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), "--check", "--chart", str(chart)], capture_output=True,
                          text=True, check=False)


def test_the_chart_readme_is_what_the_generator_writes() -> None:
    result = check(CHART)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_changed_comment_makes_the_check_fail_and_the_generator_fixes_it(tmp_path: Path) -> None:
    chart = tmp_path / "longshot"
    chart.mkdir()
    shutil.copy(CHART / "README.md", chart / "README.md")
    values = (CHART / "values.yaml").read_text()
    (chart / "values.yaml").write_text(values.replace("# -- Create the PrometheusRule.",
                                                      "# -- Create the PrometheusRule (alerts).", 1))
    result = check(chart)
    assert result.returncode == 1
    assert "README.md is out of date: run python hack/chart-docs.py" in result.stderr
    assert "+| `prometheusRule.enabled` | bool | `false` | Create the PrometheusRule (alerts). |" in result.stdout
    subprocess.run([sys.executable, str(SCRIPT), "--chart", str(chart)], check=True, capture_output=True)
    assert check(chart).returncode == 0
    assert (chart / "README.md").read_text().split("## Values")[0] == (CHART / "README.md").read_text().split(
        "## Values")[0]  # the hand-written part is kept


def test_every_value_has_a_description() -> None:
    _, undocumented = chart_docs().parse((CHART / "values.yaml").read_text())
    assert undocumented == []


def test_what_the_generator_reads() -> None:
    cd = chart_docs()
    sections, undocumented = cd.parse("""\
# -- The name.
name: ""

# The thing.
thing:
  # -- Its size,
  # in bytes.
  size: 3
  # -- Its limits.
  limits:
    cpu: "1"
  # A note on the nested mapping.
  nested:
    # -- A flag.
    flag: true
    bare: 1
  # -- A table.
  models: {}
  #   gpt: {input: 1}
""")
    assert undocumented == ["thing.nested.bare"]
    general, thing = sections
    assert (general.key, [r.path for r in general.rows]) == ("", ["name"])
    assert thing.intro == "The thing."
    assert [(r.path, r.type, r.default, r.description) for r in thing.rows] == [
        ("thing.size", "int", 3, "Its size, in bytes."), ("thing.limits", "object", {"cpu": "1"}, "Its limits."),
        ("thing.nested.flag", "bool", True, "A flag."), ("thing.models", "object", {}, "A table.")]
    assert thing.notes == [("thing.nested", "A note on the nested mapping.")]
    text = cd.reference(sections)
    assert "| `thing.limits` | object | `{\"cpu\": \"1\"}` | Its limits. |" in text
    assert cd._cell("a <release> `b <c>` | d") == "a &lt;release&gt; `b <c>` \\| d"
