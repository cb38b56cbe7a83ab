"""`facesetd doctor`: are the models usable here? Packs, providers, one timed inference; and is the event log sound?
Exit 0 when usable, 1 when the models are not, 65 when the event log is damaged.

Its output is a report, never a log: what the checks would log is held back (daemon.logs.reported_by), and their
warnings and errors become lines of the report where they happen."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

NAME = "doctor"
HELP = ("check the models (packs found, execution providers, one timed inference) and the event log (every event"
        " read back); exit 0 when usable, 65 when the log is damaged")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _probe_image() -> bytes:
    """A small synthetic photo: the timing covers decode, detection and (no faces) an empty recognition pass."""
    import cv2
    import numpy as np

    img = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    return buf.tobytes()


def _missing_pack_hint(configured: str, installed: list[str]) -> str:
    """What to do when the configured pack is not there: use an installed one (fetching it again is instant and
    makes it the configured pack), or fetch the configured one."""
    if not installed:
        return f"  configured pack {configured} is missing: facesetd models fetch --pack {configured}"
    return (f"  configured pack {configured} is missing; installed: {', '.join(installed)} "
            f"(use it: facesetd models fetch --pack {installed[0]}; or get {configured}: "
            f"facesetd models fetch --pack {configured})")


def run(args: argparse.Namespace, app: Any) -> int:
    from daemon.logs import reported_by
    from state.errors import EXIT_LOG_DAMAGED

    with reported_by(lambda line: print(report_line(line))):
        usable = _check(app.config)
    sound = _check_log(app.config.log_path)
    print("usable" if usable and sound else "not usable")
    return EXIT_LOG_DAMAGED if not sound else 0 if usable else 1


def _check_log(path: Path) -> bool:
    """Print the event log's integrity check (state/logcheck.py), run now and recorded; False when it is damaged."""
    from state.logcheck import check_log, record

    if not path.exists():
        print("event log: none yet")
        return True
    check = check_log(path)
    record(check)
    if check.damage is not None:
        print(check.damage.line())  # "event log ... is damaged ..."
        return False
    print(f"event log: sound ({check.head} events read back, SQLite's structure check passed; {check.took_s:.1f} s)")
    return True


# Keys of a held log line that the report leaves out: the level says it already, the rest is the log's own.
_NOT_REPORTED = ("event", "level", "timestamp", "logger", "exc_info")


def report_line(line: dict[str, Any]) -> str:
    """A held-back log line as a line of the report: `  warning: preferred provider not in use (model=..., ...)`."""
    fields = ", ".join(f"{k}={v}" for k, v in line.items() if k not in _NOT_REPORTED)
    return f"  {line.get('level', 'warning')}: {line.get('event')}" + (f" ({fields})" if fields else "")


def _check(cfg: Any) -> bool:
    """Print the report's lines; True when the models are usable."""
    from gpu_agent import open_engines
    from gpu_agent.errors import ModelError
    from gpu_agent.fetch import installed_packs
    from gpu_agent.providers import available_providers, choose_providers

    ok = True
    print(f"models root: {cfg.models_dir}")
    packs = installed_packs(cfg.models_dir)
    for p in packs:
        print(f"  pack {p.name}: {'verified' if p.verified else 'CHECKSUM MISMATCH'}")
    if not any(p.name == cfg.models.face_pack for p in packs) and cfg.gpu_agent.mode == "in-process":
        print(_missing_pack_hint(cfg.models.face_pack, [p.name for p in packs if p.verified]))
        ok = False
    print(f"providers available: {', '.join(available_providers())}")
    try:
        print(f"providers chosen: {', '.join(choose_providers(cfg.models))}")
    except ModelError as e:
        print(f"providers: {e}")
        ok = False
    if not ok:
        return False
    print(f"mode: {cfg.gpu_agent.mode}" + (f" ({cfg.gpu_agent.url})" if cfg.gpu_agent.mode == "http" else ""))
    try:
        t0 = time.perf_counter()
        engine, scorer = open_engines(cfg.models, cfg.gpu_agent, cfg.models_dir)
        load_s = time.perf_counter() - t0
        probe = _probe_image()
        engine.analyze([probe])  # warm-up: first runs allocate and tune
        t0 = time.perf_counter()
        engine.analyze([probe])
        infer_ms = (time.perf_counter() - t0) * 1e3
    except ModelError as e:
        print(f"face engine: {e}")
        return False
    d = engine.describe()
    d = d["engine"] if "agent" in d else d  # the http agent nests what the remote engine reports
    print(f"face engine: {d.get('pack')} on {', '.join(d.get('providers', []))} "
          f"(loaded in {load_s:.1f} s, one 640x480 image in {infer_ms:.0f} ms)")
    occ = scorer.describe()
    occ = occ["occlusion"] if "agent" in occ else occ
    if scorer.available:
        t0 = time.perf_counter()
        scorer.score([probe])
        print(f"occlusion scorer: {occ.get('model')} on {', '.join(occ.get('providers', []))} "
              f"(one image in {(time.perf_counter() - t0) * 1e3:.0f} ms)")
    else:
        # Not fatal: the daemon runs without occlusion checks and says so once.
        print(f"occlusion scorer: unavailable ({occ.get('reason', 'no reason given')})")
    return True
