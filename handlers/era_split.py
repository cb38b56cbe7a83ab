"""Era buckets made, not only filled (seed 000, age_split): `facesetd eras split faceset_NNN [--years N]`.

The family's kept, analysed faces with a year (the same year era slotting reads: the source photo's EXIF
DateTimeOriginal, the source's date, the PNG's EXIF) are cut into windows of N years from the oldest one; each
window holding faces becomes an era bucket: a new faceset numbered past every faceset ever recorded, whose
anchors are those faces (their embeddings, never re-centred; the PNGs stay in the family's folder and are slotted
into the bucket, so its .fsz holds them). Its year, the one slotting compares a photo's year with, is the
anchors' median year (the lower of the two middle ones). Faces without a year or an embedding are in no bucket;
the plan says how many and why.

Not a handler: the `eras` verb plans the split, prints it, and (unless --dry-run) appends the ErasSplit.
`facesetd restore` of that event unmakes the buckets (`unsplit_moves`).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from state import events as ev
from state.errors import FacesetdError, UnknownEvent
from state.layout import FACESET_RE, MERGED_AREA, faceset_name

from .common import Face
from .context import HandlerContext
from .era import buckets, photo_year
from .pool import next_faceset_number

CHECK = "era_split"


class CannotSplit(FacesetdError):
    """The faceset cannot be split into eras (unknown, not active, already split, or no dated face)."""


@dataclass(frozen=True)
class Dated:
    """A face of the family with its year."""

    path: str
    sha256: str
    year: int


@dataclass
class SplitPlan:
    """What a split makes (`event`) and what it leaves out, for the verb to print."""

    family: str
    years: int
    buckets: list[dict[str, Any]] = field(default_factory=list)
    undated: list[str] = field(default_factory=list)  # kept faces with no year
    too_few: list[str] = field(default_factory=list)  # dated faces whose window holds fewer than min_anchors
    min_anchors: int = 1
    unanalysed: list[str] = field(default_factory=list)  # kept faces with no embedding (no face found, or pending)

    def event(self) -> ev.ErasSplit:
        first, last = self.buckets[0]["first_year"], self.buckets[-1]["last_year"]
        return ev.ErasSplit(
            faceset=self.family, years=self.years, buckets=tuple(self.buckets), check=CHECK,
            reason=(f"{self.family} split into {len(self.buckets)} era bucket(s) of {self.years} years"
                    f" ({first}-{last}) from {sum(len(b['anchors']) for b in self.buckets)} dated faces"),
            inputs={"years": self.years, "undated": len(self.undated), "unanalysed": len(self.unanalysed),
                    "too_few": len(self.too_few), "min_anchors": self.min_anchors},
        )


def plan_split(ctx: HandlerContext, family: str, years: int) -> SplitPlan:
    """The era buckets `family` would be split into (numbered past every faceset ever recorded): one per window
    holding at least [eras] min_split_anchors dated faces; CannotSplit says why there are none."""
    _check_family(ctx, family)
    plan = SplitPlan(family=family, years=years, min_anchors=ctx.config.eras.min_split_anchors)
    dated = _dated_faces(ctx, family, plan)
    if not dated:
        raise CannotSplit(f"{family} has no face with a year to split by ({len(plan.undated)} without a year:"
                          " no EXIF DateTimeOriginal on the source photo or the PNG, and no source date;"
                          f" {len(plan.unanalysed)} not analysed)")
    first = min(d.year for d in dated)
    windows: dict[int, list[Dated]] = {}
    for d in dated:
        windows.setdefault((d.year - first) // years, []).append(d)
    kept = sorted(k for k, members in windows.items() if len(members) >= plan.min_anchors)
    plan.too_few = sorted(d.path for k, members in windows.items() if k not in kept for d in members)
    if not kept:
        total = len(dated) + len(plan.undated) + len(plan.unanalysed)
        raise CannotSplit(f"{family}: {len(dated)} of its {total} faces have a year, and no window of {years} year{'s' if years != 1 else ''}"
                          f" holds {plan.min_anchors} of them (an era bucket needs at least {plan.min_anchors}"
                          " anchors: [eras] min_split_anchors); nothing split")
    number = next_faceset_number(ctx)
    for i, k in enumerate(kept):
        members = sorted(windows[k], key=lambda d: d.path)
        ordered_years = sorted(d.year for d in members)
        plan.buckets.append({
            "faceset": faceset_name(number + i), "year": ordered_years[(len(ordered_years) - 1) // 2],
            "first_year": first + k * years, "last_year": first + (k + 1) * years - 1,
            "anchors": [[d.path, d.sha256, d.year] for d in members],
        })
    return plan


def _check_family(ctx: HandlerContext, family: str) -> None:
    if not FACESET_RE.match(family):
        raise CannotSplit(f"{family!r} is not a faceset name (faceset_NNN)")
    area = ctx.state.faceset_area(family)
    if area is None:
        raise CannotSplit(f"no faceset {family} in the log")
    if area:
        raise CannotSplit(f"{family} is in {area}/, not active; restore it first")
    ctx.begin_batch()  # the buckets as of now
    found = buckets(ctx)
    for b in found:
        if b.faceset == family:
            raise CannotSplit(f"{family} is itself an era bucket (of {b.family})")
    own = sorted(b.faceset for b in found if b.family == family)
    if own:
        made = {b.faceset: b.decision for b in ctx.state.made_era_buckets()}
        undo = [f"`facesetd restore {made[b]}`" for b in own if b in made]
        raise CannotSplit(f"{family} already has era buckets ({', '.join(own)})"
                          + (f"; {undo[0]} unmakes them first" if undo else " (configured or adopted)"))


def _dated_faces(ctx: HandlerContext, family: str, plan: SplitPlan) -> list[Dated]:
    dated = []
    for row in ctx.state.split_candidates(family):
        if not row.analyzed:
            plan.unanalysed.append(row.path)
            continue
        face = Face(row.path, family, row.sha256, {}, None, 0, json.loads(row.source))
        year, _year_from = photo_year(ctx, face)
        if year is None:
            plan.undated.append(row.path)
        else:
            dated.append(Dated(row.path, row.sha256, year))
    return dated


def bucket_lines(made: Sequence[dict[str, Any]]) -> list[str]:
    """One line a bucket (a plan's, or a recorded ErasSplit's): its faceset, window, year and anchors."""
    lines = []
    for b in made:
        names = ", ".join(a[0].rsplit("/", 1)[-1] for a in b["anchors"])
        lines.append(f"  {b['faceset']}  {b['first_year']}-{b['last_year']}  year {b['year']}"
                     f"  {len(b['anchors'])} anchor(s): {names}")
    return lines


def describe(plan: SplitPlan) -> list[str]:
    """The plan as lines for a person: one per bucket, then what was left out."""
    lines = bucket_lines(plan.buckets)
    if plan.too_few:
        lines.append(f"  in no bucket, fewer than {plan.min_anchors} dated faces in their window (they stay in"
                     f" {plan.family}): {', '.join(p.rsplit('/', 1)[-1] for p in plan.too_few)}")
    if plan.undated:
        lines.append(f"  in no bucket, no year: {', '.join(p.rsplit('/', 1)[-1] for p in plan.undated)}")
    if plan.unanalysed:
        lines.append(f"  in no bucket, no embedding: {', '.join(p.rsplit('/', 1)[-1] for p in plan.unanalysed)}")
    return lines


def unsplit_moves(ctx: HandlerContext, position: int, split: ev.ErasSplit) -> tuple[tuple[str, str], ...]:
    """The moves of the restore of the ErasSplit at `position`: every bucket it made, to _merged/. UnknownEvent
    when a bucket is no longer active or its place in _merged/ is taken."""
    moves = []
    for b in (str(made["faceset"]) for made in split.buckets):
        area = ctx.state.faceset_area(b)
        if area != "":
            raise UnknownEvent(f"cannot restore event {position}: its era bucket {b} is in {area}/, not active")
        if (ctx.config.corpus / MERGED_AREA / b).exists():
            raise UnknownEvent(f"cannot restore event {position}: {MERGED_AREA}/{b} exists")
        moves.append((b, f"{MERGED_AREA}/{b}"))
    return tuple(moves)
