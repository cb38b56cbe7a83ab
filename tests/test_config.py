"""Configuration: defaults documented in config.toml, clear one-line errors naming the key, env overrides."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
from helpers import REPO, cli

from daemon.config import Config, flatten, load_config
from daemon.config_toml import render, render_reference
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


# Settings that would silently do nothing ---------------------------------------------------------------


def test_misspelt_environment_variable_is_an_error_naming_the_closest_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"FACESETD_MODELS_FASE_PACK: .*did you mean FACESETD_MODELS_FACE_PACK"):
        load_config(None, environ={"FACESETD_MODELS_FASE_PACK": "buffalo_sc"})
    data = tmp_path / "data"
    data.mkdir()
    proc = cli(data, "status", env={"FACESETD_MODELS_FASE_PACK": "buffalo_sc"}, check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "FACESETD_MODELS_FASE_PACK" in lines[0] and "FACESETD_MODELS_FACE_PACK" in lines[0]


def test_variables_that_are_not_settings_are_allowed() -> None:
    allowed = {"FACESETD_CONFIG": "/x.toml", "FACESETD_DATA_DIR": "/tmp", "FACESETD_CRASHPOINT": "after_append",
               "FACESETD_CRASHPOINT_FILE": "/tmp/x", "FACESETD_TEST_MODELS": "/m", "FACESETD_TEST_KEY_ALICE": "k",
               "FACESETD_SHARED": "/s", "FACESETD_SOAK_SECONDS": "9", "FACESETD_SOAK_SEED": "1",
               "FACESETD_SOAK_SKIP": "1", "FACESETD_PATHS_DATA_DIR": "/tmp"}
    load_config(None, environ=allowed)


def test_a_key_variable_named_by_an_immich_user_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[immich]\nurl = "http://x"\n[[immich.users]]\nname = "a"\napi_key_env = "FACESETD_KEY_A"\n')
    assert load_config(path, environ={"FACESETD_KEY_A": "secret"}).immich.users[0].api_key_env == "FACESETD_KEY_A"
    with pytest.raises(ConfigError, match="FACESETD_KEY_B"):
        load_config(path, environ={"FACESETD_KEY_B": "secret"})


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[thresholds]\nocclusion_prune = 7\n", {}, "thresholds.occlusion_prune: must be between 0 and 1, got 7"),
        ("", {"FACESETD_MODELS_DET_THRESH": "5"},
         "FACESETD_MODELS_DET_THRESH (models.det_thresh): must be between 0 and 1, got 5"),
        ("[queue]\nmax_pending = 0\n", {}, "queue.max_pending: must be at least 1, got 0"),
        ("[immich]\npage_size = 5000\n", {}, "immich.page_size: must be between 1 and 1000, got 5000"),
        ("[[eras.buckets]]\nfaceset = \"a\"\nfamily = \"b\"\nyear = 99999\n", {}, "eras.buckets[0].year"),
    ],
)
def test_out_of_range_values_are_errors_naming_the_key(tmp_path: Path, toml: str, env: dict[str, str],
                                                       message: str) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, environ=env)


def _numeric_fields() -> list[tuple[str, dataclasses.Field]]:
    out = []
    for section in dataclasses.fields(Config):
        cls = type(getattr(Config(), section.name))
        for f in dataclasses.fields(cls):
            if f.type in ("int", "float", int, float):
                out.append((f"{section.name}.{f.name}", f))
    return out


def test_every_number_declares_its_range_and_the_docs_show_it() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    missing = [key for key, f in _numeric_fields() if "range" not in f.metadata]
    assert missing == [], f"numeric keys without a declared range: {missing}"
    row = next(line for line in doc.splitlines() if line.startswith("| `thresholds.occlusion_prune`"))
    assert "0 – 1" in row


def test_restart_only_keys_are_marked_in_the_docs() -> None:
    doc = (REPO / "docs" / "configuration.md").read_text()
    row = next(line for line in doc.splitlines() if line.startswith("| `models.face_pack`"))
    assert "restart" in row
    row = next(line for line in doc.splitlines() if line.startswith("| `queue.max_pending`"))
    assert "restart" not in row


def test_data_folder_file_is_read_below_the_config_file_and_the_environment(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    (data / "facesetd.toml").write_text("[models]\nface_pack = \"buffalo_sc\"\nbatch_size = 2\n"
                                        "[thresholds]\nocclusion_prune = 0.6\n")
    c = load_config(None, data_dir=str(data), environ={})
    assert (c.models.face_pack, c.models.batch_size, c.thresholds.occlusion_prune) == ("buffalo_sc", 2, 0.6)
    top = tmp_path / "top.toml"
    top.write_text("[models]\nbatch_size = 3\n")
    c = load_config(top, data_dir=str(data), environ={"FACESETD_THRESHOLDS_OCCLUSION_PRUNE": "0.9"})
    assert (c.models.face_pack, c.models.batch_size, c.thresholds.occlusion_prune) == ("buffalo_sc", 3, 0.9)
    c = load_config(None, environ={"FACESETD_DATA_DIR": str(data)})
    assert c.models.face_pack == "buffalo_sc"
    (data / "facesetd.toml").write_text("[models]\nface_pak = \"x\"\n")
    with pytest.raises(ConfigError, match=re.escape(f"{data / 'facesetd.toml'}: models.face_pak: unknown key")):
        load_config(None, data_dir=str(data), environ={})
    (data / "facesetd.toml").write_text(f"[paths]\ndata_dir = \"{tmp_path}\"\n")
    with pytest.raises(ConfigError, match="paths.data_dir"):
        load_config(None, data_dir=str(data), environ={})


def test_immich_poller_uses_identity_min_face_px(tmp_path: Path, faces_dir: Path, models_root: Path) -> None:
    """obama_small.jpg's face is under the default 90 px: [identity] min_face_px = 20 lets it in."""
    from tests.immich_fake import FakeImmich, library

    key = "fake-key-MinFacePx-9Tz4"
    data = tmp_path / "data"
    config = tmp_path / "facesetd.toml"
    with FakeImmich(api_key=key) as fake:
        library(fake, [faces_dir / "identities" / "obama" / "obama_small.jpg"])
        config.write_text(f'[identity]\nmin_face_px = 20\n[immich]\nurl = "{fake.url}"\ntimeout_s = 10.0\n'
                          '[[immich.users]]\nname = "alice"\napi_key_env = "IMMICH_KEY_ALICE"\n')
        env = {"IMMICH_KEY_ALICE": key, "FACESETD_MODELS_FACE_PACK": "buffalo_sc",
               "FACESETD_MODELS_ROOT": str(models_root)}
        proc = cli(data, "--config", str(config), "immich", "poll", "--once", env=env)
    assert "listed 1; delivered 1" in proc.stdout, proc.stdout + proc.stderr


