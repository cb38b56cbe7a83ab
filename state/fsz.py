"""The .fsz bundle exactly as roop-unleashed reads it (DOMAIN.md section 2).

A plain zip, ZIP_STORED, of flat members `0.png`, `1.png`, ... (lowercase .png). Deterministic: the
members are written in the order given, with a fixed timestamp and fixed attributes, so the same
PNGs give byte-identical files.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterable

FIXED_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip can hold: no wall-clock time leaks in


def build_fsz(pngs: Iterable[bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for i, data in enumerate(pngs):
            info = zipfile.ZipInfo(f"{i}.png", date_time=FIXED_DATE)
            info.compress_type = zipfile.ZIP_STORED
            info.create_system = 3  # unix, whatever platform wrote it
            info.external_attr = 0o100644 << 16
            zf.writestr(info, data)
    return buf.getvalue()
