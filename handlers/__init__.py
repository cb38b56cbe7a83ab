"""The incremental checks: plain functions registered by the event kind they consume.

Importing this package registers every check. Handlers of one event kind run in the order imported here:
multi-face, occlusion, near-dup, era, then the faceset rules (which see what the others decided).
"""

from . import embed, multi_face, occlusion, near_dup, era, faceset_rules  # noqa: F401  (registration)

__all__ = ["embed", "multi_face", "occlusion", "near_dup", "era", "faceset_rules"]
