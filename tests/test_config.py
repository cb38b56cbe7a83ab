"""Configuration: defaults documented in config.toml, clear one-line errors naming the key, env overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from daemon.config import Config, flatten, load_config
from daemon.config_toml import render, render_reference
from helpers import REPO, cli
from state.errors import ConfigError


def test_config_toml_documents_exactly_the_defaults() -> None:
    text = (REPO / "config.toml").read_text()
    assert text == render(), "config.toml is out of date: run `facesetd config --defaults > config.toml`"
    assert load_config(REPO / "config.toml", environ={}) == Config()
    for line_no, line in enumerate(text.splitlines()):
        if "=" in line and not line.startswith("#"):
            assert text.splitlines()[line_no - 1].startswith("# ") and len(text.splitlines()[line_no - 1]) > 4


def test_docs_table_lists_every_key() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    assert doc == render_reference(), "run `facesetd config --reference > docs/configuration.md`"
    for key in flatten(Config()):
        assert f"`{key}`" in doc, f"docs/configuration.md misses {key}"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ("[thresholds]\nocclusion_prun = 0.7\n", "thresholds.occlusion_prun: unknown key"),
        ("[thresholds]\nocclusion_prune = \"high\"\n", "thresholds.occlusion_prune: expected a number"),
        ("[watch]\npolling = 1\n", "watch.polling: expected a boolean"),
        ("[gpu_agent]\nmode = \"cloud\"\n", "gpu_agent.mode: must be one of"),
        ("[models]\nclip_precision = \"fp16\"\n", "models.clip_precision: must be one of fp32, int8"),
        ("[nonsense]\nx = 1\n", "nonsense: unknown key"),
        ("[paths]\ncorpus = \"/does/not/exist/corpus\"\n", "paths.corpus: parent folder of /does/not/exist/corpus"),
        ("[[immich.users]]\nname = \"a\"\napi_key = \"secret\"\n", "immich.users[0].api_key: unknown key"),
        ("[models\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, environ={})
    proc = cli(tmp_path / "data", "--config", str(path), "status", check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facesetd: error: ") and message in lines[0]
    assert "Traceback" not in proc.stderr


def test_missing_config_file_is_a_clear_error(tmp_path: Path) -> None:
    proc = cli(tmp_path, "--config", str(tmp_path / "nope.toml"), "status", check=False)
    assert proc.returncode == 1 and "config file not found" in proc.stderr


def test_environment_overrides_every_key_by_name(tmp_path: Path) -> None:
    env = {
        "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
        "FACESETD_THRESHOLDS_OCCLUSION_PRUNE": "0.8",
        "FACESETD_WATCH_POLLING": "true",
        "FACESETD_MODELS_PROVIDERS": '["CPUExecutionProvider"]',
        "FACESETD_DATA_DIR": str(tmp_path),
    }
    c = load_config(None, environ=env)
    assert c.models.face_pack == "buffalo_sc" and c.thresholds.occlusion_prune == 0.8
    assert c.watch.polling is True and c.models.providers == ("CPUExecutionProvider",)
    assert c.corpus_dir == tmp_path / "corpus" and c.models_dir == tmp_path / "models"
    with pytest.raises(ConfigError, match="FACESETD_QUEUE_MAX_PENDING"):
        load_config(None, environ={"FACESETD_QUEUE_MAX_PENDING": "lots"})


def test_every_section_is_a_frozen_dataclass() -> None:
    for section in dataclasses.fields(Config):
        assert type(getattr(Config(), section.name)).__dataclass_params__.frozen
