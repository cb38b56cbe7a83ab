"""`facesetd backfill` (issue 24): an archive's model work on Ray, the decisions in the one writer.

The fast tests hold the parts to their contracts with the real engine and real Parquet files: a record gives back
exactly what the engine found, a half-written record file is ignored, a photo without a record is analysed by the
configured engine, and without Ray the verb stops with one line naming the extra.

The slow ones run the real CLI against a real Ray cluster on 127.0.0.1: a head node and a second node joined with
`ray start --address`, one CPU each, started once for the module and stopped after it. The backfill of an archive
must leave the same corpus (facesets, pool, crop bytes, manifests and .fsz) as `reconcile` of the same photos
dropped into the inbox; `rebuild` after it writes the same bytes; a second backfill records nothing and analyses
nothing; a driver killed with SIGKILL after its first records ends, run again, with the same corpus; an actor
killed with SIGKILL mid-run is restarted by Ray and the run ends with every photo recorded once and the same corpus.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from conftest import CLIP_ARCH
from daemon_proc import free_port
from helpers import REPO, cli, images, projections, rebuilt_from_log_alone

from daemon.backfill.analyse import FaceRecords
from daemon.backfill.precomputed import PrecomputedEngine, PrecomputedScorer
from daemon.backfill.records import (
    CROP,
    engine_identity,
    model_key,
    photo_row,
    read_records,
    record_files,
    recorded,
    table_of,
    write_records,
)
from gpu_agent.crop import crop_face, decode_image, encode_png
from gpu_agent.occlusion import OnnxOcclusionScorer
from gpu_agent.settings import ModelSettings
from handlers.thresholds import IdentityThresholds

# The archive: archive path -> photo under ../shared/faces. A seed folder, one person over several photos, a group
# photo, a photo with no face.
ARCHIVE = {
    "faceset_001/biden.jpg": "identities/biden/biden.jpg",
    "biden2.jpg": "identities/biden/biden2.jpg",
    "obama.jpg": "identities/obama/obama.jpg",
    "obama1.jpg": "identities/obama/obama1.jpg",
    "obama2.jpg": "identities/obama/obama2.jpg",
    "obama3.jpg": "identities/obama/obama3.jpg",
    "obama_and_biden.jpg": "group/obama_and_biden.jpg",
    "lin.jpg": "identities/lin_manuel_miranda/lin-manuel-miranda.jpg",
    "alex.jpg": "identities/alex_lacamoire/alex-lacamoire.jpg",
    "nothing.jpg": "no_face/pp7.jpg",
}
SETTINGS = ModelSettings(face_pack="buffalo_sc")
# With conftest's CLIP export (random weights) as the occlusion model: the crops' scores come from the records too.
CLIP_SETTINGS = ModelSettings(face_pack="buffalo_sc", clip_model=CLIP_ARCH, clip_pretrained="")
MIN_FACE_PX = IdentityThresholds().min_face_px  # the router's rule for which faces get a crop
# The test cluster's token: its nodes and the backfill drivers joining it share it.
RAY_TOKEN = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)}


def _env(models_root: Path, **extra: str) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_LOGGING_LEVEL": "warning", "PYTHONPATH": str(REPO), **RAY_TOKEN, **extra}


def _clip_env(clip_models: Path, **extra: str) -> dict[str, str]:
    """As _env, with the CLIP occlusion model on: every model call of the inbox path has a record to answer it."""
    return _env(clip_models, FACESETD_MODELS_CLIP_MODEL=CLIP_ARCH, FACESETD_MODELS_CLIP_PRETRAINED="", **extra)


def _archive(folder: Path, faces_dir: Path) -> Path:
    for rel, src in ARCHIVE.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(faces_dir / src, folder / rel)
    return folder


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _summary(proc: subprocess.CompletedProcess[str]) -> dict:
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines and lines[-1]["stage"] == "done", proc.stdout + proc.stderr
    return lines[-1]


# The parts ---------------------------------------------------------------------------------------------------
def test_the_records_key_is_the_engines_description_less_providers(face_engine, models_root: Path) -> None:
    """The driver decides which photos have a record without loading a model: its key must be the actors'."""
    described = {k: v for k, v in face_engine.describe().items() if k != "providers"}
    assert engine_identity(SETTINGS, models_root) == described
    assert model_key(face_engine.describe()) == model_key(described)
    assert model_key({**described, "det_thresh": 0.6}) != model_key(described)  # other models: other records