def test_sighup_applies_queue_settings_and_names_restart_only_keys(tmp_path: Path, models_root: Path) -> None:
    import signal

    from daemon_proc import DaemonProcess

    config = tmp_path / "facesetd.toml"
    config.write_text("[queue]\nmax_pending = 256\n[models]\nface_pack = \"buffalo_sc\"\n")
    env = {"FACESETD_MODELS_ROOT": str(models_root), "FACESETD_CONFIG": str(config)}
    d = DaemonProcess(tmp_path / "data", env).start()
    try:
        assert d.proc is not None
        config.write_text("[queue]\nmax_pending = 16\ncluster_interval_s = 5.0\nmodel_retry_s = 3.0\n"
                          "[models]\nface_pack = \"buffalo_l\"\n[watch]\nsettle_s = 1.0\n")
        d.proc.send_signal(signal.SIGHUP)
        d.wait_for(lambda: "config reloaded" in d.output(), "the reload")
        line = next(ln for ln in d.output().splitlines() if "config reloaded" in ln)
        assert "restart to apply: models.face_pack, watch.settle_s" in line
        assert '"applied": ["queue.max_pending", "queue.cluster_interval_s", "queue.model_retry_s"]' in line
        # the pack's own distances stay those of the pack still running (buffalo_sc) until the restart
        assert "identity." not in line
        assert d.proc.poll() is None
    finally:
        assert d.terminate() == 0


def test_reload_applies_every_key_not_marked_restart_only(tmp_path: Path) -> None:
    """In process: after _reload the running objects hold the new queue, retry, interval and era values."""
    from daemon.app import App
    from daemon.service import Daemon

    data = tmp_path / "data"
    data.mkdir()
    config = tmp_path / "c.toml"
    config.write_text("")
    app = App(load_config(config, data_dir=str(data), environ={}), config)
    daemon = Daemon(app, environ={})
    daemon.start()
    try:
        config.write_text("[queue]\nmax_pending = 7\ncluster_interval_s = 9.0\nmodel_retry_s = 4.0\n"
                          "[[eras.buckets]]\nfaceset = \"faceset_101\"\nfamily = \"faceset_001\"\nyear = 2012\n"
                          "[models]\nface_pack = \"other\"\n")
        daemon._reload()
        assert daemon.work.maxsize == 7
        job = daemon.scheduler.get_job("housekeeping")
        assert job.trigger.interval.total_seconds() == 9.0
        assert daemon.pipeline.ctx.config.model_retry_s == 4.0 and daemon.config.queue.model_retry_s == 4.0
        assert [b.faceset for b in daemon.pipeline.ctx.config.eras.buckets] == ["faceset_101"]
        # restart-only keys keep the running value until a restart
        assert daemon.config.models.face_pack == "buffalo_l"
    finally:
        daemon.shutdown()
        app.close()
