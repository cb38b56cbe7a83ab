"""`facesetd calibrate DIR` (issue 21): the configured pack measured on labelled real photos with the real buffalo_sc
models and the real CLI; `--write` changes what `facesetd config` says is in force, and where it comes from."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

from daemon import calibration as cal

pytestmark = pytest.mark.slow


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def identity_lines(config_text: str) -> dict[str, str]:
    """`facesetd config`'s [identity] assignments: key -> the rest of the line (value and where it comes from)."""
    section = config_text.split("[identity]\n", 1)[1].split("\n[", 1)[0]
    return {line.split(" = ", 1)[0]: line.split(" = ", 1)[1] for line in section.splitlines()
            if " = " in line and not line.startswith("#")}


def test_calibrate_on_the_identities_then_write(tmp_path: Path, faces_dir: Path, env: dict[str, str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "facesetd.toml").write_text("# my own notes\n[models]\nface_pack = \"buffalo_sc\"  # the small one\n")
    before = identity_lines(cli(data, "config", env=env).stdout)
    assert before["cluster_distance"] == "0.6  # from: face pack buffalo_sc"

    out = json.loads(cli(data, "calibrate", str(faces_dir / "identities"), "--json", env=env).stdout)
    assert out["pack"] == "buffalo_sc" and out["people"] >= 5
    # pp_woman's faces are 31-50 px: below min_face_px, each skipped with why
    assert sum("pp_woman/" in s and "no face of 90 px or more" in s for s in out["skipped"]) == 3
    assert out["same_person"]["max"] < out["different_people"]["min"]  # these photos leave a gap
    assert [t["far"] for t in out["tar"]] == [1e-3, 1e-4] and all(0 <= t["tar"] <= 1 for t in out["tar"])
    assert out["settings"]["cluster_distance"] == {"value": 0.6, "from": "face pack buffalo_sc"}
    assert out["facesets"]["impure"] == 0 and out["with_forming"]["impure"] == 0
    rec = out["recommended"]
    assert set(rec) == {"match_distance", "cluster_distance", "merge_distance", "candidate_band"}
    assert rec["match_distance"] < rec["cluster_distance"] < out["different_people"]["min"]

    text = cli(data, "calibrate", str(faces_dir / "identities"), "--write", env=env).stdout
    assert "recommended for this pack on these photos: match_distance = " in text and "written to " in text
    written = (data / "facesetd.toml").read_text()
    assert written.startswith("# my own notes\n[models]\nface_pack = \"buffalo_sc\"  # the small one\n")
    after = identity_lines(cli(data, "config", env=env).stdout)
    for key, value in rec.items():
        assert after[key] == f"{value!r}  # from: {data / 'facesetd.toml'}", (key, after[key])
    # a variable still wins over the file, and config says so
    pinned = identity_lines(cli(data, "config", env={**env, "FACESETD_IDENTITY_MATCH_DISTANCE": "0.3"}).stdout)
    assert pinned["match_distance"] == "0.3  # from: FACESETD_IDENTITY_MATCH_DISTANCE"


def test_calibrate_refuses_a_folder_of_one_person_or_of_no_faces(tmp_path: Path, faces_dir: Path,
                                                                  env: dict[str, str]) -> None:
    data = tmp_path / "data"
    data.mkdir()
    one = tmp_path / "one"
    shutil.copytree(faces_dir / "identities" / "obama", one / "obama")
    proc = cli(data, "calibrate", str(one), env=env, check=False)
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("holds photos of 1 person(s); calibrate needs at least 2 (one subfolder per"
                                        " person, each with their photos)")
    no_faces = tmp_path / "no_faces"
    shutil.copytree(faces_dir / "no_face", no_faces / "nobody")
    shutil.copytree(faces_dir / "identities" / "biden", no_faces / "biden")
    proc = cli(data, "calibrate", str(no_faces), env=env, check=False)
    error = proc.stderr.strip().splitlines()[-1]  # (above it, piped: the JSON log of the models opening)
    assert proc.returncode == 1 and error.startswith("facesetd: error: only 1 person(s) have a photo with a usable"
                                                     " face (9 photos skipped: nobody/pp10.jpg (no face of 90 px")
    proc = cli(data, "calibrate", str(tmp_path / "missing"), env=env, check=False)
    assert proc.returncode == 1 and "is not a folder" in proc.stderr


def test_recommend_and_tar_follow_their_rule() -> None:
    diff = np.linspace(0.70, 1.2, 2000)
    rec = cal.recommend(diff)
    assert rec == {"match_distance": 0.5, "cluster_distance": 0.6, "merge_distance": 0.6, "candidate_band": 0.15}
    same = np.array([0.2, 0.3, 0.69, 0.71])
    at, tar, exact = cal.tar_at_far(same, diff, 1e-3)
    assert exact and at == pytest.approx(0.7005, abs=1e-3) and tar == 0.75
    assert cal.tar_at_far(same, diff, 1e-4)[2] is False  # 2000 pairs cannot tell a FAR of 1e-4