def _crops(photo: Path, engine) -> list[bytes]:
    """The PNGs the router would cut from the photo (faces with a short side of MIN_FACE_PX or more)."""
    image = decode_image(photo.read_bytes())
    return [encode_png(crop_face(image, f)) for f in engine.analyze([photo.read_bytes()], pad=True)[0]
            if f.short_side >= MIN_FACE_PX]


def _same_faces(got, expected) -> None:
    assert len(got) == len(expected)
    for a, b in zip(got, expected):
        assert (a.bbox, a.kps, a.det_score) == (b.bbox, b.kps, b.det_score)
        assert a.embedding.dtype == np.float32 and a.embedding.tobytes() == b.embedding.tobytes()


def test_a_record_gives_back_exactly_what_the_models_found(face_engine, clip_models: Path, faces_dir: Path,
                                                           tmp_path: Path) -> None:
    """The photo's faces as the router asks for them, and each crop's faces (as roop loads it) and occlusion
    scores as the checks ask for them."""
    photos = [faces_dir / "group/obama_and_biden.jpg", faces_dir / "no_face/pp7.jpg", faces_dir / "identities/obama/obama.jpg"]
    not_an_image = tmp_path / "notes.jpg"
    not_an_image.write_bytes(b"not a photo at all")
    actor = FaceRecords(CLIP_SETTINGS, str(clip_models), max_pixels=100_000_000, min_face_px=MIN_FACE_PX)
    assert actor.scorer.available and actor.scorer_key
    path = write_records(tmp_path / "records", table_of(actor.rows([str(p) for p in [*photos, not_an_image]])))
    assert path is not None and not path.name.startswith(".")
    records = read_records(tmp_path / "records", actor.model)
    scorer = OnnxOcclusionScorer(CLIP_SETTINGS, clip_models)
    crops = 0
    for photo in photos:
        data = photo.read_bytes()
        got = records[hashlib.sha256(data).hexdigest()]
        assert got.error == ""
        _same_faces(got.faces, face_engine.analyze([data], pad=True)[0])
        for png in _crops(photo, face_engine):
            crop = records[hashlib.sha256(png).hexdigest()]
            assert crop.kind == CROP and crop.scorer == actor.scorer_key
            _same_faces(crop.faces, face_engine.analyze([png], pad=False)[0])
            assert crop.occlusion == scorer.score([png])[0]
            crops += 1
    assert crops == 4  # three in the group photo (short sides 114, 120, 93 px), one of Obama alone
    assert recorded(tmp_path / "records", actor.model) == {hashlib.sha256(p.read_bytes()).hexdigest()
                                                          for p in [*photos, not_an_image]}  # photos, not crops
    bad = records[hashlib.sha256(b"not a photo at all").hexdigest()]
    assert bad.faces == () and "ImageDecodeError" in bad.error  # recorded, so it is never sent again
    assert read_records(tmp_path / "records", "another-model") == {}  # only records of the same models answer
    # Only the wanted photos' records, with their crops', are read back.
    obama = hashlib.sha256(photos[2].read_bytes()).hexdigest()
    wanted = read_records(tmp_path / "records", actor.model, {obama})
    assert set(wanted) == {obama, *(hashlib.sha256(png).hexdigest() for png in _crops(photos[2], face_engine))}


