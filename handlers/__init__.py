"""The incremental checks: plain functions registered by the event kind they consume.

Importing this package registers every check. Several checks consume FaceAnalyzed; within one batch they run
in the order of ORDER below (not import order): the per-image prunes first, each skipping what an earlier one
already decided on, then era slotting of the survivors, then the faceset rules, which see every prune.
"""

from . import embed, era, faceset_rules, multi_face, near_dup, occlusion, route_photo
from .registry import HANDLERS

ORDER = ("embed", "check_multi_face", "check_occlusion", "check_near_dup", "slot_into_era", "apply_faceset_rules")

for _registrations in HANDLERS.values():
    _registrations.sort(key=lambda r: ORDER.index(r.name) if r.name in ORDER else len(ORDER))

__all__ = ["ORDER", "embed", "era", "faceset_rules", "multi_face", "near_dup", "occlusion", "route_photo"]
