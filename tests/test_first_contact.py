"""First contact: the README's first command on a fresh home, then every other verb with no extra variable;
a mistyped data folder is an error, never a new empty corpus."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from daemon_proc import DaemonProcess
from helpers import REPO

# Variables that are not settings: the test harness's own (where the models and photos are).
HARNESS_VARS = ("FACESETD_TEST_MODELS", "FACESETD_SHARED")


def user_env(home: Path, **extra: str) -> dict[str, str]:
    """A newcomer's environment: a fresh HOME and no FACESETD_ setting of any kind."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACESETD_") or k in HARNESS_VARS}
    return {**env, "HOME": str(home), "PYTHONUNBUFFERED": "1", **extra}


def facesetd(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    """`facesetd ARGS` as the README's `.venv/bin/facesetd` would run it."""
    return subprocess.run([sys.executable, "-m", "daemon.cli", *args], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=timeout)


def readme_first_command() -> list[tuple[dict[str, str], list[str]]]:
    """The facesetd steps of the README's first command: (variables set on the step, argv after `facesetd`)."""
    readme = (REPO / "README.md").read_text()
    block = re.search(r"\*\*Install.*?```sh\n(.*?)\n```", readme, re.S)
    assert block, "README.md has no install block"
    steps = []
    for part in block.group(1).split("&&"):
        words = shlex.split(part)
        assigns = {}
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
            k, _, v = words.pop(0).partition("=")
            assigns[k] = v
        if words and words[0].endswith("bin/facesetd"):
            steps.append((assigns, words[1:]))
    return steps


def expand(args: list[str], home: Path) -> list[str]:
    return [str(home) + a[1:] if a.startswith("~/") or a == "~" else a for a in args]


def one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facesetd: error: "), proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr


def test_readme_first_command_then_every_verb_without_extra_variables(
    tmp_path: Path, models_root: Path, faces_dir: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    steps = readme_first_command()
    assert [a[-1] for _, a in steps] == ["buffalo_sc", "run"], steps
    (fetch_env, fetch_args), (run_env, run_args) = steps
    fetch_args, run_args = expand(fetch_args, home), expand(run_args, home)
    data = Path(run_args[run_args.index("--data-dir") + 1])
    # No network here: the pack is where `models fetch` puts it (an intact pack is not fetched again).
    shutil.copytree(models_root / "models" / "buffalo_sc", data / "models" / "models" / "buffalo_sc")
    fetched = facesetd(user_env(home, **fetch_env), *fetch_args)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    assert "buffalo_sc: installed and verified" in fetched.stdout
    assert (data / "facesetd.toml").is_file() and "buffalo_sc" in (data / "facesetd.toml").read_text()

    (data / "inbox" / "faceset_001").mkdir(parents=True)
    shutil.copy(faces_dir / "identities" / "biden" / "biden.jpg", data / "inbox" / "faceset_001" / "b.jpg")
    d = DaemonProcess(data, user_env(home, **run_env))
    d.env = user_env(home, **run_env)  # nothing DaemonProcess adds: the README's run, as typed
    d.start()
    try:
        d.wait_for(lambda: "face_added" in d.kinds() and '"caught up"' in d.output(), "the first face")
        # in another shell, while the daemon runs: every verb works on the folder with no extra setting
        beside = ["--data-dir", str(data)]
        for verb in (["doctor"], ["status"], ["events"], ["reconcile"]):
            proc = facesetd(user_env(home), *beside, *verb)
            assert proc.returncode == 0 and "Traceback" not in proc.stderr, (verb, proc.stdout + proc.stderr)
        assert "is working on this data folder" in facesetd(user_env(home), *beside, "reconcile").stdout
    finally:
        assert d.terminate() == 0
    assert "checks that need models are off" not in d.output()

    base = ["--data-dir", str(data)]
    env = user_env(home)
    doctor = facesetd(env, *base, "doctor")
    assert doctor.returncode == 0 and "configured pack" not in doctor.stdout, doctor.stdout + doctor.stderr
    assert "face engine: buffalo_sc" in doctor.stdout
    listed = facesetd(env, *base, "models", "list")
    assert listed.returncode == 0 and re.search(r"pack buffalo_sc: .*in use", listed.stdout), listed.stdout
    shutil.copy(faces_dir / "identities" / "biden" / "biden2.jpg", data / "inbox" / "b2.jpg")
    reconciled = facesetd(env, *base, "reconcile")
    assert reconciled.returncode == 0, reconciled.stdout + reconciled.stderr
    assert "are off" not in reconciled.stderr and "buffalo_l" not in reconciled.stdout + reconciled.stderr
    for verb in (["status"], ["events"], ["config"]):
        proc = facesetd(env, *base, *verb)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    assert 'face_pack = "buffalo_sc"' in facesetd(env, *base, "config").stdout
    assert len(list((data / "corpus" / "faceset_001" / "faces").glob("*.png"))) == 2


def test_fetch_keeps_the_users_file_and_never_overrides_a_configured_installed_pack(
    tmp_path: Path, models_root: Path
) -> None:
    home = tmp_path / "home"
    data = tmp_path / "data"
    shutil.copytree(models_root / "models" / "buffalo_sc", data / "models" / "models" / "buffalo_sc")
    text = ("# my settings\n[thresholds]\nocclusion_prune = 0.8  # stricter\n\n"
            "[models]  # the pack\nface_pack = \"buffalo_l\"  # roop's\nbatch_size = 4\n")
    (data / "facesetd.toml").write_text(text)
    env = user_env(home)
    proc = facesetd(env, "--data-dir", str(data), "models", "fetch", "--pack", "buffalo_sc")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (data / "facesetd.toml").read_text() == text.replace('"buffalo_l"', '"buffalo_sc"')
    # An installed pack the user chose is never replaced by a later fetch of another one.
    (data / "models" / "models" / "other").mkdir()
    (data / "models" / "models" / "other" / "x.onnx").write_bytes(b"x")
    before = (data / "facesetd.toml").read_text()
    proc = facesetd(env, "--data-dir", str(data), "models", "fetch", "--pack", "other")
    assert proc.returncode == 0 and (data / "facesetd.toml").read_text() == before, proc.stdout + proc.stderr
    assert "buffalo_sc" in proc.stdout  # it says which pack the daemon keeps using
    # A pack set in the environment wins over the data folder's file: say so instead of editing in vain.
    proc = facesetd({**env, "FACESETD_MODELS_FACE_PACK": "buffalo_l"}, "--data-dir", str(data),
                    "models", "fetch", "--pack", "buffalo_sc")
    assert proc.returncode == 0 and "FACESETD_MODELS_FACE_PACK" in proc.stdout, proc.stdout
    assert (data / "facesetd.toml").read_text() == before


def test_hints_name_the_installed_pack(tmp_path: Path, models_root: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(models_root / "models" / "buffalo_sc", data / "models" / "models" / "buffalo_sc")
    env = user_env(tmp_path / "home")
    doctor = facesetd(env, "--data-dir", str(data), "doctor")
    assert doctor.returncode == 1
    assert "configured pack buffalo_l is missing" in doctor.stdout
    assert "installed: buffalo_sc" in doctor.stdout and "models fetch --pack buffalo_sc" in doctor.stdout
    listed = facesetd(env, "--data-dir", str(data), "models", "list")
    assert "buffalo_l (models.face_pack) is not installed" in listed.stdout, listed.stdout


@pytest.mark.parametrize("verb", [["status"], ["events"], ["config"], ["doctor"], ["models", "list"],
                                  ["rebuild"], ["restore", "1"]])
def test_read_verbs_on_a_missing_data_folder_create_nothing(tmp_path: Path, verb: list[str]) -> None:
    missing = tmp_path / "nonexistent" / "deep" / "dir"
    proc = facesetd(user_env(tmp_path), "--data-dir", str(missing), *verb)
    one_line_error(proc, f"data folder {missing} does not exist")
    assert list(tmp_path.iterdir()) == []
    leaf = tmp_path / "typo"
    one_line_error(facesetd(user_env(tmp_path), "--data-dir", str(leaf), *verb), str(leaf))
    assert not leaf.exists()


@pytest.mark.parametrize("verb", [["run"], ["reconcile"], ["models", "fetch", "--pack", "buffalo_sc"]])
def test_writing_verbs_create_only_a_leaf(tmp_path: Path, verb: list[str]) -> None:
    missing = tmp_path / "nonexistent" / "deep" / "dir"
    proc = facesetd(user_env(tmp_path), "--data-dir", str(missing), *verb)
    one_line_error(proc, f"{tmp_path / 'nonexistent' / 'deep'} does not exist")
    assert list(tmp_path.iterdir()) == []


def test_reconcile_creates_a_missing_leaf(tmp_path: Path) -> None:
    leaf = tmp_path / "corpus_home"
    proc = facesetd(user_env(tmp_path), "--data-dir", str(leaf), "reconcile")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (leaf / "inbox").is_dir() and (leaf / "corpus").is_dir()


def test_default_data_folder_missing_says_how_to_pick_one(tmp_path: Path) -> None:
    proc = facesetd(user_env(tmp_path), "status")
    one_line_error(proc, str(tmp_path / ".local" / "share" / "facesetd"), "--data-dir")
    assert list(tmp_path.iterdir()) == []
    # `config --defaults` and `--reference` document the defaults: they need no data folder.
    assert facesetd(user_env(tmp_path), "config", "--defaults").returncode == 0


def test_readme_uses_one_data_folder_throughout() -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.S)
    calls = [c for block in blocks for c in re.findall(r"bin/facesetd( [^&\n]*)", block)]
    assert len(calls) >= 3, calls
    for call in calls:
        if "pytest" in call:
            continue
        assert call.startswith(" --data-dir ~/facesetd "), f"README runs facesetd without --data-dir ~/facesetd: {call}"
    assert "~/.local/share/facesetd" in readme  # the default is named where the quick start picks another


def test_a_started_daemon_creates_its_leaf_and_nothing_beside_it(tmp_path: Path) -> None:
    leaf = tmp_path / "fresh"
    log_path = tmp_path.parent / f"{tmp_path.name}-fresh.log"
    with open(log_path, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "daemon.cli", "--data-dir", str(leaf), "run"],
                                env=user_env(tmp_path), cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while "facesetd running" not in log_path.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.1)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh"]
    assert (leaf / "inbox").is_dir() and (leaf / "state").is_dir()
