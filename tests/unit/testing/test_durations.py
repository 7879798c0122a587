"""The integration tier's files go to the xdist workers longest first (``longshot_testing.durations``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from longshot_testing import durations

pytestmark = pytest.mark.unit


def test_files_go_longest_first_and_an_unmeasured_file_counts_as_the_default() -> None:
    seconds = {"integration/test_chaos.py": 300.0, "integration/test_a.py": 5.0, "integration/test_b.py": 60.0}
    paths = ["integration/test_a.py", "integration/test_a.py", "integration/test_new.py", "integration/test_b.py",
             "integration/test_chaos.py", "integration/test_chaos.py"]
    assert durations.longest_first(paths, seconds) == [
        "integration/test_chaos.py", "integration/test_b.py", "integration/test_new.py", "integration/test_a.py"]


def test_ties_keep_the_order_they_were_collected_in() -> None:
    assert durations.longest_first(["b", "a", "c"], {}) == ["b", "a", "c"]


def test_longest_first_ends_sooner_than_a_long_file_last() -> None:
    files = [300.0, *[30.0] * 20]
    assert durations.makespan(files, 3) == 300.0
    assert durations.makespan([*files[1:], 300.0], 3) == 6 * 30.0 + 300.0  # 7, 7 and 6 short files, then it


def test_the_table_is_read_leniently(tmp_path: Path) -> None:
    table = tmp_path / "durations.json"
    assert durations.load(table) == {}
    table.write_text("not json")
    assert durations.load(table) == {}
    table.write_text('{"integration/test_x.py": 12, "integration/test_y.py": "slow", "z": true}')
    assert durations.load(table) == {"integration/test_x.py": 12.0}


def test_junit_cases_are_summed_by_file(tmp_path: Path) -> None:
    tests = tmp_path / "tests"
    (tests / "integration" / "sub").mkdir(parents=True)
    (tests / "integration" / "test_x.py").write_text("")
    (tests / "integration" / "sub" / "test_y.py").write_text("")
    (tests / "unit").mkdir()
    (tests / "unit" / "test_u.py").write_text("")
    xml = tmp_path / "run.xml"
    xml.write_text(
        '<testsuites><testsuite name="pytest">'
        '<testcase classname="tests.integration.test_x" name="t1" time="1.5"/>'
        '<testcase classname="tests.integration.test_x.TestGroup" name="t2" time="2.0"/>'
        '<testcase classname="tests.integration.sub.test_y" name="t3" time="10"/>'
        '<testcase classname="tests.unit.test_u" name="t4" time="99"/>'
        '<testcase classname="tests.integration.gone" name="t5" time="7"/>'
        "</testsuite></testsuites>")
    assert durations.seconds_by_file([xml], tests) == {"integration/test_x.py": 3.5, "integration/sub/test_y.py": 10.0}
