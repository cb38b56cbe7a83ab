"""People forming in the pool (issue 21): unseeded photos of a person with 3 or 4 photos are named by `status` (and
`status --json` lists each with its faces, its nearest faceset and the distance); at the gate of 5 distinct photos
the person becomes a faceset by itself. Real photos, the real buffalo_sc models, the real CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from helpers import cli

pytestmark = pytest.mark.slow

OBAMA = ("obama.jpg", "obama1.jpg", "obama2.jpg", "obama3.jpg", "obama_small.jpg")
ALEX = ("alex-lacamoire.jpg", "alex_lacamoire1.jpg", "img1.jpg")


@pytest.fixture
def env(models_root: Path) -> dict[str, str]:
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}


def drop(faces_dir: Path, inbox: Path, person: str, names: tuple[str, ...]) -> None:
    inbox.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(faces_dir / "identities" / person / name, inbox / f"{person}-{name}")


def test_a_person_forms_in_the_pool_then_becomes_a_faceset_at_the_gate(tmp_path: Path, faces_dir: Path,
                                                                       env: dict[str, str]) -> None:
    data = tmp_path / "data"
    inbox = data / "inbox"
    drop(faces_dir, inbox, "obama", OBAMA[:3])
    drop(faces_dir, inbox, "alex_lacamoire", ALEX)
    cli(data, "reconcile", env=env)

    status = json.loads(cli(data, "status", "--json", env=env).stdout)
    assert status["facesets"]["active"] == 0 and status["pool"]["min_new_faceset"] == 5
    forming = status["pool"]["forming"]
    assert sorted(p["photos"] for p in forming) == [3, 3]
    by_person = {p["faces"][0]["photo"].split("-", 1)[0].rsplit("/", 1)[-1]: p for p in forming}
    assert set(by_person) == {"obama", "alex_lacamoire"}
    for person, names in (("obama", OBAMA[:3]), ("alex_lacamoire", ALEX)):
        p = by_person[person]
        assert sorted(f["photo"].rsplit("/", 1)[-1] for f in p["faces"]) == sorted(f"{person}-{n}" for n in names)
        assert all((data / "corpus" / f["path"]).is_file() and f["face_id"] for f in p["faces"])
        assert p["nearest"] == "" and p["distance"] is None  # no faceset yet
    text = cli(data, "status", env=env).stdout
    assert "forming       2 people with 3 photos or more, below the gate of 5" in text
    for f in by_person["obama"]["faces"]:
        assert f"    {f['face_id']}" in text
    # the review page's pool shows the same two (the static report is the same page)
    cli(data, "report", "--out", str(tmp_path / "report"), env=env)
    pool_page = (tmp_path / "report" / "pool.html").read_text()
    assert pool_page.count('class="badge forming"') == 2 and all(f["face_id"] in pool_page for f in by_person["obama"]["faces"])

    # two more photos: obama reaches the gate and is promoted by itself; alex forms on, now beside a faceset
    drop(faces_dir, inbox, "obama", OBAMA[3:])
    cli(data, "reconcile", env=env)
    status = json.loads(cli(data, "status", "--json", env=env).stdout)
    assert status["facesets"]["active"] == 1
    (faceset,) = status["faceset_list"]
    assert faceset["name"] == "faceset_001" and faceset["faces"] + faceset["dropped"] == 5
    (alex,) = status["pool"]["forming"]
    assert alex["photos"] == 3 and alex["nearest"] == "faceset_001" and alex["distance"] > 0.6
    promoted = [json.loads(line) for line in cli(data, "events", "--kind", "faceset_promoted", "--json",
                                                 env=env).stdout.splitlines()]
    assert [e["payload"]["inputs"]["min_new_faceset"] for e in promoted] == [5]
    assert "(average linkage)" in promoted[0]["payload"]["reason"]
