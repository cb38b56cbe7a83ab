"""`facesetd gpu-agent serve`: run the models behind the loopback HTTP agent (e.g. on Windows with DirectML)."""

from __future__ import annotations

import argparse
from typing import Any

NAME = "gpu-agent"
HELP = "serve the face engine and occlusion scorer over loopback HTTP (bearer token required)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="agent_verb", metavar="SUBVERB", required=True)
    s = sub.add_parser("serve", help="listen on [gpu_agent] listen; token from FACESETD_GPU_AGENT_TOKEN")
    s.add_argument("--listen", help="host:port (default: [gpu_agent] listen)")


def run(args: argparse.Namespace, app: Any) -> int:
    from gpu_agent.face_engine import InsightFaceEngine
    from gpu_agent.occlusion import OnnxOcclusionScorer
    from gpu_agent.server import make_server

    cfg = app.config
    listen = args.listen or cfg.gpu_agent.listen
    engine = InsightFaceEngine(cfg.models, cfg.models_dir)
    scorer = OnnxOcclusionScorer(cfg.models, cfg.models_dir)
    if not scorer.available:
        app.log.warning("occlusion scorer unavailable", reason=scorer.describe().get("reason"))
    server = make_server(listen, engine, scorer, cfg.gpu_agent.token)
    host = server.server_address[0]
    if host not in ("127.0.0.1", "::1", "localhost"):
        app.log.warning("gpu agent listens beyond loopback; the token is its only protection", listen=listen)
    app.log.info("gpu agent listening", url=server.url, pack=cfg.models.face_pack, providers=engine.providers_in_use)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0
