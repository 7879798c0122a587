"""The chart's console values are the console's settings: every LONGSHOT_CONSOLE_* variable the chart sets is a field
of ConsoleSettings, and the chart's defaults are the code's; the console is off unless asked for."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from longshot.console.settings import ConsoleSettings

pytestmark = pytest.mark.unit
CHART = Path(__file__).resolve().parents[3] / "charts" / "longshot"


def test_every_console_env_of_the_chart_is_a_setting() -> None:
    names = set(re.findall(r"name: LONGSHOT_CONSOLE_([A-Z0-9_]+)", (CHART / "templates" / "console.yaml").read_text()))
    assert names == {"PORT", "NAMESPACES", "ACCESS_CACHE_SECONDS", "VIEWER_QUEUE", "MAX_VIEWERS", "STREAM_SECONDS",
                     "FOLLOW_SECONDS", "FOLLOW_QUEUE", "MAX_FOLLOWS"}
    assert names <= {name.upper() for name in ConsoleSettings.model_fields}


def test_the_chart_defaults_are_the_consoles() -> None:
    c, s = yaml.safe_load((CHART / "values.yaml").read_text())["console"], ConsoleSettings()
    assert c["enabled"] is False
    assert (c["port"], c["accessCacheSeconds"], c["viewerQueue"], c["maxViewers"], c["streamSeconds"]) == (
        s.port, s.access_cache_seconds, s.viewer_queue, s.max_viewers, s.stream_seconds)
    assert (c["followSeconds"], c["followQueue"], c["maxFollows"]) == (s.follow_seconds, s.follow_queue, s.max_follows)


def test_the_consoles_account_may_only_list_and_watch_the_three_kinds() -> None:
    text = (CHART / "templates" / "console.yaml").read_text()
    rules = re.findall(r"^rules:\n((?:  .*\n)+)", text, re.MULTILINE)
    assert len(rules) == 1
    assert yaml.safe_load(rules[0]) == [{"apiGroups": ["longshot.dev"],
                                         "resources": ["buildrequests", "agenttasks", "mergejobs"],
                                         "verbs": ["list", "watch"]}]
