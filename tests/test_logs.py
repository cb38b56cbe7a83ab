"""Logging: one JSON object per line off a terminal (ours, libraries', warnings'), INFO a story of photos and
decisions with per-event lines at DEBUG, secrets redacted."""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest
import structlog
from daemon_proc import DaemonProcess
from PIL import Image

from daemon.logs import REDACTED, configure_logging, register_secret
from state import events as ev
from state.eventlog import EventLog


def _lines(buf: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in buf.getvalue().splitlines()]


def test_json_lines_decisions_at_info_other_events_at_debug(tmp_path) -> None:  # type: ignore[no-untyped-def]
    buf = io.StringIO()
    configure_logging("info", "auto", stream=buf)  # a StringIO is not a terminal: JSON
    log = EventLog(tmp_path / "events.sqlite3")
    log.append([ev.FaceMissing(path="faceset_001/faces/a.png")])
    assert buf.getvalue() == "", "a per-event line at INFO"
    log.append([ev.FacePruned(path="faceset_001/faces/b.png", sha256="ab",
                              moves=(("faceset_001/faces/b.png", "faceset_001/faces/_dropped/b.png"),),
                              check="near_dup", reason="near-duplicate of faceset_001/faces/c.png")])
    (line,) = _lines(buf)
    assert line["event"] == "face pruned" and line["kind"] == "face_pruned" and line["event_id"] == 2
    assert line["check"] == "near_dup" and line["reason"] == "near-duplicate of faceset_001/faces/c.png"
    assert line["subject"] == "faceset_001/faces/b.png" and line["to"] == "faceset_001/faces/_dropped/b.png"
    assert line["level"] == "info" and line["timestamp"].endswith("Z")
    log.append([ev.DecisionReverted(target=2, path="faceset_001/faces/b.png", check="near_dup",
                                    moves=(("faceset_001/faces/_dropped/b.png", "faceset_001/faces/b.png"),),
                                    reason="restored by the user (undoes event 2: near-duplicate)")])
    restored = _lines(buf)[-1]
    assert restored["event"] == "decision reverted" and restored["undoes"] == 2 and restored["event_id"] == 3

    buf = io.StringIO()
    configure_logging("debug", "json", stream=buf)
    log.append([ev.FaceMissing(path="faceset_001/faces/d.png")])
    (line,) = _lines(buf)
    assert line["event"] == "event appended" and line["kind"] == "face_missing" and line["position"] == 4
    assert line["level"] == "debug"


def test_library_logging_warnings_and_thread_errors_are_json_lines_with_secrets_redacted() -> None:
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    register_secret("w4rn-secret-value")
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.warn("Callback with id '1' already exists; key w4rn-secret-value", RuntimeWarning, stacklevel=1)
    logging.getLogger("apscheduler.scheduler").info("Added job")  # a library's INFO is its own business
    logging.getLogger("watchdog.observers.inotify").warning("Inotify queue overflowed below %r", "/x token=abcd1234")

    def crash() -> None:
        raise ValueError("boom in a thread")

    t = threading.Thread(target=crash, name="worker-1")
    t.start()
    t.join()
    text = buf.getvalue()
    assert "w4rn-secret-value" not in text and "abcd1234" not in text
    warned, library, thread = _lines(buf)  # every line is one JSON object
    assert warned["event"] == "python warning" and warned["category"] == "RuntimeWarning"
    assert warned["level"] == "warning" and "already exists" in warned["message"] and REDACTED in warned["message"]
    assert library["logger"] == "watchdog.observers.inotify" and library["level"] == "warning"
    assert library["event"].startswith("Inotify queue overflowed below '/x token=")
    assert thread["event"] == "thread ended by an exception" and thread["thread"] == "worker-1"
    assert thread["error"] == "ValueError: boom in a thread" and thread["level"] == "error"
    # configured again (a config reload): still one handler, one line per record
    configure_logging("info", "json", stream=buf)
    logging.getLogger("urllib3").warning("once")
    assert buf.getvalue().count('"once"') == 1