def test_a_crop_is_scored_from_its_record_only_for_the_same_scorer(face_engine, clip_models: Path,
                                                                  faces_dir: Path) -> None:
    actor = FaceRecords(CLIP_SETTINGS, str(clip_models), max_pixels=100_000_000, min_face_px=MIN_FACE_PX)
    photo = faces_dir / "identities/obama/obama.jpg"
    from daemon.backfill.records import Record

    rows = actor.rows([str(photo)])
    recorded_rows = {r["sha256"]: r for r in rows}
    (png,) = _crops(photo, face_engine)
    sha = hashlib.sha256(png).hexdigest()
    assert recorded_rows[sha]["occlusion"]
    records = {sha: Record(sha, (), kind=CROP, occlusion={"mask": 0.25, "sunglasses": 0.5}, scorer=actor.scorer_key)}
    same = PrecomputedScorer(records, OnnxOcclusionScorer(CLIP_SETTINGS, clip_models))
    assert same.score([png]) == [{"mask": 0.25, "sunglasses": 0.5}] and (same.answered, same.fell_back) == (1, 0)
    int8 = ModelSettings(face_pack="buffalo_sc", clip_model=CLIP_ARCH, clip_pretrained="", clip_precision="int8")
    other = PrecomputedScorer(records, OnnxOcclusionScorer(int8, clip_models))  # another model: its own scores
    assert other.score([png]) == OnnxOcclusionScorer(int8, clip_models).score([png])
    assert (other.answered, other.fell_back) == (0, 1)
    engine = PrecomputedEngine(records, face_engine)  # a crop's record answers the checks' call, not the router's
    assert engine.analyze([png], pad=False) == [[]] and engine.crops_answered == 1


