"""`facesetd models export-clip` without a network: one line, exit 1, in seconds; cached weights still export.

No test downloads anything: the Hugging Face endpoint is a local port (refused, silent, or answering 404) and
HF_HOME is an empty temporary folder.
"""

from __future__ import annotations

import http.server
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import cli

# The import of torch and open_clip alone takes a few seconds on a busy 2-core machine; before the fix one
# offline export took ~50 s of hub retries.
FAST_S = 30


def _env(tmp_path: Path, endpoint: str) -> dict[str, str]:
    return {"HF_ENDPOINT": endpoint, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "",
            "TRANSFORMERS_OFFLINE": ""}


def _refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _export(tmp_path: Path, endpoint: str, *args: str) -> tuple[str, str, float]:
    """Run the real CLI; (stdout, the one line printed on stderr, seconds). Asserts exit 1 and no traceback."""
    start = time.monotonic()
    proc = cli(tmp_path / "data", "models", "export-clip", *args, env=_env(tmp_path, endpoint), check=False,
               timeout=FAST_S + 30)
    elapsed = time.monotonic() - start
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("facesetd: error: "), proc.stderr
    return proc.stdout, lines[0], elapsed


def test_unreachable_hub_is_one_line_fast(tmp_path: Path) -> None:
    out, line, elapsed = _export(tmp_path, f"http://127.0.0.1:{_refused_port()}")
    assert out == ""
    assert "cannot get the CLIP weights ViT-L-14/dfn2b_s39b" in line and "Connection refused" in line, line
    assert "clip/ViT-L-14__dfn2b_s39b/" in line and "docs/models.md" in line, line
    assert elapsed < FAST_S, elapsed


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A port that accepts connections (the kernel's backlog) and never answers: a black-holed network."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield f"http://127.0.0.1:{s.getsockname()[1]}"


def test_silent_hub_times_out_quickly(tmp_path: Path, silent_endpoint: str) -> None:
    _, line, elapsed = _export(tmp_path, silent_endpoint)
    assert "is unreachable (no answer within 5 s)" in line, line
    assert elapsed < FAST_S, elapsed


@pytest.fixture
def endpoint_404() -> Iterator[str]:
    """A reachable mirror that does not hold the repository (HF_ENDPOINT pointing at the wrong place)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()

        do_GET = do_HEAD

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


def test_hub_without_the_weights_is_one_line(tmp_path: Path, endpoint_404: str) -> None:
    _, line, elapsed = _export(tmp_path, endpoint_404)
    assert f"download from {endpoint_404} failed" in line and "404" in line, line
    assert elapsed < FAST_S, elapsed


def test_misspelt_model_and_tag(tmp_path: Path) -> None:
    endpoint = f"http://127.0.0.1:{_refused_port()}"
    _, line, _ = _export(tmp_path, endpoint, "--model", "ViT-L-15")
    assert "open_clip has no model 'ViT-L-15'" in line, line
    _, line, _ = _export(tmp_path, endpoint, "--model", "ViT-B-32", "--pretrained", "laion2b")
    assert "no pretrained tag 'laion2b' for ViT-B-32" in line and "laion2b_s34b_b79k" in line, line


@pytest.mark.slow
def test_cached_weights_export_without_a_network(tmp_path: Path) -> None:
    """Weights already in the Hugging Face cache export offline: the probe fails, the cache is used, no retries."""
    import torch

    from gpu_agent.clip_export import build_model, clip_dir

    model, _, _ = build_model("ViT-B-32", None)  # random weights standing in for laion2b_e16's
    with torch.no_grad():
        model.logit_scale.fill_(1.2345)  # a marker: the export must carry these weights, not fresh random ones
    repo = tmp_path / "hf" / "hub" / "models--timm--vit_base_patch32_clip_224.laion2b_e16"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    torch.save(model.state_dict(), repo / "snapshots" / commit / "open_clip_pytorch_model.bin")

    start = time.monotonic()
    proc = cli(tmp_path / "data", "models", "export-clip", "--model", "ViT-B-32", "--pretrained", "laion2b_e16",
               env=_env(tmp_path, f"http://127.0.0.1:{_refused_port()}"), timeout=600)
    assert "Traceback" not in proc.stderr and "Retrying" not in proc.stderr, proc.stderr
    assert "ViT-B-32/laion2b_e16: exported to" in proc.stdout, proc.stdout
    out = clip_dir(tmp_path / "data" / "models", "ViT-B-32", "laion2b_e16")
    assert np.isclose(float(np.load(out / "text.npz")["logit_scale"]), 1.2345)
    assert json.loads((out / "clip.json").read_text())["pretrained"] == "laion2b_e16"
    print(f"offline export from the cache: {time.monotonic() - start:.1f} s")
