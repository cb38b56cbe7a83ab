"""Immich poller throughput against the fake server, beside plain GET requests to the same server.

    PYTHONPATH=$PWD python bench/immich.py [--assets 2000] [--workers 8] [--validate]

Builds a fake library of N assets from ../shared/faces/identities (each served with a unique
trailer so every original has its own sha256), runs one full poll_user pass into a temporary
staging folder, then times N plain authenticated GET /api/faces requests with the same number of
threads. By default the fake does not run openapi-core on each exchange (that would time the
validator, not the client); --validate turns it on.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import requests
from requests.adapters import HTTPAdapter

from daemon.immich.client import ImmichClient
from daemon.immich.poller import poll_user
from handlers.thresholds import IdentityThresholds
from tests.immich_fake import FakeAsset, FakeImmich, big_face, photo_size
from tests.immich_memory_store import MemoryImportStore

KEY = "bench-key-0123456789"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--assets", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--page-size", type=int, default=250)
    ap.add_argument("--validate", action="store_true", help="validate every exchange with openapi-core")
    args = ap.parse_args()

    photos = sorted((REPO.parent / "shared" / "faces" / "identities").glob("*/*.jpg"))
    sizes = {p: photo_size(p) for p in photos}
    start = datetime.now(timezone.utc) - timedelta(days=2)
    with FakeImmich(api_key=KEY, validate=args.validate) as fake, tempfile.TemporaryDirectory() as tmp:
        for i in range(args.assets):
            p = photos[i % len(photos)]
            w, h = sizes[p]
            fake.add(FakeAsset(p, w, h, [big_face(w, h)], start + timedelta(seconds=i), start,
                               taken_at=start - timedelta(hours=i), trailer=f"#{i:08d}".encode()))
        client = ImmichClient(fake.url, KEY, pool_size=args.workers)
        store = MemoryImportStore()
        t0 = time.perf_counter()
        r = poll_user(client, store, Path(tmp) / "staging", "bench", page_size=args.page_size, workers=args.workers,
                      min_face_px=IdentityThresholds().min_face_px)
        poll_s = time.perf_counter() - t0
        staged_mb = sum(d.path.stat().st_size for d in store.delivered) / 1e6

        session = requests.Session()
        session.mount("http://", HTTPAdapter(pool_maxsize=args.workers))
        session.headers["x-api-key"] = KEY
        ids = list(fake.assets)

        def get(aid: str) -> int:
            resp = session.get(fake.url + "/api/faces", params={"id": aid}, timeout=30)
            _ = resp.content  # read the body, as a client would
            return resp.status_code

        t0 = time.perf_counter()
        with ThreadPoolExecutor(args.workers) as pool:
            codes = list(pool.map(get, ids))
        get_s = time.perf_counter() - t0
        assert all(c == 200 for c in codes)
        assert not fake.validation_errors, fake.validation_errors[:3]

    print(f"assets: {r.listed}, delivered {r.delivered} ({staged_mb:.0f} MB of originals), "
          f"workers {args.workers}, page size {args.page_size}, validation {'on' if args.validate else 'off'}")
    print(f"poll_user full pass : {r.listed / poll_s:8.1f} assets/s  ({poll_s:.2f} s; per asset 1 faces GET + 1 original)")
    print(f"plain GET /api/faces: {len(ids) / get_s:8.1f} requests/s ({get_s:.2f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
