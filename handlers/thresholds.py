"""Every threshold the checks and the identity router use, and the era buckets, in one place, one comment each.

Defaults are the numbers the batch scripts validated (DOMAIN.md section 3). `config.toml` section
`[thresholds]` overrides them; a test pins these defaults against `config.toml` and the docs table.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Thresholds:
    # multi-face: detector threshold roop re-detects with (insightface default); faces below it do not count.
    multi_face_det_thresh: float = field(default=0.5, metadata={"range": (0, 1)})
    # multi-face: detector input size roop uses (det_size 640x640).
    multi_face_det_size: int = field(default=640, metadata={"range": (32, 4096)})
    # occlusion: P(mask) or P(sunglasses over the eyes) at or above this prunes the image.
    occlusion_prune: float = field(default=0.7, metadata={"range": (0, 1)})
    # occlusion: this fraction of a faceset's images flagged for either attribute quarantines it to _masked/.
    masked_fraction: float = field(default=0.4, metadata={"range": (0, 1)})
    # thin: fewer survivors than this AND at least one of its own PNGs pruned as occluded moves the faceset to
    # _thin/ (other prunes, and inbox crops pruned on arrival, do not count); a thin one that grows back returns.
    thin_min_survivors: int = field(default=5, metadata={"range": (0, None)})
    # near-dup: cosine similarity at or above this within a faceset is a near-duplicate.
    near_dup_similarity: float = field(default=0.95, metadata={"range": (0, 1)})
    # era: cosine distance to an era anchor at most this ...
    era_max_distance: float = field(default=0.40, metadata={"range": (0, 2)})
    # era: ... AND a year difference at most this slots an image into that era.
    era_max_years: int = field(default=5, metadata={"range": (0, 200)})


@dataclass(frozen=True)
class IdentityThresholds:
    # a new face joins a faceset when its cosine distance to the faceset centroid is at most this.
    match_distance: float = field(default=0.45, metadata={"range": (0, 2)})
    # unassigned faces are clustered (complete linkage) at this cosine distance.
    cluster_distance: float = field(default=0.55, metadata={"range": (0, 2)})
    # a pool cluster becomes a new faceset once it holds this many faces (the refine gate).
    min_new_faceset: int = field(default=6, metadata={"range": (1, None)})
    # pool clustering: the daemon loop spends at most about this many seconds per turn on a long pass.
    pool_slice_s: float = field(default=0.5, metadata={"range": (0.01, None)})
    # faces whose short side is below this many pixels (in the original photo) are ignored.
    min_face_px: int = field(default=90, metadata={"range": (0, None)})
    # a pool face this much past match_distance of its nearest faceset is proposed to a person for it (0: never).
    candidate_band: float = field(default=0.15, metadata={"range": (0, 2)})
    # duplicate identities: facesets whose centroids are all pairwise within this cosine distance (complete
    # linkage) merge into the oldest; measured on ../shared/faces: same person <= 0.47, different people >= 0.85.
    # 0 turns merging off.
    merge_distance: float = field(default=0.55, metadata={"range": (0, 2)})


@dataclass(frozen=True)
class EraBucket:
    # the era bucket: a faceset whose PNGs are this era's anchors.
    faceset: str = ""
    # the identity whose new PNGs are slotted into its buckets (the family's main faceset).
    family: str = ""
    # the year the anchor photos were taken.
    year: int = field(default=0, metadata={"range": (1800, 2200)})


@dataclass(frozen=True)
class EraSettings:
    # one table per era bucket: [[eras.buckets]] faceset = "faceset_101", family = "faceset_001", year = 2012
    buckets: tuple[EraBucket, ...] = ()
    # `facesetd eras split`: each era bucket it makes spans this many years of photos (`--years` overrides).
    split_years: int = field(default=5, metadata={"range": (1, 200)})
    # `facesetd eras split`: an era bucket needs at least this many anchors (dated faces of its window; one photo is
    # no era to average); a window with fewer makes no bucket, its faces stay in the family alone.
    min_split_anchors: int = field(default=2, metadata={"range": (1, None)})
