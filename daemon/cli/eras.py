"""`facesetd eras split faceset_NNN [--years N] [--dry-run]` and `facesetd eras list`: era buckets made from a
family's dated faces (handlers/era_split.py), and every era bucket the slotting uses."""

from __future__ import annotations

import argparse
import json
from typing import Any

from daemon.cli.printable import counted, printable
from daemon.lock import add_wait_argument

NAME = "eras"
HELP = ("era buckets: `split faceset_NNN` makes them from the faceset's dated faces (windows of --years years;"
        " each bucket's anchors are its faces), `list` shows every bucket the slotting uses")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="eras_verb", metavar="{split,list}", required=True, parser_class=type(p))
    split = sub.add_parser("split", help="split a faceset into era buckets by the years of its photos",
                           description="Split a faceset into era buckets: its kept faces with a year (EXIF"
                           " DateTimeOriginal of the source photo, the source's date, or the PNG's EXIF) in windows"
                           " of --years years from the oldest; each window holding faces becomes a new faceset"
                           " whose anchors are those faces. Recorded as an eras_split event; `facesetd restore ID`"
                           " undoes it.")
    split.add_argument("faceset", metavar="faceset_NNN", help="the faceset (the family) to split")
    split.add_argument("--years", type=int, metavar="N",
                       help="years per bucket (default: [eras] split_years)")
    split.add_argument("--dry-run", action="store_true", help="print the buckets it would make; record nothing")
    add_wait_argument(split)
    lst = sub.add_parser("list", help="every era bucket: configured, made by `eras split`, adopted")
    lst.add_argument("--json", action="store_true", help="one JSON object per bucket")


def run(args: argparse.Namespace, app: Any) -> int:
    if args.eras_verb == "list":
        return _list(args, app)
    return _split(args, app)


def _split(args: argparse.Namespace, app: Any) -> int:
    from handlers.era_split import CannotSplit

    years = args.years if args.years is not None else app.config.eras.split_years
    if years < 1:
        raise CannotSplit(f"--years must be at least 1 (got {years})")
    if args.dry_run:
        return _dry_run(args.faceset, years, app)
    position = app.correct("eras split", "eras_split", {"faceset": args.faceset, "years": str(years)}, args.wait)
    split = app.events.get(position).event
    for line in describe_split(split):
        print(printable(line))  # the anchors' file names
    print(f"recorded as event {position}; `facesetd restore {position}` undoes it")
    return 0


def _dry_run(family: str, years: int, app: Any) -> int:
    from handlers.era_split import describe, plan_split

    pipeline = app.pipeline
    pipeline.state.catch_up()
    plan = plan_split(pipeline.ctx, family, years)
    print(printable(f"{family}: {counted(len(plan.buckets), 'era bucket')} of {counted(years, 'year')}"))
    for line in describe(plan):
        print(printable(line))  # the anchors' file names
    print("dry run: nothing recorded")
    return 0


def describe_split(split: Any) -> list[str]:
    """A recorded eras_split event as lines for a person (the same whether this process or the daemon made it):
    the family and its buckets, one a line, then how many faces stayed out."""
    from handlers.era_split import bucket_lines

    lines = [f"{split.faceset}: {counted(len(split.buckets), 'era bucket')} of {counted(split.years, 'year')}",
             *bucket_lines(split.buckets)]
    out = {what: split.inputs.get(key, 0) for key, what in (
        ("too_few", f"in a window of fewer than {split.inputs.get('min_anchors', 1)} dated faces"),
        ("undated", "without a year"), ("unanalysed", "without an embedding"))}
    if any(out.values()):
        lines.append(f"  in no bucket (they stay in {split.faceset}): "
                     + ", ".join(f"{n} {what}" for what, n in out.items() if n))
    return lines


def _list(args: argparse.Namespace, app: Any) -> int:
    from handlers.era import adopted_buckets, buckets

    pipeline = app.pipeline
    state = pipeline.state
    state.catch_up()
    ctx = pipeline.ctx
    ctx.begin_batch()
    made = {b.faceset: b for b in state.made_era_buckets()}
    configured = {b.faceset for b in ctx.config.eras.buckets}
    adopted = {b.faceset for b in adopted_buckets(ctx)}
    thin = set(state.thin_eras_listed() or [])
    rows = []
    for b in buckets(ctx):
        m = made.get(b.faceset)
        source = "configured" if b.faceset in configured else f"made by event {m.decision}" if m else \
            "adopted" if b.faceset in adopted else "?"
        rows.append({"faceset": b.faceset, "family": b.family, "year": b.year, "source": source,
                     "first_year": m.first_year if m else None, "last_year": m.last_year if m else None,
                     "anchors": m.anchors if m else state.kept_count(b.faceset),
                     "slotted": state.slotted_count(b.faceset) - (m.anchors if m else 0),
                     "thin": b.faceset in thin})
    for r in sorted(rows, key=lambda r: (r["family"], r["year"], r["faceset"])):
        if args.json:
            print(json.dumps(r, sort_keys=True))
            continue
        window = f"{r['first_year']}-{r['last_year']}" if r["first_year"] is not None else "-"
        print(printable(f"  {r['faceset']:<14} of {r['family']:<14} year {r['year']}  {window:<9}"
                        f"  {counted(r['anchors'], 'anchor')}, {r['slotted']} slotted{'  thin' if r['thin'] else ''}"
                        f"  ({r['source']})"))
    if not rows and not args.json:
        print("no era buckets (make some with `facesetd eras split faceset_NNN`, or configure [[eras.buckets]])")
    return 0
