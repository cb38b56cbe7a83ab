"""What `pip install .` gives a user: the wheel is built, installed into a fresh venv, and run from its script.

The editable install the other tests use hides a package missing from the wheel (it maps imports back to the
source tree), so this test builds the wheel from a copy of the source, installs it with --no-deps into a venv
created WITHOUT --system-site-packages, and runs the venv's own `facesetd` script from a folder outside the
source, with no PYTHONPATH. The heavy dependencies (onnxruntime, insightface, numpy ...) are not downloaded:
a .pth file points the venv at a folder of symlinks to the test interpreter's site-packages entries, minus
facesetd's own packages, its dist-info and its editable-install hooks. The test asserts that every facesetd
module the venv imports comes from the venv's own site-packages.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import pytest
from helpers import REPO

pytestmark = pytest.mark.slow

PACKAGES = ("daemon", "handlers", "gpu_agent", "state")
IMMICH_KEY = "fake-key-Zq8w3LmP0xY"
MIN_SETUPTOOLS = (70, 1)  # pyproject's [build-system] requires


@dataclass
class Venv:
    root: Path
    site: Path  # the venv's own site-packages
    wheel: Path
    work: Path  # a folder outside the source tree: the commands' cwd and HOME

    @property
    def facesetd(self) -> Path:
        return self.root / "bin" / "facesetd"

    def env(self, **extra: str) -> dict[str, str]:
        """The parent's environment without anything that could import facesetd from the source tree."""
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("FACESETD_") and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        env.update(HOME=str(self.work), PATH=f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}")
        return {**env, **extra}

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 180) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(self.facesetd), *args], capture_output=True, text=True, cwd=self.work,
                              env=self.env(**(env or {})), timeout=timeout)


def _copy_source(dest: Path) -> Path:
    """The source tree as a user's clone has it: no build/, dist/, egg-info, caches, venvs or .git."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        top = Path(folder) == REPO
        return {n for n in names if n in ("__pycache__", ".pytest_cache") or n.endswith(".egg-info")
                or (top and (n.startswith(".") or n in ("build", "dist")))}

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def _deps_folder(dest: Path) -> Path:
    """Symlinks to the test interpreter's installed distributions, facesetd itself left out."""
    dest.mkdir()
    own = set(PACKAGES)
    for key in ("purelib", "platlib"):
        site = Path(sysconfig.get_paths()[key])
        for entry in site.iterdir():
            name = entry.name
            if (name.split(".")[0] in own or name.startswith(("facesetd-", "__editable__", "_facesetd"))
                    or name.endswith(".pth") or (dest / name).exists()):
                continue
            (dest / name).symlink_to(entry)
    return dest


def _build_isolation() -> list[str]:
    """Build offline with this environment's setuptools when it is new enough for pyproject's build-system
    (a Python 3.11 venv ships setuptools 65, without bdist_wheel); otherwise let pip fetch it from the index."""
    try:
        major, minor = (int(x) for x in version("setuptools").split(".")[:2])
    except (PackageNotFoundError, ValueError):
        return []
    return ["--no-build-isolation", "--no-index"] if (major, minor) >= MIN_SETUPTOOLS else []


def _pip(args: list[str], env: dict[str, str], cwd: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600)
    assert proc.returncode == 0, (args, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    root = tmp_path_factory.mktemp("wheel")
    src = _copy_source(root / "src")
    dist = root / "dist"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1")
    _pip(["wheel", "--no-deps", *_build_isolation(), "-q", "-w", str(dist), str(src)], env, root)
    (wheel,) = dist.glob("facesetd-*.whl")
    vroot = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(vroot)], check=True, timeout=120)
    py = vroot / "bin" / "python"
    _pip(["--python", str(py), "install", "-q", "--no-deps", "--no-index", str(wheel)], env, root)
    site = Path(subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True, cwd=root, env={}).stdout.strip())
    deps = _deps_folder(root / "deps")
    (site / "_facesetd_test_deps.pth").write_text(f"{deps}\n", encoding="utf-8")
    work = root / "work"
    work.mkdir()
    return Venv(vroot, site, wheel, work)


def _source_modules() -> set[str]:
    return {p.relative_to(REPO).as_posix() for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
            if "__pycache__" not in p.parts}


def test_wheel_holds_every_module_and_nothing_else(venv: Venv) -> None:
    names = zipfile.ZipFile(venv.wheel).namelist()
    py = {n for n in names if n.endswith(".py")}
    assert _source_modules() - py == set(), "modules missing from the wheel"
    tops = {n.split("/")[0] for n in names}
    assert tops == {*PACKAGES, next(t for t in tops if t.endswith(".dist-info"))}, tops  # no tests/, bench/


def test_every_module_imports_from_the_venv(venv: Venv) -> None:
    code = (
        "import importlib, json, pkgutil, sys\n"
        "out = {}\n"
        f"for top in {PACKAGES!r}:\n"
        "    pkg = importlib.import_module(top)\n"
        "    out[top] = pkg.__file__\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, top + '.'):\n"
        "        if not m.name.endswith('__main__'):\n"
        "            out[m.name] = importlib.import_module(m.name).__file__\n"
        "print(json.dumps(out))\n"
    )
    proc = subprocess.run([str(venv.root / "bin" / "python"), "-c", code], capture_output=True, text=True,
                          cwd=venv.work, env=venv.env(), timeout=300)
    assert proc.returncode == 0, proc.stderr
    files = json.loads(proc.stdout)
    assert "daemon.immich.client" in files and "daemon.cli.immich" in files
    elsewhere = {m: f for m, f in files.items() if not Path(f).is_relative_to(venv.site)}
    assert elsewhere == {}, "imported from outside the venv: the test would not see a missing file"
    names = {p.removesuffix(".py").removesuffix("/__init__").replace("/", ".") for p in _source_modules()}
    assert names - set(files) == {"daemon.cli.__main__"}  # importing it runs the CLI


