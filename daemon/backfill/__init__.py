"""`facesetd backfill`: an archive's model work on a Ray cluster, its decisions in this process (the one writer).

    records.py      the Parquet records, one row per photo keyed by its sha256 (written atomically, read back)
    analyse.py      the Ray Data job: actors that open the face engine once and turn photo bytes into records
    precomputed.py  a FaceEngine that answers the router from the records (the configured engine for the rest)
    ingest.py       the archive's photos listed, hashed, analysed where no record exists, copied into the inbox
                    in name order and received by the normal pipeline

Nothing here imports Ray or pyarrow at module level: they are the optional extra `facesetd[ray]`, imported
when the verb runs (`require_ray`).
"""

from __future__ import annotations

from state.errors import FacesetdError

EXTRA_HINT = "pip install 'facesetd[ray]'"


class RayMissing(FacesetdError):
    """Ray (or pyarrow) is not installed: the one line names the extra that brings them."""


def require_ray() -> None:
    """Import Ray Data and pyarrow, or raise RayMissing naming the extra."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data  # noqa: F401
    except ImportError as missing:
        raise RayMissing(f"facesetd backfill needs Ray, an optional extra: {EXTRA_HINT} ({missing})") from None
