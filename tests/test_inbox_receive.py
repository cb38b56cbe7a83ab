"""The inbox scanner's rules, without models: what counts as a photo, forced folders, no double receipt."""

from __future__ import annotations

from pathlib import Path

from helpers import open_pipeline

from daemon.inbox import forced_faceset, is_candidate, list_waiting, receive


def test_candidates_and_forced_folders() -> None:
    assert is_candidate("a.jpg") and is_candidate("faceset_001/a.heic") and is_candidate("trip/a.webp")
    for rel in ("_processed/a.jpg", "_rejected/unreadable/a.jpg", ".a.jpg", "sub/.hidden/a.jpg",
                "a.jpg.part", "a.jpg.crdownload", ".a.jpg.tmp-123", "a.jpg~"):
        assert not is_candidate(rel), rel
    assert forced_faceset("faceset_012/a.jpg") == "faceset_012"
    assert forced_faceset("faceset_012/sub/a.jpg") == "faceset_012"
    assert forced_faceset("faceset_1/a.jpg") == "" and forced_faceset("faceset_012.jpg") == ""


def test_receive_once_and_scan_skips_pending(tmp_path: Path) -> None:
    pipeline = open_pipeline(tmp_path / "data")
    inbox = pipeline.config.inbox_dir
    (inbox / "faceset_003").mkdir(parents=True)
    (inbox / "faceset_003/a.jpg").write_bytes(b"seed")
    (inbox / "b.jpg").write_bytes(b"loose")
    pos = receive(pipeline, inbox / "faceset_003/a.jpg")
    assert pos is not None
    assert receive(pipeline, inbox / "faceset_003/a.jpg") is None  # already received, not yet handled
    assert receive(pipeline, tmp_path / "elsewhere.jpg") is None
    found = [pipeline.log.get(pos).event for pos in (receive(pipeline, inbox / rel) for rel in list_waiting(inbox))
             if pos is not None]  # type: ignore[union-attr]
    assert [(e.path, e.forced_faceset) for e in found] == [("b.jpg", "")]  # type: ignore[attr-defined]
    stored = pipeline.log.get(pos)
    assert stored is not None and stored.event.forced_faceset == "faceset_003"  # type: ignore[attr-defined]
    assert stored.event.provenance == {"photo": "inbox/faceset_003/a.jpg"}  # type: ignore[attr-defined]
    # new bytes under the same name are a new photo
    (inbox / "faceset_003/a.jpg").write_bytes(b"seed, edited")
    again = [receive(pipeline, inbox / rel) for rel in list_waiting(inbox)]
    assert again[0] is not None and again[1] is None  # b.jpg: received already, not yet handled
    assert pipeline.log.get(again[0]).event.path == "faceset_003/a.jpg"  # type: ignore[union-attr,attr-defined]
