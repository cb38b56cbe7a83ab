"""Builds corpora the way the batch scripts left them, with real (small, distinct) PNG files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image


def png_bytes(seed: int, size: int = 64) -> bytes:
    """A small PNG whose pixels depend on `seed`: distinct seeds give distinct bytes."""
    import io

    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def write_png(path: Path, seed: int, size: int = 64) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = png_bytes(seed, size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def batch_corpus(root: Path) -> dict[str, list[str]]:
    """faceset_001..003 (001 with a _dropped/ PNG), faceset_004 in _masked/, faceset_005 in _thin/,
    a master manifest with masked[] and thin_eras[], per-faceset manifests with sources.
    Returns every PNG path (relative) by faceset."""
    files: dict[str, list[str]] = {}
    seed = 1
    layout = {"faceset_001": ("", 4), "faceset_002": ("", 3), "faceset_003": ("", 6),
              "faceset_004": ("_masked", 3), "faceset_005": ("_thin", 2)}
    for name, (area, n) in layout.items():
        folder = root / area / name if area else root / name
        entries = []
        for i in range(n):
            rel = f"{area + '/' if area else ''}{name}/faces/{i:04d}.png"
            sha = write_png(root / rel, seed)
            seed += 1
            files.setdefault(name, []).append(rel)
            entries.append({"file": f"{i:04d}.png", "sha256": sha, "source": f"/photos/{name}/img_{i}.jpg"})
        (folder / "manifest.json").write_text(json.dumps({"faceset": name, "faces": entries}))
        (folder / f"{name}.fsz").write_bytes(b"old zip from the batch scripts")
        (folder / f"{name}.txt").write_text("placeholder for the operator")
    rel = "faceset_001/faces/_dropped/0099.png"
    write_png(root / rel, 999)
    files["faceset_001"].append(rel)
    master = {
        "facesets": [{"name": n} for n in ("faceset_001", "faceset_002", "faceset_003")],
        "masked": [{"faceset": "faceset_004", "reason": "sunglasses 0.62"}],
        "merged": [],
        "thin_eras": ["faceset_005"],
        "occlusion_filter_run": {"date": "2026-04-27", "pruned": 183},
    }
    (root / "manifest.json").write_text(json.dumps(master))
    return files


def snapshot(root: Path) -> dict[str, str]:
    """path -> sha256 of every file under root (for before/after comparisons)."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*")) if p.is_file()
    }