def test_a_half_written_record_file_is_ignored_until_complete(tmp_path: Path) -> None:
    folder = tmp_path / "records"
    first = write_records(folder, table_of([photo_row("a" * 64, "m", "{}")]))
    later = write_records(tmp_path / "elsewhere", table_of([photo_row("b" * 64, "m", "{}")]))
    assert first is not None and later is not None
    whole = later.read_bytes()
    arriving = folder / later.name
    arriving.write_bytes(whole[: len(whole) // 2])  # a copy cut short (shared storage, a crash mid-copy)
    (folder / ".c.parquet.tmp-1234abcd").write_bytes(whole)  # a temp name: not a record file yet
    assert recorded(folder, "m") == {"a" * 64}
    assert set(read_records(folder, "m")) == {"a" * 64}
    arriving.write_bytes(whole)  # complete now
    assert recorded(folder, "m") == {"a" * 64, "b" * 64}


def test_a_photo_without_a_record_goes_to_the_configured_engine(face_engine, faces_dir: Path) -> None:
    class Counting:
        def __init__(self) -> None:
            self.calls: list[tuple[int, bool]] = []

        def analyze(self, images, *, pad=True):
            self.calls.append((len(images), pad))
            return face_engine.analyze(images, pad=pad)

        def describe(self):
            return face_engine.describe()

    known, unknown = (faces_dir / p for p in ("identities/obama/obama.jpg", "identities/biden/biden.jpg"))
    sha = hashlib.sha256(known.read_bytes()).hexdigest()
    fallback = Counting()
    from daemon.backfill.records import Record

    engine = PrecomputedEngine({sha: Record(sha, ())}, fallback)  # a record that says: no face
    found = engine.analyze([known.read_bytes(), unknown.read_bytes()], pad=True)
    assert found[0] == [] and len(found[1]) == 1  # the record answers, the engine the rest
    assert fallback.calls == [(1, True)] and (engine.answered, engine.fell_back) == (1, 1)
    engine.analyze([known.read_bytes()], pad=False)  # a crop's analysis as roop loads it: always the engine
    assert fallback.calls[-1] == (1, False)
    assert engine.describe() == face_engine.describe()


def test_backfill_without_ray_names_the_extra(tmp_path: Path, faces_dir: Path) -> None:
    """As on a base install: `import ray` fails. One line, exit 1, nothing created."""
    archive = _archive(tmp_path / "archive", faces_dir)
    code = ("import sys; sys.modules['ray'] = None; from daemon.cli import main; "
            f"sys.exit(main(['--data-dir', {str(tmp_path / 'data')!r}, 'backfill', {str(archive)!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "pip install 'facesetd[ray]'" in proc.stderr
    assert not (tmp_path / "data" / "inbox").exists()


def test_backfill_names_an_address_where_no_cluster_answers(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    archive = _archive(tmp_path / "archive", faces_dir)
    before = _tree(archive)
    proc = cli(tmp_path / "data", "backfill", str(archive), "--address", f"127.0.0.1:{free_port()}",
               env=_env(models_root), check=False, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("facesetd: error: backfill: no Ray cluster answers at 127.0.0.1:") and "ray start --head" in last
    assert _tree(archive) == before and not list((tmp_path / "data" / "inbox").iterdir())  # nothing copied


# On a real cluster ----------------------------------------------------------------------------------------------
def _ray(*args: str) -> list[str]:
    return [str(Path(sys.executable).parent / "ray"), *args]


@pytest.fixture(scope="module")
def cluster() -> Iterator[str]:
    """A head node and a second node on 127.0.0.1, one CPU each, with token authentication (Ray 2.60's default:
    every process of the cluster and every driver shares RAY_AUTH_TOKEN); its address. Stopped after."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0", **RAY_TOKEN}
    small = ["--num-cpus", "1", "--object-store-memory", "100000000", "--disable-usage-stats"]
    try:
        subprocess.run(_ray("start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--include-dashboard=false", *small), check=True, env=env, capture_output=True, timeout=120)
        subprocess.run(_ray("start", "--address", f"127.0.0.1:{port}", "--node-ip-address", "127.0.0.1", *small),
                       check=True, env=env, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run(_ray("stop", "--force"), env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path, clip_models: Path) -> Path:
    """The reference: the archive's photos dropped into the inbox of another data folder and reconciled (with the
    occlusion model on, as in every backfill below)."""
    data = tmp_path_factory.mktemp("dropped") / "data"
    _archive(data / "inbox", faces_dir)
    cli(data, "reconcile", env=_clip_env(clip_models), timeout=300)
    return data


def _backfill(data: Path, archive: Path, address: str, clip_models: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return cli(data, "backfill", str(archive), "--address", address, "--workers", "2", "--json",
               env=_clip_env(clip_models, **env), timeout=300)


@pytest.mark.slow
def test_backfill_on_a_cluster_equals_the_inbox_path_and_runs_once(cluster: str, dropped: Path, faces_dir: Path,
                                                                    clip_models: Path, tmp_path: Path) -> None:
    archive = _archive(tmp_path / "archive", faces_dir)
    before = _tree(archive)
    data = tmp_path / "data"
    summary = _summary(_backfill(data, archive, cluster, clip_models))
    assert summary["ray"]["workers"] == 2 and summary["ray"]["address"] == cluster
    assert (summary["photos"], summary["analysed"], summary["received"]) == (10, 10, 10)
    assert (summary["from_records"], summary["fell_back"]) == (10, 0)  # the router never ran the face model here
    # nor did the checks on the crops: every crop's faces and occlusion scores came from a record
    assert summary["crops_from_records"] > 0 and summary["scored_from_records"] == summary["crops_from_records"]
    assert (summary["crops_fell_back"], summary["scored_here"]) == (0, 0)
    assert _tree(archive) == before  # the archive is only read
    # The same corpus as the inbox path: every crop (facesets and pool), every manifest and .fsz.
    assert images(data / "corpus") == images(dropped / "corpus")
    assert projections(data / "corpus") == projections(dropped / "corpus")
    status = json.loads(cli(data, "status", "--json", env=_clip_env(clip_models)).stdout)
    reference = json.loads(cli(dropped, "status", "--json", env=_clip_env(clip_models)).stdout)
    assert status["facesets"] == reference["facesets"] and status["pool"] == reference["pool"]
    assert rebuilt_from_log_alone(data, tmp_path / "rebuilt") == projections(data / "corpus")

    # Again: nothing analysed, nothing copied, nothing recorded.
    records = _tree(data / "state" / "records")
    head = json.loads(cli(data, "status", "--json", env=_clip_env(clip_models)).stdout)["log_position"]
    again = _summary(_backfill(data, archive, cluster, clip_models))
    assert (again["analysed"], again["copied"], again["received"], again["logged"], again["known"]) == (0, 0, 0, 0, 10)
    assert again["ray"] is None  # not even a connection to the cluster
    assert _tree(data / "state" / "records") == records
    assert json.loads(cli(data, "status", "--json", env=_clip_env(clip_models)).stdout)["log_position"] == head


def _start_driver(cluster: str, faces_dir: Path, clip_models: Path,
                  tmp_path: Path) -> tuple[Path, Path, dict[str, str], subprocess.Popen[str]]:
    """A backfill of a fresh archive into a fresh data folder on the cluster, one photo a batch (records come one
    by one), as a driver process the test can kill: the archive, the data folder, the env, the driver."""
    archive = _archive(tmp_path / "archive", faces_dir)
    data = tmp_path / "data"
    env = {**os.environ, "FACESETD_LOGGING_FORMAT": "json", **_clip_env(clip_models, FACESETD_MODELS_BATCH_SIZE="1")}
    driver = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(data), "backfill", str(archive),
                               "--address", cluster, "--workers", "2", "--json"], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return archive, data, env, driver


@pytest.mark.slow
def test_a_driver_killed_mid_run_ends_with_the_same_corpus(cluster: str, dropped: Path, faces_dir: Path,
                                                           clip_models: Path, tmp_path: Path) -> None:
    archive, data, env, driver = _start_driver(cluster, faces_dir, clip_models, tmp_path)
    records = data / "state" / "records"
    try:
        deadline = time.monotonic() + 180
        while not record_files(records):
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no record written"
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
    finally:
        driver.wait(30)
    first = len(recorded(records, model_key(engine_identity(SETTINGS, clip_models))))
    assert first >= 1
    summary = _summary(cli(data, "backfill", str(archive), "--address", cluster, "--workers", "2", "--json",
                           env=_clip_env(clip_models, FACESETD_MODELS_BATCH_SIZE="1"), timeout=300))
    assert summary["had_records"] >= first and summary["had_records"] + summary["analysed"] == 10  # none twice
    assert summary["analysed"] >= 1  # killed mid-run (batches of one photo: the first record, not the last)
    assert summary["fell_back"] == 0
    assert images(data / "corpus") == images(dropped / "corpus")
    assert projections(data / "corpus") == projections(dropped / "corpus")


def _actor_pids() -> list[int]:
    """The Ray worker processes running a FaceRecords actor (Ray names them ray::MapWorker(MapBatches(...)))."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if b"MapWorker(MapBatches(FaceRecords))" in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.slow
def test_a_worker_killed_mid_run_is_retried_by_ray(cluster: str, dropped: Path, faces_dir: Path, clip_models: Path,
                                                   tmp_path: Path) -> None:
    archive, data, env, driver = _start_driver(cluster, faces_dir, clip_models, tmp_path)
    records = data / "state" / "records"
    try:
        deadline = time.monotonic() + 180
        while not record_files(records) or not _actor_pids():
            assert driver.poll() is None, driver.communicate()
            assert time.monotonic() < deadline, "no record written"
            time.sleep(0.05)
        victim = _actor_pids()[0]
        os.kill(victim, signal.SIGKILL)
        at_kill = len(record_files(records))
        out, err = driver.communicate(timeout=240)
    finally:
        if driver.poll() is None:
            driver.kill()
            driver.wait(30)
    assert driver.returncode == 0, out + err
    assert at_kill < 10  # killed with batches left (batches of one photo)
    summary = _summary(subprocess.CompletedProcess([], 0, out, err))
    assert summary["analysed"] == 10 and summary["fell_back"] == 0  # every photo analysed on Ray, once recorded
    assert len(recorded(records, model_key(engine_identity(SETTINGS, clip_models)))) == 10
    assert images(data / "corpus") == images(dropped / "corpus")
    assert projections(data / "corpus") == projections(dropped / "corpus")


@pytest.mark.slow
def test_without_an_address_the_backfill_starts_a_local_ray_of_its_own(cluster: str, faces_dir: Path,
                                                                       models_root: Path, tmp_path: Path) -> None:
    """The default: a Ray started in this process, even with a `ray start` cluster on the machine (which a bare
    ray.init() would join). Run at a terminal (a real pty): progress lines a person reads, then the summary."""
    from test_cli_terminal import on_pty

    archive = tmp_path / "archive"
    archive.mkdir()
    for name in ("obama.jpg", "obama1.jpg"):
        shutil.copy(faces_dir / "identities/obama" / name, archive / name)
    shutil.copy(faces_dir / "no_face/pp7.jpg", archive / "nothing.jpg")
    code, shown = on_pty(tmp_path / "data", "backfill", str(archive), "--workers", "1",
                         env={**os.environ, **_env(models_root)})
    assert code == 0, shown
    lines = [line.strip() for line in shown.splitlines() if line.strip()]
    assert not any(line.startswith("{") for line in lines), shown  # no JSON at a terminal
    assert any(line.startswith("analysed on Ray: 3/3 photos, ") for line in lines), shown
    assert any(line.startswith("ingested: 3/3 photos") for line in lines), shown
    assert lines[-1].startswith(f"backfill of {archive}: 3 photos (0 known already); 3 analysed on Ray (1 worker,"
                                " local)"), shown
    assert "3 photos received" in lines[-1] and "analysed here" not in lines[-1], shown


IMMICH_KEY = "fake-key-Backfill-5Tr9"


@pytest.mark.slow
def test_backfill_from_immich_equals_a_poll_and_runs_once(cluster: str, faces_dir: Path, clip_models: Path,
                                                           tmp_path: Path) -> None:
    """`backfill --immich`: the poller's listing and staging, the model work on the cluster, then the same corpus
    as `immich poll --once` of the same library (one poller worker each: the same delivery order)."""
    from tests.immich_fake import FakeImmich, library

    photos = [faces_dir / src for src in ARCHIVE.values()]
    config = tmp_path / "facesetd.toml"
    env = _clip_env(clip_models, IMMICH_KEY_ALICE=IMMICH_KEY)
    with FakeImmich(api_key=IMMICH_KEY) as fake:
        library(fake, photos)
        config.write_text(f'[immich]\nurl = "{fake.url}"\ntimeout_s = 10.0\nworkers = 1\n'
                          '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n')
        polled, data = tmp_path / "polled", tmp_path / "data"
        cli(polled, "--config", str(config), "immich", "poll", "--once", env=env, timeout=300)
        first = cli(data, "--config", str(config), "backfill", "--immich", "--address", cluster, "--workers", "2",
                    "--json", env=env, timeout=300)
        again = _summary(cli(data, "--config", str(config), "backfill", "--immich", "--address", cluster, "--json",
                             env=env, timeout=300))
        assert fake.validation_errors == []
    assert IMMICH_KEY not in first.stdout + first.stderr
    summary = _summary(first)
    polls = [json.loads(line) for line in first.stdout.splitlines() if '"stage": "poll"' in line]
    assert polls == [{"stage": "poll", "user": "alice", "listed": len(photos), "delivered": len(photos)}]
    assert (summary["photos"], summary["analysed"], summary["received"]) == (len(photos),) * 3
    assert (summary["fell_back"], summary["crops_fell_back"], summary["scored_here"]) == (0, 0, 0)
    assert summary["crops_from_records"] > 0
    assert images(data / "corpus") == images(polled / "corpus")
    assert projections(data / "corpus") == projections(polled / "corpus")
    assert rebuilt_from_log_alone(data, tmp_path / "rebuilt") == projections(data / "corpus")
    assert (again["photos"], again["analysed"], again["logged"], again["ray"]) == (0, 0, 0, None)
