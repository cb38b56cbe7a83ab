"""The incremental checks: plain functions registered by the event kind they consume.

Importing this package registers every check. Handlers of one event kind run in the order imported here:
multi-face, occlusion, near-dup, era, then the faceset rules (which see what the others decided).
"""

from . import embed, era, faceset_rules, multi_face, near_dup, occlusion

__all__ = ["embed", "era", "faceset_rules", "multi_face", "near_dup", "occlusion"]
