"""The corpus state's tables for corrections by a person and uncertain matches (state/corrections_state.py).

Projections like the others: `facesetd rebuild` empties them and replays the log.
"""

from __future__ import annotations

CORRECTION_TABLES = """
CREATE TABLE IF NOT EXISTS candidates (
    face_id  TEXT NOT NULL,        -- a pool face proposed for a faceset (it stays in the pool)
    faceset  TEXT NOT NULL,
    distance REAL NOT NULL,        -- to that faceset's centroid, past [identity] match_distance
    position INTEGER NOT NULL,     -- of its FaceCandidate
    PRIMARY KEY (face_id, faceset)
);
CREATE TABLE IF NOT EXISTS vetoes (
    face_id  TEXT NOT NULL,        -- a pool face a person said is not this faceset's person
    faceset  TEXT NOT NULL,
    PRIMARY KEY (face_id, faceset)
);
CREATE TABLE IF NOT EXISTS labels (
    faceset  TEXT PRIMARY KEY,     -- a person's name for the faceset (FacesetLabelled)
    label    TEXT NOT NULL
);
"""
CORRECTION_PROJECTION_TABLES = ("candidates", "vetoes", "labels")
