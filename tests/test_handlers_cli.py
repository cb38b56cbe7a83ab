"""The checks through the real CLI: `facesetd reconcile`, `events` and `restore`, with the real buffalo_sc pack
and (second test) the real ONNX occlusion scorer on a ViT-B-32 exported with random weights."""

from __future__ import annotations

import json
from pathlib import Path

from tests.handler_fixtures import png, variant, write_corpus
from tests.helpers import cli, images

CHECKS_CORPUS = ("obama", "obama1", "obama2", "biden", "biden2", "alex1")


def _corpus(data: Path, crops) -> dict[str, str]:
    files = {f"faceset_001/faces/{n}.png": png(variant(crops[n], i)) for i, n in enumerate(CHECKS_CORPUS)}
    files["faceset_001/faces/pair.png"] = png(crops["two_faces"])
    return write_corpus(data / "corpus", files)


def _events(data: Path, env: dict[str, str], kind: str) -> list[dict]:
    out = cli(data, "events", "--json", "--kind", kind, env=env).stdout
    return [json.loads(line) for line in out.splitlines() if line.startswith("{") and '"kind"' in line]


def test_cli_reconcile_explains_and_restores_without_clip(tmp_path: Path, models_root: Path, crops) -> None:
    data = tmp_path / "data"
    original = _corpus(data, crops)
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}
    run = cli(data, "reconcile", env=env)
    logs = run.stdout + run.stderr
    assert logs.count("occlusion check off") == 1  # said once, and the other checks ran
    (pruned,) = _events(data, env, "face_pruned")
    assert pruned["subject"] == "faceset_001/faces/pair.png"
    assert pruned["payload"]["check"] == "multi_face"
    assert pruned["payload"]["inputs"]["face_count"] == 2 and pruned["payload"]["inputs"]["model"]["pack"] == "buffalo_sc"
    text = cli(data, "events", env=env).stdout
    assert "2 faces at det_thresh 0.5" in text
    assert "faceset_001/faces/pair.png" not in images(data / "corpus")

    cli(data, "restore", str(pruned["id"]), env=env)
    assert images(data / "corpus") == original
    cli(data, "reconcile", env=env)  # the restored file stays
    assert images(data / "corpus") == original
    assert len(_events(data, env, "face_pruned")) == 1


def test_cli_reconcile_with_the_onnx_scorer(tmp_path: Path, clip_models: Path, crops) -> None:
    data = tmp_path / "data"
    _corpus(data, crops)
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(clip_models),
           "FACESETD_MODELS_CLIP_MODEL": "ViT-B-32", "FACESETD_MODELS_CLIP_PRETRAINED": ""}
    run = cli(data, "reconcile", env=env, timeout=300)
    assert "occlusion check off" not in run.stdout + run.stderr
    scored = _events(data, env, "occlusion_scored")
    assert sorted(e["subject"] for e in scored) == sorted(f"faceset_001/faces/{n}.png" for n in CHECKS_CORPUS)
    for e in scored:
        assert e["payload"]["model"]["model"] == "ViT-B-32/random"
        assert 0.0 <= e["payload"]["mask"] <= 1.0 and 0.0 <= e["payload"]["sunglasses"] <= 1.0
    by_path = {e["subject"]: e["payload"] for e in scored}
    for d in _events(data, env, "face_pruned"):
        p = d["payload"]
        if p["check"] == "occlusion":  # random weights: whatever it scores, the rule is applied to it
            s = by_path[d["subject"]]
            assert max(s["mask"], s["sunglasses"]) >= 0.7 and p["inputs"]["threshold"] == 0.7
    manifest = json.loads((data / "corpus" / "manifest.json").read_text())
    assert manifest["provenance"]["log_position"] > 0
