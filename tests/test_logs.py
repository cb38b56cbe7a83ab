"""Logging: one JSON object per line off a terminal, every appended event logged, secrets redacted."""

from __future__ import annotations

import io
import json

import structlog

from daemon.logs import REDACTED, configure_logging, register_secret
from state import events as ev
from state.eventlog import EventLog


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_with_level_timestamp_and_appended_events(tmp_path) -> None:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    configure_logging("info", "auto", stream=buf)  # a StringIO is not a terminal: JSON
    log = EventLog(tmp_path / "events.sqlite3")
    log.append([ev.FaceMissing(path="faceset_001/faces/a.png")])
    (line,) = _lines(buf)
    assert line["event"] == "event appended" and line["kind"] == "face_missing" and line["position"] == 1
    assert line["level"] == "info" and line["timestamp"].endswith("Z")


def test_secrets_are_redacted_by_key_by_value_and_in_text() -> None:
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    register_secret("s3cr3t-agent-token-value")
    logger = structlog.get_logger("t")
    logger.info("request", api_key="abc123456", headers={"x-api-key": "abc123456", "accept": "json"})
    logger.info("agent", detail="sent Authorization: Bearer s3cr3t-agent-token-value to the agent")
    logger.info("url", url="http://h/api?apiKey=zzzz9999&x=1", note="token=qqqq1234")
    logger.error("failed", error=ValueError("bad key s3cr3t-agent-token-value").__str__())
    text = buf.getvalue()
    for secret in ("abc123456", "s3cr3t-agent-token-value", "zzzz9999", "qqqq1234"):
        assert secret not in text
    lines = _lines(buf)
    assert lines[0]["api_key"] == REDACTED and lines[0]["headers"] == {"x-api-key": REDACTED, "accept": "json"}
    assert REDACTED in lines[1]["detail"] and "Authorization" in lines[1]["detail"]
    assert lines[2]["url"].endswith(f"apiKey={REDACTED}&x=1")
