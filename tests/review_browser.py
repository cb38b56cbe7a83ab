"""What the Chromium tests of the review pages share: Debian's chromium, the viewport of the screenshots, the
daemon's environment, and waits for the thumbnails. The `browser` and `screenshots` fixtures are in
tests/conftest.py: the tests write their screenshots to a temporary folder, never into the repository;
`bench/review_screenshots.py` runs them with FACESETD_TEST_SCREENSHOTS=docs/review to refresh the docs' ones."""

from __future__ import annotations

from pathlib import Path

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}


def review_env(models_root: Path, **extra: str) -> dict[str, str]:
    # match_distance pinned at buffalo_l's 0.45 (buffalo_sc's own is 0.50): the pages' candidate is alex-lacamoire.jpg
    # at 0.469 of img1.jpg, just past it
    return {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root),
            "FACESETD_QUEUE_CLUSTER_INTERVAL_S": "1.0", "FACESETD_IDENTITY_MATCH_DISTANCE": "0.45", **extra}


def thumbs_render(page: object) -> None:
    """Every thumbnail in the viewport has loaded with a non-zero natural size (the rest load lazily)."""
    page.wait_for_function(  # type: ignore[attr-defined]
        """() => {
            const shown = Array.from(document.images).filter(i => i.getBoundingClientRect().top < innerHeight);
            return shown.length > 0 && shown.every(i => i.complete && i.naturalWidth > 0);
        }""", timeout=20000)


def shot(page: object, folder: Path, name: str) -> None:
    """FOLDER/NAME.png at 1280x800, as docs/review.md shows it (folder: the `screenshots` fixture)."""
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"))  # type: ignore[attr-defined]
