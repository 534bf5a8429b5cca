from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ConfigError
from gateway.logs import RedactSecrets, redact, setup_logging

SECRET = "hunter2-Zq9"


@pytest.fixture(autouse=True)
def _root_logger() -> Iterator[None]:
    """Leave the root logger as pytest set it up."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in root.handlers:
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)


def fail(exc: Exception) -> None:
    raise exc


def json_lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_carry_time_level_logger_message_and_extra_fields() -> None:
    out = io.StringIO()
    setup_logging("info", "auto", out)  # a StringIO is no terminal: auto means JSON
    before = datetime.now(UTC)
    logging.getLogger("gateway.ingest").info(
        "rejected %s", "kit/v1/x/report", extra={"reason": "invalid", "bytes": 12}
    )
    logging.getLogger("gateway.ingest").debug("below the level")
    [line] = json_lines(out)
    assert line["level"] == "INFO"
    assert line["logger"] == "gateway.ingest"
    assert line["msg"] == "rejected kit/v1/x/report"
    assert (line["reason"], line["bytes"]) == ("invalid", 12)
    ts = datetime.fromisoformat(str(line["ts"]).replace("Z", "+00:00"))
    assert timedelta(seconds=-1) < ts - before < timedelta(seconds=5)
    assert str(line["ts"]).endswith("Z")


def test_an_exception_is_one_json_line_with_its_traceback() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", out)
    try:
        fail(RuntimeError("line one\nline two"))
    except RuntimeError:
        logging.getLogger("t").exception("failed")
    assert len(out.getvalue().splitlines()) == 1
    [line] = json_lines(out)
    assert "RuntimeError: line one\nline two" in str(line["exc"])


def test_values_json_cannot_encode_are_written_as_text() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", out)
    logging.getLogger("t").info("at", extra={"when": datetime(2026, 11, 28, tzinfo=UTC)})
    assert json_lines(out)[0]["when"] == "2026-11-28 00:00:00+00:00"


def test_text_on_a_terminal() -> None:
    leader, follower = os.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as tty:
        setup_logging("INFO", "auto", tty)
        logging.getLogger("gateway.linkage").warning("valve %s slow", "1a2b3c4d", extra={"try": 2})
        tty.flush()
        text = os.read(leader, 4096).decode()
    os.close(leader)
    assert "WARNING gateway.linkage: valve 1a2b3c4d slow try=2" in text
    assert not text.lstrip().startswith("{")


def test_setting_up_twice_replaces_the_handler() -> None:
    first, second = io.StringIO(), io.StringIO()
    setup_logging("INFO", "json", first)
    setup_logging("INFO", "text", second)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert second.getvalue().count("once") == 1


@pytest.mark.parametrize(
    ("level", "fmt"), [("loud", "json"), ("INFO", "xml")], ids=["level", "format"]
)
def test_bad_level_or_format_is_a_config_error(level: str, fmt: str) -> None:
    with pytest.raises(ConfigError):
        setup_logging(level, fmt, io.StringIO())  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (f"to mqtt://gateway:{SECRET}@broker:1883", "to mqtt://gateway:***@broker:1883"),
        (f"password={SECRET} retry", "password=*** retry"),
        (f'{{"influx_token": "{SECRET} x", "n": 1}}', '{"influx_token": "***", "n": 1}'),
        (f"hmac_key: {SECRET}", "hmac_key: ***"),
        (f"Authorization: Token {SECRET}", "Authorization: Token ***"),
        (f"GET /write?org=o&token={SECRET}&b=1", "GET /write?org=o&token=***&b=1"),
        (f"api-key='{SECRET}'", "api-key='***'"),
    ],
)
def test_redact_masks_secret_values_and_keeps_the_rest(text: str, kept: str) -> None:
    assert redact(text) == kept


def test_ordinary_words_are_not_masked() -> None:
    text = "the token bucket is empty; device secretary-1 online at mqtt://broker:1883"
    assert redact(text) == text


def test_no_secret_reaches_the_log_by_any_route() -> None:
    out = io.StringIO()
    setup_logging("INFO", "json", out)
    log = logging.getLogger("gateway.escalation")
    log.info("gas company link %s", f"mqtts://gw:{SECRET}@gasco:8883")
    log.info("webhook", extra={"webhook_secret": SECRET, "settings": {"password": SECRET}})
    log.info("settings", extra={"channels": [{"url": f"https://u:{SECRET}@h/x"}]})
    try:
        fail(ValueError(f"bad token={SECRET}"))
    except ValueError:
        log.exception("failed")
    assert SECRET not in out.getvalue()
    lines = json_lines(out)
    assert len(lines) == 4
    assert lines[1]["webhook_secret"] == "***"
    assert lines[1]["settings"] == {"password": "***"}
    assert lines[2]["channels"] == [{"url": "https://u:***@h/x"}]
    assert "token=***" in str(lines[3]["exc"])


def test_a_callers_format_mistake_still_logs_masked() -> None:
    record = logging.LogRecord(
        "t", logging.INFO, __file__, 1, "url %s", (f"mqtt://u:{SECRET}@h", "extra"), None
    )
    assert RedactSecrets().filter(record)
    assert SECRET not in record.getMessage()
    assert "mqtt://u:***@h" in record.getMessage()
