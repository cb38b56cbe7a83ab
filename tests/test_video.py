"""Videos in the inbox (issue 25): clips made here from the test photos with PyAV, routed frame by frame through
`facesetd reconcile` with the real buffalo_sc models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import cli, drop
from helpers import log_events as events
from invariants import rebuild_identical

from handlers.video_frames import VideoSettings, frames


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_VIDEO_SAMPLE_S": "1.0"}


def _fit(photo: Path, shift: int) -> np.ndarray:
    """The photo on a 640x480 frame, moved `shift` pixels right (a clip's frames are never the same pixels)."""
    im = cv2.imread(str(photo))
    h, w = im.shape[:2]
    s = min(600 / w, 440 / h)
    im = cv2.resize(im, (int(w * s) // 2 * 2, int(h * s) // 2 * 2), interpolation=cv2.INTER_AREA)
    frame = np.zeros((480, 640, 3), np.uint8)
    y, x = (480 - im.shape[0]) // 2, (640 - im.shape[1]) // 2 - 8 + shift
    frame[y:y + im.shape[0], x:x + im.shape[1]] = im
    return frame


def make_clip(path: Path, shots: list[tuple[Path, int]], fps: int = 4, codec: str = "mpeg4") -> bytes:
    """A clip of `shots` (photo, frames), each frame shifted a pixel from the one before; its bytes."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = 640, 480, "yuv420p"
        n = 0
        for photo, count in shots:
            for _ in range(count):
                frame = av.VideoFrame.from_ndarray(_fit(photo, n % 16), format="bgr24")
                out.mux(stream.encode(frame))
                n += 1
        out.mux(stream.encode())
    return path.read_bytes()


def _crops(evs: list[dict]) -> list[dict]:
    return [e for e in evs if e["kind"] in ("face_added", "pool_face_added") and "video" in e["payload"]["source"]]


def test_sampled_frames_resume_where_an_uninterrupted_run_went(tmp_path: Path, faces_dir: Path) -> None:
    ids = faces_dir / "identities"
    clip = tmp_path / "clip.webm"
    make_clip(clip, [(ids / "obama/obama1.jpg", 6), (ids / "biden/biden2.jpg", 6)], codec="libvpx-vp9")
    settings = VideoSettings(sample_s=1.0)
    every = [(f.t, f.scene) for f in frames(clip, settings)]
    # every 1 s, and the cut to biden at 1.5 s as a scene change
    assert every == [(0.0, False), (1.0, False), (1.5, True), (2.5, False)]
    for i, (t, _scene) in enumerate(every):
        assert [(f.t, f.scene) for f in frames(clip, settings, after=t)] == every[i + 1:]


def test_clip_routed_to_its_facesets_repeats_collapsed_truncated_rejected(
        tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    ids = faces_dir / "identities"
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    drop(ids, inbox, "biden/biden.jpg", into="faceset_002")
    # 2 s of obama then 2 s of biden: frames at 0, 1 (obama), 2 (the cut), 3 (biden)
    clip = make_clip(inbox / "visit.mp4", [(ids / "obama/obama1.jpg", 8), (ids / "biden/biden2.jpg", 8)],
                     codec="libx264")
    cut = make_clip(tmp_path / "cut.mkv", [(ids / "obama/obama2.jpg", 12)])
    (inbox / "cut.mkv").write_bytes(cut[: len(cut) // 2])
    old = os.stat(inbox / "cut.mkv").st_mtime - 3600  # its writer long gone: cut short is a verdict
    os.utime(inbox / "cut.mkv", (old, old))

    cli(data, "reconcile", env=env)

    evs = events(data, env)
    corpus = data / "corpus"
    # the clip moved to _processed/ like a photo; every face of it came from one of its frames
    assert (inbox / "_processed/visit.mp4").read_bytes() == clip
    done = [e["payload"] for e in evs if e["kind"] == "photo_processed" and e["payload"]["path"] == "visit.mp4"]
    assert len(done) == 1 and done[0]["note"].startswith("video: 4 frames sampled")
    crops = _crops(evs)
    by_t = {c["payload"]["source"]["video"]["t"]: c for c in crops}
    assert sorted(by_t) == [0.0, 1.0, 2.0, 3.0]
    routed = {e["payload"]["path"]: e["payload"]["faceset"] for e in evs if e["kind"] == "face_routed"}
    assert {t: routed.get(c["payload"]["path"]) for t, c in by_t.items()} == {
        0.0: "faceset_001", 1.0: "faceset_001", 2.0: "faceset_002", 3.0: "faceset_002"}
    source = by_t[2.0]["payload"]["source"]
    assert source["video"]["name"] == "inbox/visit.mp4" and source["video"]["sha256"] == done[0]["sha256"]
    assert source["photo_sha256"] == done[0]["sha256"] and source["received_as"] == "inbox/visit.mp4"
    # one clip's repeated face collapsed: of each person's two frames one stays, the other pruned as a near-dup
    # (moved into _dropped/, never deleted)
    pruned = {e["payload"]["path"] for e in evs if e["kind"] == "face_pruned"
              and e["payload"]["check"] == "near_dup"}
    for faceset in ("faceset_001", "faceset_002"):
        mine = [c["payload"]["path"] for c in crops if routed.get(c["payload"]["path"]) == faceset]
        kept = [p for p in mine if p not in pruned]
        assert len(mine) == 2 and len(kept) == 1, (faceset, mine, pruned)
        manifest = json.loads((corpus / faceset / "manifest.json").read_text())
        in_manifest = [f for f in manifest["faces"] if "video" in f["source"]]
        assert [f["file"] for f in in_manifest] == [Path(kept[0]).name]
        assert len(list((corpus / faceset / "faces/_dropped").glob("*_t*.png"))) == 1
    # the truncated clip: moved aside with its reason, no face from it
    rejected = [e["payload"] for e in evs if e["kind"] == "photo_rejected"]
    assert [(r["path"], r["reason"]) for r in rejected] == [("cut.mkv", "truncated")]
    assert "cut short" in rejected[0]["error"] or "no frame" in rejected[0]["error"]
    assert (inbox / "_rejected/truncated/cut.mkv").exists()
    assert rebuild_identical(data, env) == []


@pytest.mark.slow
def test_kill_mid_video_then_restart_every_face_once(tmp_path: Path, faces_dir: Path, env: dict[str, str],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from test_crash import run_until_crash_point

    env = {**env, "FACESETD_VIDEO_CHUNK_FRAMES": "2"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    data = tmp_path / "data"
    inbox = data / "inbox"
    ids = faces_dir / "identities"
    drop(ids, inbox, "obama/obama.jpg", into="faceset_001")
    make_clip(inbox / "visit.mkv", [(ids / "obama/obama1.jpg", 8), (ids / "biden/biden2.jpg", 8)])

    # killed routing the frame at 3 s: the first group (0 s, 1 s) is recorded, the second's crop of 2 s is written
    run_until_crash_point(data, "video:frame:3000", args=("reconcile",))
    mid = events(data, env)
    assert [e["payload"]["t"] for e in mid if e["kind"] == "video_frames_routed"] == [1.0]
    cli(data, "reconcile", env=env)  # the next start goes on after 1 s
    cli(data, "reconcile", env=env)  # and nothing is left to do

    evs = events(data, env)
    crops = [c["payload"]["path"] for c in _crops(evs)]
    assert len(crops) == len(set(crops)) == 4  # every face once
    assert sorted(c["payload"]["source"]["video"]["t"] for c in _crops(evs)) == [0.0, 1.0, 2.0, 3.0]
    assert [e["payload"]["t"] for e in evs if e["kind"] == "video_frames_routed"] == [1.0]  # not routed twice
    done = [e for e in evs if e["kind"] == "photo_processed" and e["payload"]["path"] == "visit.mkv"]
    assert len(done) == 1 and (inbox / "_processed/visit.mkv").exists()
    on_disk = sorted(p.name for p in (data / "corpus").rglob("*_t*.png"))
    assert on_disk == sorted(Path(c).name for c in crops)  # no crop left over from the killed run
    assert rebuild_identical(data, env) == []


def test_immich_videos_are_imported_once_turned_on(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    """`[immich] videos` off (the default): a library's VIDEO asset is not even listed. Turned on later, the clip
    is listed from the start (videos keep a watermark of their own), staged without asking for faces, and its
    frames routed as a dropped clip's."""
    from datetime import datetime, timedelta, timezone

    from tests.immich_fake import FakeAsset, FakeImmich, library

    ids = faces_dir / "identities"
    clip = tmp_path / "holiday.mp4"
    make_clip(clip, [(ids / "obama/obama1.jpg", 8)], codec="libx264")
    key = "fake-key-Videos-8Lq2"
    data, config = tmp_path / "data", tmp_path / "facesetd.toml"
    env = {**env, "IMMICH_KEY_ALICE": key}
    with FakeImmich(api_key=key) as fake:
        start = datetime.now(timezone.utc) - timedelta(days=2)
        fake.add(FakeAsset(file=clip, width=640, height=480, faces=[], updated_at=start, created_at=start,
                           type="VIDEO", duration_ms=2000))
        library(fake, [ids / "obama/obama.jpg"])  # a photo updated after the clip: the images' watermark passes it
        section = f'[immich]\nurl = "{fake.url}"\ntimeout_s = 10.0\n'
        users = '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n'
        config.write_text(section + users)
        off = cli(data, "--config", str(config), "immich", "poll", "--once", env=env).stdout
        config.write_text(section + "videos = true\n" + users)
        on = cli(data, "--config", str(config), "immich", "poll", "--once", env=env).stdout
        assert fake.validation_errors == []
    assert "listed 1; delivered 1;" in off  # the photo only
    assert "listed 2; delivered 1, unchanged 1;" in on  # the clip, and the photo at the images' watermark again
    evs = events(data, env)
    done = [e["payload"] for e in evs if e["kind"] == "photo_processed" and e["payload"]["path"].endswith(".mp4")]
    assert len(done) == 1 and done[0]["note"].startswith("video: 2 frames sampled")
    crops = _crops(evs)
    assert crops and all(c["payload"]["source"]["immich"]["user"] == "alice" for c in crops)
    assert {c["payload"]["source"]["video"]["t"] for c in crops} == {0.0, 1.0}
    marks = {e["subject"]: e["payload"]["value"] for e in evs if e["kind"] == "immich_watermark_advanced"}
    assert any(subject.endswith("/videos") for subject in marks)


def test_a_clip_in_a_seeding_folder_seeds_its_person(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    """inbox/faceset_NNN/clip.mp4 seeds faceset_NNN as a photo there would: the clip's faces go to it."""
    data = tmp_path / "data"
    ids = faces_dir / "identities"
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    make_clip(data / "inbox" / "faceset_001" / "lin.mp4",
              [(ids / "lin_manuel_miranda/lin-manuel-miranda.jpg", 8)], codec="libx264")
    cli(data, "reconcile", env=env)
    evs = events(data, env)
    assert [e["payload"]["faceset"] for e in evs if e["kind"] == "faceset_created"] == ["faceset_001"]
    routed = [e["payload"]["faceset"] for e in evs if e["kind"] == "face_routed"]
    assert routed and set(routed) == {"faceset_001"}
    manifest = json.loads((data / "corpus" / "faceset_001" / "manifest.json").read_text())
    assert manifest["faces"] and all(f["source"]["video"]["name"] == "inbox/faceset_001/lin.mp4"
                                     for f in manifest["faces"])
    assert (data / "inbox" / "_processed" / "faceset_001" / "lin.mp4").exists()
