"""`facesetd calibrate DIR [--write] [--json]`: the configured face pack measured on labelled photos, one subfolder
per person (daemon/calibration.py), and the [identity] distances it recommends; `--write` puts those into the data
folder's facesetd.toml (only those keys; comments kept)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from daemon.cli.printable import counted, printable

NAME = "calibrate"
HELP = ("measure the face pack on your own labelled photos (DIR: one subfolder per person): same- and different-person"
        " distances, TAR at FAR 1e-3 and 1e-4, what the settings in force make of these photos (people found,"
        " impure, BCubed), and the [identity] distances it recommends; --write puts them into the data folder's"
        " facesetd.toml")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("folder", type=Path, metavar="DIR", help="one subfolder per person, each with their photos")
    p.add_argument("--write", action="store_true",
                   help="write the recommended distances into <data-dir>/facesetd.toml (those keys only)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace, app: Any) -> int:
    import numpy as np

    from daemon import calibration as cal
    from daemon.config import identity_origins, set_folder_settings

    config = app.config
    people = cal.photos_by_person(args.folder)
    engine, _occlusion = app.open_engines()
    faces, skipped = cal.embed(lambda data: engine.analyze([data], pad=True)[0], people,
                               config.identity.min_face_px)
    same, diff = cal.pair_distances(faces)
    identity = config.identity
    vecs = np.stack([f.vec for f in faces])
    persons, photos = [f.person for f in faces], [f.photo for f in faces]
    facesets, forming = cal.pool_rule(vecs, photos, identity.cluster_distance, max(1, identity.min_new_faceset))
    origins = identity_origins(app.config_path, data_dir=str(config.data_dir))
    recommended = cal.recommend(diff)
    report: dict[str, Any] = {
        "pack": config.models.face_pack, "folder": str(args.folder), "people": len({f.person for f in faces}),
        "photos": len(faces), "skipped": skipped,
        "same_person": cal.spread(same), "different_people": cal.spread(diff),
        "tar": [dict(zip(("far", "distance", "tar", "exact"), (far, *cal.tar_at_far(same, diff, far))))
                for far in cal.FARS],
        "settings": {k: {"value": getattr(identity, k), "from": origins.get(k, "built-in default")}
                     for k in ("match_distance", "cluster_distance", "merge_distance", "candidate_band",
                               "min_new_faceset")},
        "facesets": cal.score(persons, facesets).__dict__, "with_forming": cal.score(persons, forming).__dict__,
        "recommended": recommended,
    }
    if args.write:
        report["written"] = str(set_folder_settings(config.data_dir, "identity", dict(recommended)))
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    _print(report)
    return 0


def _print(r: dict[str, Any]) -> None:
    print(printable(f"face pack {r['pack']} on {r['folder']}: {counted(r['people'], 'person', 'people')},"
                    f" {counted(r['photos'], 'photo')} with a usable face"))
    for line in r["skipped"]:
        print(printable(f"  skipped {line}"))
    for key in ("same_person", "different_people"):
        q = r[key]
        print(f"{key.replace('_', ' '):<17} {q['pairs']:>6} pairs" + (
            f"  min {q['min']:.3f}  p05 {q['p05']:.3f}  p50 {q['p50']:.3f}  p95 {q['p95']:.3f}  max {q['max']:.3f}"
            if q["pairs"] else ""))
    for t in r["tar"]:
        note = "" if t["exact"] else " (too few different-person pairs for this FAR: the nearest one)"
        print(f"TAR at FAR {t['far']:.0e}: {t['tar']:.3f} at distance {t['distance']:.3f}{note}")
    s = r["settings"]
    print("settings in force: " + ", ".join(f"{k} {v['value']:g} ({v['from']})" for k, v in s.items()))
    for label, key in (("facesets", "facesets"), ("facesets and people forming", "with_forming")):
        sc = r[key]
        print(f"  {label}: {sc['found']} of {sc['of']} people with 5+ photos found, {sc['small_found']} of"
              f" {sc['small_of']} with 3-4, {sc['impure']} impure; BCubed P {sc['precision']:.3f}"
              f" R {sc['recall']:.3f} F {sc['f1']:.3f}")
    print("recommended for this pack on these photos: "
          + ", ".join(f"{k} = {v:g}" for k, v in r["recommended"].items()))
    if "written" in r:
        print(printable(f"written to {r['written']} ([identity]; `facesetd config` shows them in force)"))
    else:
        print("`facesetd calibrate DIR --write` puts them into the data folder's facesetd.toml")
