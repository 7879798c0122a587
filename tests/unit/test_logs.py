"""The operator's and the gateway's logs (``longshot.logs``): LONGSHOT_LOG_FORMAT and LONGSHOT_LOG_LEVEL, the JSON
line (time, level, logger, message, exception; nothing else of the record), the levels applied, and a bad value
stopping either process before it starts, with the variable named."""

from __future__ import annotations

import io
import json
import logging
import re
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest

from longshot import __main__ as cli
from longshot import logs, operator_main
from longshot.envsettings import SettingsError
from longshot.gateway import server
from longshot.gateway.settings import GatewaySettings

pytestmark = pytest.mark.unit


def record(msg: str, *args: object, level: int = logging.INFO, exc: bool = False,
           extra: dict[str, object] | None = None) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("the bad thing")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("longshot.manager", level, __file__, 1, msg, args, exc_info)
    for k, v in (extra or {}).items():
        setattr(rec, k, v)  # what logging does with extra=
    return rec


# --- the settings -------------------------------------------------------------------------------------------------


def test_the_defaults_are_text_at_info() -> None:
    assert logs.LogSettings.from_env({}) == logs.LogSettings(format="text", level="info")


def test_the_values_are_read_in_any_case() -> None:
    got = logs.LogSettings.from_env({"LONGSHOT_LOG_LEVEL": " DEBUG ", "LONGSHOT_LOG_FORMAT": "Json"})
    assert (got.level, got.format) == ("debug", "json")


@pytest.mark.parametrize(("variable", "value", "choices"), [
    ("LONGSHOT_LOG_LEVEL", "verbose", "'debug', 'info', 'warning' or 'error'"),
    ("LONGSHOT_LOG_LEVEL", "", "'debug', 'info', 'warning' or 'error'"),
    ("LONGSHOT_LOG_FORMAT", "yaml", "'text' or 'json'"),
])
def test_a_bad_value_names_the_variable_and_the_choices(variable: str, value: str, choices: str) -> None:
    with pytest.raises(SettingsError) as e:
        logs.LogSettings.from_env({variable: value})
    assert str(e.value) == f"{variable}={value!r}: Input should be {choices}"


# --- the JSON line --------------------------------------------------------------------------------------------------


def test_a_json_line_has_time_level_logger_and_message() -> None:
    rec = record("reconciled %s in %.1fs", "ns/b", 0.25)
    line = logs.JsonFormatter().format(rec)
    doc = json.loads(line)
    assert list(doc) == ["time", "level", "logger", "message"]
    assert doc["level"] == "info" and doc["logger"] == "longshot.manager"
    assert doc["message"] == "reconciled ns/b in 0.2s"
    # RFC 3339 in UTC, with milliseconds, the record's own time
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["time"]), doc["time"]
    assert abs(datetime.fromisoformat(doc["time"]).timestamp() - rec.created) < 0.001
    assert datetime.fromisoformat(doc["time"]).tzinfo == UTC


def test_a_json_line_carries_the_exception_and_stays_one_line() -> None:
    line = logs.JsonFormatter().format(record("failed:\nsecond line \u2028", level=logging.ERROR, exc=True))
    assert "\n" not in line and "\u2028" not in line
    doc = json.loads(line)
    assert list(doc) == ["time", "level", "logger", "message", "exception"]
    assert doc["level"] == "error" and doc["message"] == "failed:\nsecond line \u2028"
    assert doc["exception"].startswith("Traceback (most recent call last):")
    assert doc["exception"].endswith("ValueError: the bad thing")


def test_a_json_line_carries_nothing_else_of_the_record() -> None:
    """A field a caller attached (``extra=``) never reaches the log, nor do the arguments beyond the message."""
    rec = record("pushed %s", "refs/heads/x", extra={"token": "s3cret-token", "authorization": "Bearer s3cret"})
    line = logs.JsonFormatter().format(rec)
    assert "s3cret" not in line
    assert set(json.loads(line)) == {"time", "level", "logger", "message"}


# --- the handler and the levels -------------------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root, own = logging.getLogger(), logging.getLogger(logs.OWN_LOGGER)
    handlers, root_level, own_level = root.handlers[:], root.level, own.level
    yield
    for h in root.handlers[:]:
        root.removeHandler(h)
    for h in handlers:
        root.addHandler(h)
    root.setLevel(root_level)
    own.setLevel(own_level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


@pytest.mark.usefixtures("restore_logging")
def test_json_at_debug_writes_longshots_debug_lines_and_not_the_libraries() -> None:
    out = io.StringIO()
    logs.configure(logs.LogSettings(level="debug", format="json"), stream=out)
    logging.getLogger("longshot.dispatch").debug("plan: %d to start", 3)
    # kopf logs whole objects at debug; urllib3 every connection
    logging.getLogger("kopf._core.reactor.processing").debug("Handling is in progress: {'spec': {'token': 's3'}}")
    logging.getLogger("urllib3.connectionpool").debug("https://10.0.0.1:443 \"GET /api/v1/... HTTP/1.1\" 200")
    logging.getLogger("urllib3.connectionpool").info("a library's info")
    got = [json.loads(x) for x in lines(out)]
    assert [(d["level"], d["logger"], d["message"]) for d in got] == [
        ("debug", "longshot.dispatch", "plan: 3 to start"), ("info", "urllib3.connectionpool", "a library's info")]


@pytest.mark.usefixtures("restore_logging")
def test_text_at_warning_leaves_out_info() -> None:
    out = io.StringIO()
    logs.configure(logs.LogSettings(level="warning", format="text"), stream=out)
    logging.getLogger("longshot.builds").info("routine")
    logging.getLogger("longshot.builds").warning("build %s stalled", "ns/b")
    logging.getLogger("kopf").info("kopf's routine")
    (line,) = lines(out)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING longshot\.builds build ns/b stalled", line)


@pytest.mark.usefixtures("restore_logging")
def test_configure_replaces_the_handlers_so_each_line_is_written_once() -> None:
    first, second = io.StringIO(), io.StringIO()
    logs.configure(logs.LogSettings(format="json"), stream=first)
    logs.configure(logs.LogSettings(format="json"), stream=second)
    logging.getLogger("longshot.x").info("once")
    assert lines(first) == [] and len(lines(second)) == 1


# --- start-up -------------------------------------------------------------------------------------------------------


def _never(*args: object, **kwargs: object) -> object:
    raise AssertionError("started despite a bad log setting")


@pytest.mark.usefixtures("restore_logging")
def test_the_operator_does_not_start_with_a_bad_level(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LONGSHOT_LOG_LEVEL", "verbose")
    monkeypatch.setattr(operator_main.kopf, "operator", _never)
    monkeypatch.setattr(operator_main, "limit_malloc_arenas", _never)
    with pytest.raises(SettingsError, match=r"^LONGSHOT_LOG_LEVEL='verbose': "):
        operator_main.run()


@pytest.mark.usefixtures("restore_logging")
def test_the_gateway_does_not_start_with_a_bad_format(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from longshot.runtime import kube

    monkeypatch.setenv("LONGSHOT_LOG_FORMAT", "yaml")
    monkeypatch.setattr(kube, "load_client", _never)
    with pytest.raises(SettingsError, match=r"^LONGSHOT_LOG_FORMAT='yaml': "):
        server.run(GatewaySettings())
    # the command line says so in one line, without a traceback, and exits 2
    assert cli.main(["gateway"]) == 2
    assert capsys.readouterr().err == "longshot gateway: LONGSHOT_LOG_FORMAT='yaml': Input should be 'text' or 'json'\n"
