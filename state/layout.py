"""The corpus layout on disk (DOMAIN.md section 1) and how paths map to facesets.

    <corpus>/manifest.json
    <corpus>/faceset_001/faces/*.png, faces/_dropped/*.png, manifest.json, faceset_001.fsz, faceset_001_top8.fsz
    <corpus>/_masked/ _merged/ _thin/ faceset_NNN/...   whole facesets quarantined
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# The areas a faceset folder sits in: the corpus root for the active ones, and the quarantine folders. These are
# folder names; the checks that move a faceset there have names of their own (e.g. the check "thin").
ACTIVE_AREA = ""
MASKED_AREA = "_masked"  # too many of its images masked or sunglassed
MERGED_AREA = "_merged"  # merged into another faceset (or a restored era split's bucket)
THIN_AREA = "_thin"  # too few images left, or a promotion undone
QUARANTINE_AREAS = (MASKED_AREA, MERGED_AREA, THIN_AREA)
AREAS = (ACTIVE_AREA, *QUARANTINE_AREAS)
# How status, the review pages and the master manifest name each area.
AREA_NAMES = {ACTIVE_AREA: "active", MASKED_AREA: "masked", MERGED_AREA: "merged", THIN_AREA: "thin"}
DROPPED = "_dropped"
# A faceset's number has 3 to FACESET_DIGITS_MAX digits: faceset_001 ... faceset_999999. The bound keeps every name
# made from it (faceset_NNN_top8.fsz, its temp names, inbox/_rejected/... paths) far within NAME_MAX; a folder
# named faceset_ with more digits is not a faceset (in the corpus) nor a seeding folder (in the inbox).
FACESET_DIGITS_MAX = 6
FACESET_RE = re.compile(rf"^faceset_(\d{{3,{FACESET_DIGITS_MAX}}})$", re.ASCII)  # ASCII: '١٢٣' is not 123
_FACESET_LIKE = re.compile(r"^faceset_\d+$", re.ASCII)
MASTER_MANIFEST = "manifest.json"
POOL_DIR = "_pool"  # crops of faces not yet assigned to anyone; outside every faceset folder
# The inbox's own folders: photos handled (their faces routed), and files set aside with their reason.
INBOX_PROCESSED = "_processed"
INBOX_REJECTED = "_rejected"


@dataclass(frozen=True)
class FacePath:
    """Where one PNG sits: its area, faceset, whether it is pruned, and its file name."""

    area: str
    faceset: str
    dropped: bool
    name: str

    @property
    def path(self) -> str:
        return face_path(self.area, self.faceset, self.name, self.dropped)


def faceset_dir(area: str, faceset: str) -> str:
    return f"{area}/{faceset}" if area else faceset


def face_path(area: str, faceset: str, name: str, dropped: bool = False) -> str:
    middle = f"faces/{DROPPED}" if dropped else "faces"
    return f"{faceset_dir(area, faceset)}/{middle}/{name}"


def parse_face_path(path: str) -> FacePath | None:
    """`faceset_001/faces/a.png` -> FacePath; None for anything that is not a face PNG of the layout."""
    parts = path.split("/")
    area = ""
    if parts and parts[0] in QUARANTINE_AREAS:
        area, parts = parts[0], parts[1:]
    if len(parts) < 3 or not FACESET_RE.match(parts[0]) or parts[1] != "faces":
        return None
    name = parts[-1]
    if not name.lower().endswith(".png") or name.startswith("."):
        return None
    if len(parts) == 3:
        return FacePath(area, parts[0], False, name)
    if len(parts) == 4 and parts[2] == DROPPED:
        return FacePath(area, parts[0], True, name)
    return None


def faceset_number(name: str) -> int:
    m = FACESET_RE.match(name)
    return int(m.group(1)) if m else -1


def faceset_name_problem(name: str) -> str:
    """Why a folder named like a faceset (faceset_ and digits) cannot be one; "" for a faceset's name, or for a
    name that does not look like one (an ordinary folder)."""
    if FACESET_RE.match(name) or not _FACESET_LIKE.match(name):
        return ""
    digits = len(name) - len("faceset_")
    if digits < 3:
        return ""  # faceset_7: an ordinary folder, as it always was
    return f"a faceset number has at most {FACESET_DIGITS_MAX} digits, this one has {digits}"


def faceset_name(number: int) -> str:
    return f"faceset_{number:03d}"


def fsz_names(faceset: str, top_n: int) -> tuple[str, str]:
    """The full set and the top-N set, side by side in the faceset folder."""
    return f"{faceset}.fsz", f"{faceset}_top{top_n}.fsz"
