"""Invariants every scenario must keep (temporary minimal version; the soak branch brings the full set)."""

from __future__ import annotations

import json
from pathlib import Path


def manifest_entries_exist(data: Path) -> list[str]:
    """Every file a per-faceset manifest lists exists on disk."""
    corpus = data / "corpus"
    problems: list[str] = []
    for manifest in corpus.rglob("manifest.json"):
        if manifest.parent == corpus:
            continue
        m = json.loads(manifest.read_text())
        for entry in m.get("faces", []) + m.get("dropped", []):
            if not (manifest.parent / "faces" / entry["file"]).exists():
                problems.append(f"{manifest.relative_to(corpus)} lists missing {entry['file']}")
        for entry in m.get("slotted", []):
            if not (corpus / entry["file"]).exists():
                problems.append(f"{manifest.relative_to(corpus)} lists missing slotted {entry['file']}")
    return problems
