"""The daemon under a user's conditions: its own moves racing the watcher, a backlog at start, photos dropped
while it starts, SIGTERM mid-backlog, and the same photos grouped the same way whether or not it restarted.

Each test runs the real daemon as a subprocess with a real notify socket and the real buffalo_sc models.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess, NotifyListener
from invariants import manifest_entries_exist
from PIL import Image, ImageEnhance, ImageOps

pytestmark = pytest.mark.slow


def _env(models_root: Path, **extra: str) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root), **extra}


def _jpeg(img: Image.Image, quality: int = 92) -> bytes:
    buf = io.BytesIO()
    img.convert("RGB").save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def variants(photo: Path, n: int) -> Iterator[bytes]:
    """`n` distinct photos of the same face: flips, small crops, brightness and JPEG quality changes."""
    base = Image.open(photo).convert("RGB")
    for i in range(n):
        img = ImageOps.mirror(base) if i % 2 else base
        w, h = img.size
        cut = (i // 2) % 4
        img = img.crop((cut * w // 100, cut * h // 100, w - cut * w // 100, h - cut * h // 100))
        img = ImageEnhance.Brightness(img).enhance(1.0 + 0.03 * (i % 5))
        yield _jpeg(img, 95 - (i % 7))


def _alive(d: DaemonProcess) -> None:
    assert d.proc is not None and d.proc.poll() is None, f"the daemon exited:\n{d.output()[-4000:]}"


# --- Defect: the daemon's own moves came back to it as new files ------------------------------------------


@pytest.mark.parametrize("attempt", range(3))
def test_own_prune_and_quarantine_never_come_back_as_new_faces(
    tmp_path: Path, faces_dir: Path, models_root: Path, attempt: int
) -> None:
    """A seed, then the same photo again: a near-dup prune, a move the watcher reports late (no thin quarantine
    follows since the thin rule counts occlusion prunes only).
    Before: `face_added` for the pruned path, then FileNotFoundError (exit 2), or manifests listing missing files."""
    data = tmp_path / "data"
    seed = data / "inbox" / "faceset_003"
    seed.mkdir(parents=True)
    biden = faces_dir / "identities" / "biden" / "biden.jpg"
    (seed / "biden_q97.jpg").write_bytes(_jpeg(Image.open(biden), 97))
    d = DaemonProcess(data, _env(models_root)).start()
    try:
        d.idle()
        shutil.copy(biden, data / "inbox" / "biden.jpg")
        d.wait_for(lambda: d.kinds().count("photo_processed") >= 2, "the second photo")
        d.idle()
        time.sleep(2.5)  # let the watcher's late reports of our own moves arrive and be read
        d.idle()
        _alive(d)
        pruned = {e["subject"] for e in d.events() if e["kind"] == "face_pruned"}
        added_after = [e for e in d.events() if e["kind"] == "face_added" and e["subject"] in pruned
                       and e["position"] > min(p["position"] for p in d.events() if p["kind"] == "face_pruned")]
        assert not added_after, f"our own prune came back as a new face: {added_after}"
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    assert manifest_entries_exist(data) == []


# --- Defects: photos dropped during the start-up reconcile; READY, WATCHDOG and SIGTERM with a backlog -------


def _backlog(faces_dir: Path, inbox: Path, n: int) -> list[str]:
    """`n` distinct photos (re-encodes of the shared photos of single people) straight into the inbox."""
    bases = sorted(p for p in (faces_dir / "identities").rglob("*.jpg"))
    names: list[str] = []
    per = n // len(bases) + 1
    for base in bases:
        for i, data in enumerate(variants(base, per)):
            if len(names) == n:
                return names
            name = f"{base.stem}_{i:03d}.jpg"
            (inbox / name).write_bytes(data)
            names.append(name)
    return names


def test_backlog_at_start_ready_at_once_watchdog_alive_sigterm_prompt(
    tmp_path: Path, faces_dir: Path, models_root: Path
) -> None:
    """160 photos waiting at start. Before: READY=1 after ~48 s with no WATCHDOG before it; SIGTERM took 43 s."""
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    names = _backlog(faces_dir, inbox, 160)
    listener = NotifyListener()
    env = _env(models_root, NOTIFY_SOCKET=str(listener.path), WATCHDOG_USEC="2000000")
    d = DaemonProcess(data, env)
    try:
        t0 = time.monotonic()
        d.start(wait=False)
        d.wait_for(lambda: listener.first("READY=1") is not None, "READY=1", timeout=30)
        ready_s = (listener.first("READY=1") or 0) - t0
        assert ready_s < 8.0, f"READY=1 came {ready_s:.1f} s after the start with {len(names)} photos waiting"
        # work goes on after READY, and the watchdog is fed meanwhile
        d.wait_for(lambda: d.output().count('"photo routed"') >= 3, "three photos routed")
        ready_at = listener.first("READY=1") or 0
        d.wait_for(lambda: listener.count("WATCHDOG=1", after=ready_at) >= 3, "watchdog pings during the backlog")
        assert d.output().count('"photo routed"') < len(names), "the backlog was done before the test could stop it"
        # SIGTERM mid-backlog: the current photo is finished, not the backlog
        assert d.proc is not None
        t_term = time.monotonic()
        d.proc.send_signal(signal.SIGTERM)
        rc = d.proc.wait(15)
        stop_s = time.monotonic() - t_term
        assert rc == 0
        assert stop_s < 3.0, f"SIGTERM took {stop_s:.1f} s (the unit's TimeoutStopSec is 30, the issue asks for 2)"
    finally:
        listener.close()
        if d.proc and d.proc.poll() is None:
            d.kill()
    # nothing lost: every photo is either processed or still waiting in the inbox for the next start
    processed = {p.name for p in (inbox / "_processed").iterdir()} if (inbox / "_processed").exists() else set()
    waiting = {p.name for p in inbox.iterdir() if p.is_file()}
    assert processed | waiting == set(names) and not processed & waiting


def test_photo_dropped_during_startup_reconcile_is_received(
    tmp_path: Path, faces_dir: Path, models_root: Path
) -> None:
    """Before: the inbox was listed before the watcher started, and the watcher does not report files that exist."""
    data = tmp_path / "data"
    inbox = data / "inbox"
    inbox.mkdir(parents=True)
    _backlog(faces_dir, inbox, 12)
    d = DaemonProcess(data, _env(models_root))
    try:
        d.start(wait=False)
        d.wait_for(lambda: '"photo routed"' in d.output(), "the first photo of the backlog", timeout=60)
        late = faces_dir / "identities" / "biden" / "biden2.jpg"
        shutil.copy(late, inbox / "late_arrival.jpg")
        d.wait_for(lambda: any(e["kind"] == "photo_processed" and e["subject"] == "late_arrival.jpg"
                               for e in d.events()), "the photo dropped during the start", timeout=120)
        _alive(d)
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()
    assert (inbox / "_processed" / "late_arrival.jpg").exists()


# --- Defect: placement depended on when the daemon restarted ----------------------------------------------


def _wave_photos(faces_dir: Path) -> list[list[tuple[str, bytes]]]:
    """Three waves of photos of four people (several photos each) and a group photo."""
    people = {
        "obama": faces_dir / "identities/obama/obama.jpg",
        "biden": faces_dir / "identities/biden/biden.jpg",
        "alex": faces_dir / "identities/alex_lacamoire/alex-lacamoire.jpg",
        "woman": faces_dir / "identities/pp_woman/pp3.jpg",
    }
    all_photos = {name: list(variants(path, 6)) for name, path in people.items()}
    waves: list[list[tuple[str, bytes]]] = [[], [], []]
    for name, photos in all_photos.items():
        for i, data in enumerate(photos):
            waves[i % 3].append((f"{name}_{i}.jpg", data))
    waves[1].append(("group.jpg", (faces_dir / "group/obama_and_biden.jpg").read_bytes()))
    return waves


def _drop_wave(inbox: Path, wave: list[tuple[str, bytes]]) -> None:
    """Written under hidden names, then renamed in name order: each photo appears whole, in a known order."""
    for name, data in wave:
        (inbox / f".{name}").write_bytes(data)
    for name, _data in sorted(wave):
        os.rename(inbox / f".{name}", inbox / name)


def _placement(corpus: Path) -> dict[str, str]:
    """crop file name -> the faceset it was routed or promoted to ('pool' while unassigned)."""
    out: dict[str, str] = {}
    for png in corpus.rglob("*.png"):
        owner = next((p for p in png.parts if p.startswith("faceset_")), "pool" if "_pool" in png.parts else "?")
        out[png.name] = owner
    return out


def _wait_finished(d: DaemonProcess, n: int, what: str) -> None:
    """Wait until `n` photos were processed or rejected."""
    d.wait_for(lambda: sum(k in ("photo_processed", "photo_rejected") for k in d.kinds()) >= n, what, timeout=300)


def _run_waves(data: Path, env: dict[str, str], waves: list[list[tuple[str, bytes]]], kill_after: list[int]) -> None:
    """Drop each wave into a running daemon; where `kill_after[w]` > 0, SIGKILL the daemon once that many photos
    of wave w were processed, and start it again."""
    inbox = data / "inbox"
    inbox.mkdir(parents=True, exist_ok=True)
    d = DaemonProcess(data, env).start()
    try:
        total = 0
        for w, wave in enumerate(waves):
            _drop_wave(inbox, wave)
            if kill_after[w]:
                _wait_finished(d, total + kill_after[w], "photos before the kill")
                d.kill()
                d = DaemonProcess(data, env).start()
            total += len(wave)
            _wait_finished(d, total, f"wave {w}")
            d.idle()
        _alive(d)
        assert d.terminate() == 0
    finally:
        if d.proc and d.proc.poll() is None:
            d.kill()


def test_grouping_does_not_depend_on_restarts(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """The same photos in the same waves, once without and once with SIGKILL and restarts mid-wave, give the same
    facesets (the same crops under the same numbers). Before: promotions happened at start-up reconciles in one
    run and on the 60 s timer in the other, and 58 of 76 crops ended up elsewhere."""
    waves = _wave_photos(faces_dir)
    env = _env(models_root, FACESETD_IDENTITY_MIN_NEW_FACESET="3")
    _run_waves(tmp_path / "calm", env, waves, kill_after=[0, 0, 0])
    _run_waves(tmp_path / "killed", env, waves, kill_after=[3, 4, 2])
    calm, killed = _placement(tmp_path / "calm/corpus"), _placement(tmp_path / "killed/corpus")
    assert any(v.startswith("faceset_") for v in calm.values()), f"no faceset was promoted at all: {calm}"
    moved = {k: (calm.get(k), killed.get(k)) for k in sorted(set(calm) | set(killed)) if calm.get(k) != killed.get(k)}
    assert not moved, f"{len(moved)} of {len(calm)} crops placed differently after restarts: {moved}"
    for run in ("calm", "killed"):
        assert manifest_entries_exist(tmp_path / run) == []