def _verbs() -> list[list[str]]:
    """Every verb and sub-verb of the CLI, as argv prefixes (from the parser itself, so new verbs are covered)."""
    from daemon.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        for action in parser._actions:  # argparse has no public API for its sub-parsers
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    out += walk(sub, [*prefix, name])
        return out

    return walk(build_parser()[0], [])


def test_every_verb_help(venv: Venv) -> None:
    verbs = _verbs()
    assert ["immich", "check"] in verbs and ["models", "export-clip"] in verbs
    for argv in verbs:
        proc = venv.run(*argv, "--help")
        assert proc.returncode == 0 and "usage: facesetd" in proc.stdout, (argv, proc.stdout, proc.stderr)
        assert proc.stderr == "", (argv, proc.stderr)
    version = venv.run("--version")
    assert version.returncode == 0 and version.stdout.startswith("facesetd "), version


def _ok(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 0, (proc.args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.stdout


def _one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """A user error: exit 1, no traceback, one last line naming the problem."""
    assert proc.returncode == 1, (proc.args, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stderr
    return (proc.stdout + proc.stderr).strip().splitlines()[-1]


def test_one_real_command_per_verb_group(venv: Venv, tmp_path: Path) -> None:
    data = tmp_path / "data"
    d = ["--data-dir", str(data)]
    # a read-only verb on a folder that does not exist yet: one line, nothing created
    assert "does not exist" in _one_line_error(venv.run(*d, "status")) and not data.exists()
    assert "received 0 inbox photos" in _ok(venv.run(*d, "reconcile"))  # makes the data folder
    assert "0 active" in _ok(venv.run(*d, "status"))
    assert "[immich]" in _ok(venv.run("config", "--defaults"))
    _ok(venv.run(*d, "events"))
    assert "no insightface packs" in _ok(venv.run(*d, "models", "list"))
    doctor = venv.run(*d, "doctor")  # no models yet: exit 1, says what is missing and which command fetches it
    assert _one_line_error(doctor) == "not usable" and "facesetd models fetch --pack buffalo_l" in doctor.stdout
    assert "rebuilt projections" in _ok(venv.run(*d, "rebuild"))
    assert _one_line_error(venv.run(*d, "restore", "999")) == "facesetd: error: no event 999 in the log"
    offline = {"HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}  # never a real download
    assert "cannot get the CLIP weights" in _one_line_error(venv.run(*d, "models", "export-clip", env=offline))


def test_immich_check_against_the_fake_server(venv: Venv, tmp_path: Path) -> None:
    from immich_fake import FakeImmich

    config = tmp_path / "facesetd.toml"
    with FakeImmich(api_key=IMMICH_KEY) as fake:
        config.write_text(f'[immich]\nurl = "{fake.url}"\n\n[[immich.users]]\nname = "alice"\n'
                          'api_key_env = "FACESETD_TEST_KEY_ALICE"\n', encoding="utf-8")
        out = _ok(venv.run("--config", str(config), "--data-dir", str(tmp_path / "data"), "immich", "check",
                           env={"FACESETD_TEST_KEY_ALICE": IMMICH_KEY}))
        assert fake.validation_errors == []
    assert "reachable, Immich 3.1.0" in out and "user alice: key 'facesetd' ok" in out, out


def test_reconcile_a_photo_with_the_real_models(venv: Venv, models_root: Path, faces_dir: Path,
                                                tmp_path: Path) -> None:
    """The handlers and the face engine run from the wheel: a photo in inbox/faceset_001/ seeds that person."""
    data = tmp_path / "data"
    (data / "inbox" / "faceset_001").mkdir(parents=True)
    photo = sorted((faces_dir / "identities" / "obama").glob("*.jpg"))[0]
    shutil.copy(photo, data / "inbox" / "faceset_001" / photo.name)
    env = {"FACESETD_MODELS_ROOT": str(models_root), "FACESETD_MODELS_FACE_PACK": "buffalo_sc"}
    out = _ok(venv.run("--data-dir", str(data), "reconcile", env=env, timeout=300))
    assert "received 1 inbox photo;" in out, out
    assert list((data / "inbox" / "_processed").rglob(photo.name)), out
    assert list((data / "corpus").glob("faceset_001/faces/*.png")) and (data / "corpus" / "manifest.json").exists()
    # the corrections and the review pages' templates and static files work from the wheel too
    assert "labelled faceset_001" in _ok(venv.run("--data-dir", str(data), "label", "faceset_001", "Obama", env=env))
    report = tmp_path / "report"
    _ok(venv.run("--data-dir", str(data), "report", "--out", str(report), env=env, timeout=120))
    pages = {p.name: p.read_text(encoding="utf-8") for p in report.rglob("*.html")}
    assert any("faceset_001" in html and "Obama" in html for html in pages.values()), sorted(pages)
    assert list(report.rglob("*.css")) and list(report.rglob("*.webp")) + list(report.rglob("*.jpg")), \
        sorted(str(p.relative_to(report)) for p in report.rglob("*"))