def test_daemon_log_is_json_lines_that_tell_the_story(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """The real daemon, JSON logs on stdout (stderr merged in): every line parses; a folder moved out of the
    inbox and back (under a new name) is still watched, and a photo dropped into it is routed and logged; INFO
    has one line per photo and per decision, no per-event lines; an unreadable file's error names it."""
    data = tmp_path / "data"
    seed = data / "inbox" / "faceset_001"
    seed.mkdir(parents=True)
    shutil.copy(faces_dir / "identities" / "obama" / "obama.jpg", seed / "obama.jpg")
    with Image.open(faces_dir / "identities" / "obama" / "obama.jpg") as im:
        im.save(seed / "obama_again.jpg", quality=80)  # the same face again: a near-duplicate, pruned
    (data / "inbox" / "notes.jpg").write_bytes(b"not an image, whatever its name says\n" * 8)
    (data / "inbox" / "trip").mkdir()
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    d = DaemonProcess(data, env).start()
    try:
        d.idle()
        # a user moves a folder out of the inbox and back under a new name: facesetd watches it again (whatever
        # the watcher library says about it, if anything), so a photo dropped into it is taken in
        outside = tmp_path / "elsewhere"
        outside.mkdir()
        (data / "inbox" / "trip").rename(outside / "trip")
        time.sleep(1.0)
        (outside / "trip").rename(data / "inbox" / "trip2")
        time.sleep(1.0)
        shutil.copy(faces_dir / "identities" / "biden" / "biden.jpg", data / "inbox" / "trip2" / "biden.jpg")
        d.wait_for(lambda: d.kinds().count("photo_processed") == 3, "biden routed")
        d.idle()
    finally:
        assert d.terminate() == 0

    lines = d.lines()  # raises on a line that is not JSON
    assert all(isinstance(line, dict) and "event" in line and "level" in line for line in lines)
    assert not [line for line in lines if line["event"] == "event appended"], "per-event lines at INFO"
    # one line per photo: faces found, where each went
    routed = {line["path"]: line for line in lines if line["event"] == "photo routed"}
    assert set(routed) == {"inbox/faceset_001/obama.jpg", "inbox/faceset_001/obama_again.jpg", "inbox/trip2/biden.jpg"}
    assert routed["inbox/faceset_001/obama.jpg"]["found"] == 1
    assert routed["inbox/faceset_001/obama.jpg"]["to"] == ["faceset_001"]
    assert routed["inbox/trip2/biden.jpg"]["to"] == ["pool"]
    assert routed["inbox/trip2/biden.jpg"]["dest"] == "_processed/trip2/biden.jpg"
    assert (data / "inbox" / "_processed" / "trip2" / "biden.jpg").is_file()  # moved where the line says
    # one line per decision, with its reason and the event id `facesetd restore` takes
    pruned_event = next(e for e in d.events() if e["kind"] == "face_pruned")
    (pruned,) = [line for line in lines if line["event"] == "face pruned"]
    assert pruned["event_id"] == pruned_event["position"] and pruned["check"] == "near_dup"
    assert pruned["reason"].startswith("near-duplicate of faceset_001/faces/")
    assert pruned["to"].startswith("faceset_001/faces/_dropped/")
    # the unreadable file: its error names it, never a Python object
    (rejected,) = [line for line in lines if line["event"] == "photo rejected"]
    assert rejected["error"].startswith("inbox/notes.jpg: ") and "object at 0x" not in rejected["error"]
    assert not [line for line in lines if line["event"] != "python warning" and "object at 0x" in json.dumps(line)]
    # the story is short: nothing per event
    assert len([line for line in lines if line["level"] == "info"]) <= 20


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


def test_review_token_and_form_token_are_never_in_a_log_line(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The review pages' token (named by [review] token_env) and their per-process form token are secrets from
    the moment the app and the pages' site exist: a line that carries either (an error, a traceback's locals)
    shows them redacted."""
    from daemon.app import App
    from daemon.config import load_config
    from daemon.review.actions import LockedRunner
    from daemon.review.server import open_site

    token = "rev1ew-t0ken-value-0123456789"
    monkeypatch.setenv("REVIEW_KEY_FOR_LOG_TEST", token)
    environ = {"FACESETD_REVIEW_TOKEN_ENV": "REVIEW_KEY_FOR_LOG_TEST", "FACESETD_REVIEW_LISTEN": "0.0.0.0:0",
               "REVIEW_KEY_FOR_LOG_TEST": token}
    config = load_config(None, data_dir=str(tmp_path), environ=environ)
    buf = io.StringIO()
    app = App(config, log_stream=buf)
    configure_logging("info", "json", stream=buf)
    config.state_dir.mkdir(parents=True)
    EventLog(config.log_path).close()
    site, listen = open_site(config, LockedRunner(lambda: None, lambda: None), environ)
    assert not listen.loopback and site.token == token
    logger = structlog.get_logger("t")
    logger.error("request failed", url=f"http://h/facesets?token={token}", form={"csrf": site.csrf},
                 detail=f"cookie facesetd_review={token}; form {site.csrf}")
    text = buf.getvalue()
    assert token not in text and site.csrf not in text and REDACTED in text
    site.state.close()
    app.close()


def test_a_traceback_never_carries_a_frames_locals() -> None:
    """structlog's JSON tracebacks show each frame's locals cut to 80 characters by default; a cut repr of a
    dict holding a secret ends mid-secret, so whole-value redaction misses the part that is printed."""
    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    secret = "s3cr3t-" + "x" * 120
    register_secret(secret)
    headers = {"padding": "p" * 40, "x-api": secret}  # its repr is cut inside the secret

    def fail(h: dict[str, str]) -> None:
        raise RuntimeError("upstream refused")

    try:
        fail(headers)
    except RuntimeError:
        logging.getLogger("uvicorn.error").exception("Exception in ASGI application")
    (line,) = _lines(buf)
    assert line["exception"][0]["exc_value"] == "upstream refused"
    assert all("locals" not in frame for frame in line["exception"][0]["frames"])
    assert "s3cr3t" not in buf.getvalue()


class _Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_a_one_shot_verb_at_a_terminal_logs_warnings_only_unless_verbose() -> None:
    from daemon.app import LOG_TO_STDOUT
    from daemon.cli import SERVICES
    from daemon.logs import log_level

    assert set(SERVICES) == set(LOG_TO_STDOUT)  # the verbs without -v are those that log as a service

    assert log_level("info", terminal=True, verbose=False) == logging.WARNING
    assert log_level("error", terminal=True, verbose=False) == logging.ERROR  # a higher configured level stays
    assert log_level("warning", terminal=True, verbose=True) == logging.INFO
    assert log_level("debug", terminal=True, verbose=True) == logging.DEBUG
    assert log_level("info", terminal=False, verbose=False) == logging.INFO  # a pipe: [logging] level
    assert log_level("info", terminal=True, verbose=None) == logging.INFO  # a service, even at a terminal
    for verbose, shown in ((False, ["warning"]), (True, ["info", "warning"]), (None, ["info", "warning"])):
        tty = _Terminal()
        configure_logging("info", "auto", stream=tty, verbose=verbose)
        structlog.get_logger("t").info("photo routed")
        structlog.get_logger("t").warning("photo rejected")
        logging.getLogger("urllib3").warning("a library's warning")  # libraries: warnings at a terminal too
        text = tty.getvalue()
        assert ("photo routed" in text) == ("info" in shown) and "photo rejected" in text, (verbose, text)
        assert "a library's warning" in text
    buf = io.StringIO()
    configure_logging("info", "auto", stream=buf, verbose=False)  # piped: unchanged JSON at INFO
    structlog.get_logger("t").info("photo routed", path="inbox/a.jpg")
    (line,) = _lines(buf)
    assert line["event"] == "photo routed" and line["level"] == "info"


def test_log_lines_at_a_terminal_go_above_the_progress_bars() -> None:
    from tqdm import tqdm

    tty = _Terminal()
    configure_logging("info", "console", stream=tty, verbose=False)
    bar = tqdm(total=10, desc="photos", file=tty, ncols=80, mininterval=0)
    bar.update(3)
    structlog.get_logger("t").warning("photo rejected", path="inbox/x.jpg")
    logging.getLogger("watchdog").warning("a library's warning")
    bar.update(1)
    bar.close()
    after = re.sub(r"\x1b\[[0-9;]*m", "", tty.getvalue())  # the console renderer's colours
    # tqdm.write: the bar's line is cleared ("\r" + blanks + "\r"), the log line written whole, the bar drawn again
    rows = [r.rsplit("\r", 1)[-1] for r in after.split("\n")]  # what each terminal line ends up showing
    warned = next(r for r in rows if "photo rejected" in r)
    assert warned.startswith("20") and "photos:" not in warned, rows  # its timestamp first: no bar before it
    library = next(r for r in rows if "a library's warning" in r)
    assert library.startswith("20") and "photos:" not in library, rows
    assert after.rstrip().rsplit("\r", 1)[-1].startswith("photos:")  # the bar is the last thing shown


def test_reported_by_turns_warnings_into_report_lines_and_logs_nothing() -> None:
    from daemon.cli.doctor import report_line
    from daemon.logs import reported_by

    buf = io.StringIO()
    configure_logging("info", "json", stream=buf)
    register_secret("r3port-secret-value")
    said: list[dict] = []
    with reported_by(said.append):
        structlog.get_logger("facesetd.gpu_agent").info("onnxruntime providers", in_use=["CPUExecutionProvider"])
        structlog.get_logger("facesetd.gpu_agent").warning("preferred provider not in use", wanted="CUDA",
                                                           got="CPU", detail="token r3port-secret-value")
        logging.getLogger("onnxruntime").warning("a library's warning")
        logging.getLogger("onnxruntime").info("a library's info")
    assert buf.getvalue() == ""
    assert [s["event"] for s in said] == ["preferred provider not in use", "a library's warning"]
    assert report_line(said[0]) == \
        f"  warning: preferred provider not in use (wanted=CUDA, got=CPU, detail=token {REDACTED})"
    assert report_line(said[1]) == "  warning: a library's warning"
    structlog.get_logger("t").info("after")  # the log is back as it was
    logging.getLogger("urllib3").warning("once")
    assert [line["event"] for line in _lines(buf)] == ["after", "once"]


def _tiff_opencv_warns_about(path: Path, faces_dir: Path) -> None:
    """A photo as a TIFF with a private tag (65000): OpenCV's TIFF reader warns on stderr about the unknown field."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[65000] = "a private tag"
    tags.tagtype[65000] = 2  # ASCII
    with Image.open(faces_dir / "identities" / "obama" / "obama.jpg") as im:
        im.save(path, tiffinfo=tags)


def test_opencv_logs_nothing_of_its_own_once_logging_is_configured(tmp_path: Path, faces_dir: Path) -> None:
    import subprocess
    import sys

    import cv2

    from daemon.logs import OPENCV_LOG_LEVEL

    configure_logging("info", "json", stream=io.StringIO())
    assert OPENCV_LOG_LEVEL == "SILENT" and cv2.utils.logging.getLogLevel() == cv2.utils.logging.LOG_LEVEL_SILENT
    tiff = tmp_path / "tagged.tif"
    _tiff_opencv_warns_about(tiff, faces_dir)
    decode = ("import sys, numpy as np{0}; import cv2; "
              "assert cv2.imdecode(np.fromfile(sys.argv[1], np.uint8), cv2.IMREAD_COLOR) is not None")
    env = {k: v for k, v in os.environ.items() if k != "OPENCV_LOG_LEVEL"}
    bare = subprocess.run([sys.executable, "-c", decode.format(""), str(tiff)], env=env, capture_output=True, text=True)
    assert bare.returncode == 0 and "grfmt_tiff" in bare.stderr  # the file does make OpenCV warn
    quiet = subprocess.run([sys.executable, "-c", decode.format(
        "; from daemon.logs import configure_logging; configure_logging()"), str(tiff)],
        env=env, capture_output=True, text=True)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


@pytest.mark.slow
def test_daemon_log_stays_json_lines_when_opencv_would_warn(tmp_path: Path, faces_dir: Path,
                                                            models_root: Path) -> None:
    """A TIFF that makes OpenCV warn (`[ WARN:0@...] global grfmt_tiff.cpp:...`) is processed by the real daemon;
    every line of its stdout (stderr merged in) is still one JSON object."""
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    _tiff_opencv_warns_about(data / "inbox" / "obama.tif", faces_dir)
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    d = DaemonProcess(data, env)
    d.env.pop("OPENCV_LOG_LEVEL", None)  # as systemd starts it: the daemon sets it, not this test process
    d.start()
    try:
        d.wait_for(lambda: "photo_processed" in d.kinds(), "the TIFF processed")
        d.idle()
    finally:
        assert d.terminate() == 0
    assert "WARN" not in d.output() and "grfmt_tiff" not in d.output()
    lines = d.lines()  # raises on a line that is not JSON
    (routed,) = [line for line in lines if line["event"] == "photo routed"]
    assert routed["path"] == "inbox/obama.tif" and routed["found"] == 1
