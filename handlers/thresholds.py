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
    # a new face joins a faceset when its cosine distance to the faceset centroid is at most this (the face pack's
    # own where none is set, as for cluster_distance, candidate_band and merge_distance: PACK_IDENTITY below).
    match_distance: float = field(default=0.45, metadata={"range": (0, 2)})
    # unassigned faces are clustered (average linkage: two groups join when their faces are this close on average)
    # at this cosine distance.
    cluster_distance: float = field(default=0.55, metadata={"range": (0, 2)})
    # a pool cluster becomes a new faceset once it holds this many faces of distinct photos (the refine gate; the
    # thin rule's floor, so no new faceset is thin at birth); clusters of 3 photos or more below it are people
    # forming, shown by `status` and the review page's pool.
    min_new_faceset: int = field(default=5, metadata={"range": (1, None)})
    # pool clustering: the daemon loop spends at most about this many seconds per turn on a long pass.
    pool_slice_s: float = field(default=0.5, metadata={"range": (0.01, None)})
    # faces whose short side is below this many pixels (in the original photo) are ignored.
    min_face_px: int = field(default=90, metadata={"range": (0, None)})
    # a pool face this much past match_distance of its nearest faceset is proposed to a person for it (0: never).
    candidate_band: float = field(default=0.15, metadata={"range": (0, 2)})
    # duplicate identities: facesets whose centroids are all pairwise within this cosine distance (complete
    # linkage) merge into the oldest (buffalo_sc on ../shared/faces: same person's centroids <= 0.47 apart,
    # different people's >= 0.85; bench/merge_distance.py). 0 turns merging off.
    merge_distance: float = field(default=0.55, metadata={"range": (0, 2)})


# The identity distances of each face pack, used wherever the user set none (a value in a file or a variable always
# wins; `facesetd config` says which applies and where it came from). Each pack's embeddings spread differently, so
# one set of numbers cannot fit them all. A pack not named here gets the IdentityThresholds defaults above.
PACK_IDENTITY: dict[str, dict[str, float]] = {
    # roop's own pack: the seeds' numbers, validated by the batch scripts (DOMAIN.md section 3): the defaults above.
    "buffalo_l": {"match_distance": 0.45, "cluster_distance": 0.55, "merge_distance": 0.55, "candidate_band": 0.15},
    # the small pack, measured on bench/people (89 photos of 21 people; `facesetd calibrate bench/people`): same-person
    # pairs up to 0.63, different people from 0.69 (0.74 at a false accept rate of 1e-3), a face to its own person's
    # centroid up to 0.40 and to another's from 0.71. calibrate's rule: cluster = the 1e-3 FAR distance less 0.10,
    # floored to 0.05; match = cluster - 0.10 and merge = cluster, as in the seeds'; the band as in the seeds'.
    "buffalo_sc": {"match_distance": 0.50, "cluster_distance": 0.60, "merge_distance": 0.60, "candidate_band": 0.15},
}


# The [identity] keys whose default depends on the face pack (config.toml leaves them commented out).
PACK_KEYS: tuple[str, ...] = tuple(sorted({key for table in PACK_IDENTITY.values() for key in table}))


def pack_identity(pack: str) -> dict[str, float]:
    """The [identity] distances `pack` uses where the user set none (empty: the IdentityThresholds defaults)."""
    return dict(PACK_IDENTITY.get(pack, {}))


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
