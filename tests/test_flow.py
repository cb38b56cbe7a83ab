"""The flow map (handlers/flow.py): every event kind declared once, executed by the dispatcher, documented from it."""

from __future__ import annotations

import io
import re
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from daemon.config import load_config
from daemon.inbox import photo_event
from handlers.common import active_face, prune
from handlers.context import HandlerContext
from handlers.dispatch import Dispatcher
from handlers.flow import FLOW, render_events
from handlers.registry import Consumer, FlowError, Stage, applier_name, declare, with_consumer, without_consumers
from state import events as ev
from state.corpus_state import APPLIERS, BATCH_APPLIERS
from state.eventlog import EventLog, StoredEvent
from tests.handler_fixtures import decisions, events_of, pipeline, write_corpus
from tests.helpers import REPO, cli

SOURCES = ("daemon", "handlers", "state", "gpu_agent")
# Helpers that construct an event for whoever calls them: the callers are the event's writers.
WRITTEN_THROUGH = {ev.FacePruned: r"(?<!def )\bprune\("}


def _modules() -> dict[str, str]:
    """dotted module name -> source, for every module of the package (state/events.py itself left out)."""
    out = {}
    for top in SOURCES:
        for path in sorted((REPO / top).rglob("*.py")):
            name = ".".join(path.relative_to(REPO).with_suffix("").parts)
            if name != "state.events":
                out[name] = path.read_text()
    return out


# --- The map is complete and names real things ---------------------------------------------------------------


def test_every_event_kind_is_handled_applied_or_recorded_only() -> None:
    missing = [kind for kind in ev.REGISTRY if kind not in FLOW]
    assert not missing, f"add a Stage for {missing} to handlers/flow.py (its producers, consumers and applier)"
    for kind, stage in FLOW.items():
        assert stage.consumers or stage.applier or stage.record_only, (
            f"{kind}: nothing handles or applies it; say why it is recorded only (Stage(record_only=...))")
        assert stage.producers, f"{kind}: no producer declared"
    for kind in ev.REGISTRY:
        assert FLOW[kind].applier == applier_name(kind), (
            f"{kind}: state/corpus_state.py applies it with {applier_name(kind) or 'nothing'!r},"
            f" the flow map says {FLOW[kind].applier or 'nothing'!r}")
    assert set(APPLIERS) | set(BATCH_APPLIERS) <= set(FLOW)


def test_record_only_kinds_are_the_bookkeeping_ones() -> None:
    recorded_only = {kind for kind, s in FLOW.items() if not s.consumers and not s.applier}
    assert recorded_only == {ev.NameEscaped.KIND, ev.ImmichWatermarkAdvanced.KIND, ev.ImmichAssetDeferred.KIND,
                             ev.ImmichAssetImported.KIND, ev.ImmichAssetRefused.KIND, ev.ForcedFaceDistant.KIND,
                             ev.DeadLettered.KIND, ev.DeadLetterRetried.KIND}


def test_producers_are_exactly_the_modules_that_construct_the_event() -> None:
    modules = _modules()
    for kind, stage in FLOW.items():
        cls = stage.kind
        pattern = WRITTEN_THROUGH.get(cls, rf"(?<![\w.])(?:ev\.|events\.)?{cls.__name__}\(")
        found = {name for name, src in modules.items() if re.search(pattern, src)}
        assert set(stage.producers) == found, (
            f"{kind}: the flow map says it is written by {sorted(stage.producers)}, the code by {sorted(found)}")


def test_readers_name_modules_that_read_the_kind() -> None:
    modules = _modules()
    for kind, stage in FLOW.items():
        for reader in stage.readers:
            module = reader.partition(":")[0]
            assert module in modules, f"{kind}: reader {module} is not a module"
            assert re.search(rf"\b{stage.kind.__name__}\b", modules[module]), f"{kind}: {module} never names it"


def test_analyzed_faces_go_through_the_checks_in_the_declared_order() -> None:
    # The per-image prunes first (each skips what an earlier one decided on), then era slotting, then the rules.
    assert [c.name for c in FLOW[ev.FaceAnalyzed.KIND].consumers] == [
        "check_multi_face", "check_occlusion", "check_near_dup", "slot_into_era", "apply_faceset_rules"]
    assert [c.name for c in FLOW[ev.PhotoReceived.KIND].consumers] == ["route_photo"]


# --- A misspelt or unknown name is an error at import ------------------------------------------------------


@pytest.mark.parametrize(("declared", "message"), [
    ("Consumer(multi_face.check_multi_fase, batch=8)", "has no attribute 'check_multi_fase'"),
    ("Consumer('check_multi_face', batch=8)", "must be a function"),
    ("Consumer(multi_face.check_multi_face, batch=0)", "must be a function with batch >= 1"),
], ids=["misspelt-function", "name-string", "zero-batch"])
def test_a_misspelt_consumer_fails_the_import(tmp_path: Path, declared: str, message: str) -> None:
    (tmp_path / "my_flow.py").write_text(
        "from handlers import multi_face\n"
        "from handlers.registry import Consumer, Stage, declare\n"
        "from state import events as ev\n"
        f"FLOW = declare([Stage(ev.FaceAnalyzed, producers=('handlers.embed',), consumers=({declared},))])\n")
    proc = subprocess.run([sys.executable, "-c", "import my_flow"], capture_output=True, text=True,
                          cwd=tmp_path, env={"PYTHONPATH": f"{tmp_path}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and message in proc.stderr


def test_a_misspelt_applier_or_kind_is_a_flow_error() -> None:
    with pytest.raises(FlowError, match=r"face_analyzed: applier '_analysed_batch' is not the one"):
        declare([Stage(ev.FaceAnalyzed, applier="_analysed_batch")])
    with pytest.raises(FlowError, match="declared twice"):
        declare([Stage(ev.FaceAdded), Stage(ev.FaceAdded)])
    with pytest.raises(FlowError, match="not an event kind"):
        declare([Stage(ev.Decision)])  # the base class has no kind
    with pytest.raises(FlowError, match="record_only, yet"):
        declare([Stage(ev.FaceMissing, applier="_face_missing", record_only="why")])


def test_the_flow_module_runs_clean() -> None:
    proc = subprocess.run([sys.executable, "-m", "handlers.flow"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0 and proc.stderr == "" and proc.stdout == render_events()


# --- docs/events.md is the map, rendered ----------------------------------------------------------------------


def test_events_doc_is_generated_from_the_flow_map() -> None:
    doc = (REPO / "docs" / "events.md").read_text()
    assert doc == render_events(), "docs/events.md is out of date: run `python -m handlers.flow > docs/events.md`"
    for kind, stage in FLOW.items():
        assert f"## `{kind}` ({stage.kind.__name__})" in doc
    section = doc.split("## `face_analyzed`")[1].split("\n## ")[0]
    assert ("consumed by, in order: `handlers.multi_face.check_multi_face` (batch 8), "
            "`handlers.occlusion.check_occlusion` (batch 8)") in section
    assert "| `embedding` | `float32 vector (stored as bytes)` |" in section
    assert "| `quality` | `float \\| None` | composite crop quality" in section
    assert "recorded only: the rename is already done on disk" in doc


# --- Adding a check: one module-level function, one entry in (a copy of) the map ---------------------------


CHECK = "png_size"


def check_png_size(ctx: HandlerContext, events: Sequence[StoredEvent[ev.FaceAdded]]) -> list[ev.Event]:
    """The CONTRIBUTING.md example: a corpus PNG that is not 512x512 (roop's crop size) is pruned."""
    out: list[ev.Event] = []
    for se in events:
        e = se.event  # a FaceAdded, as the signature says (mypy checks the flow map's entry against it)
        face = active_face(ctx, e.path, e.sha256)
        if face is None:
            continue  # pruned, moved or changed since: a later event covers it
        with Image.open(ctx.config.corpus / face.path) as im:
            width, height = im.size
        if (width, height) != (512, 512):
            out.append(prune(ctx, face, CHECK, f"{width}x{height}, not 512x512", {"size": [width, height]}))
    return out


def _png(photo: Path, size: int) -> bytes:
    buf = io.BytesIO()
    with Image.open(photo) as im:
        im.convert("RGB").resize((size, size)).save(buf, format="PNG")
    return buf.getvalue()


def test_a_toy_check_added_to_a_copy_of_the_map_runs_on_a_real_log(tmp_path: Path, faces_dir: Path) -> None:
    obama = faces_dir / "identities/obama/obama.jpg"
    write_corpus(tmp_path / "corpus", {"faceset_001/faces/a.png": _png(obama, 512),
                                       "faceset_001/faces/b.png": _png(obama, 300)})
    declared = FLOW[ev.FaceAdded.KIND]
    toy_flow = with_consumer(FLOW, ev.FaceAdded, Consumer(check_png_size, batch=8))
    assert [c.name for c in toy_flow[ev.FaceAdded.KIND].consumers] == [
        *(c.name for c in declared.consumers), "check_png_size"]

    p = pipeline(tmp_path, None)  # no models: embed says so and the toy check runs on
    p.dispatcher = Dispatcher(p.log, p.state, p.ctx, flow=toy_flow)
    p.reconcile()
    [(_pos, pruned)] = decisions(p, CHECK)
    assert pruned.path == "faceset_001/faces/b.png" and pruned.reason == "300x300, not 512x512"
    assert (tmp_path / "corpus/faceset_001/faces/_dropped/b.png").is_file()
    assert not (tmp_path / "corpus/faceset_001/faces/b.png").exists()
    assert [e.path for _p, e in events_of(p, ev.FaceAdded)] == ["faceset_001/faces/a.png", "faceset_001/faces/b.png"]

    # The declared map is untouched: the next pipeline runs it as it was.
    assert FLOW[ev.FaceAdded.KIND] is declared and check_png_size not in {c.fn for c in declared.consumers}
    assert pipeline(tmp_path / "other", None).dispatcher.flow is FLOW


def _recorder(name: str, calls: list[str]):
    def handler(ctx: HandlerContext, events: Sequence[StoredEvent]) -> list[ev.Event]:
        calls.append(f"{name}:{len(events)}")
        return []
    handler.__name__ = name
    return handler


def test_the_dispatcher_runs_consumers_in_map_order_and_batches(tmp_path: Path) -> None:
    calls: list[str] = []
    first, second = _recorder("first", calls), _recorder("second", calls)
    p = pipeline(tmp_path, None)
    p.log.append([ev.FaceMissing(path=f"faceset_001/faces/{i}.png") for i in range(5)])
    base = without_consumers(FLOW, ev.FaceMissing)
    flow = with_consumer(with_consumer(base, ev.FaceMissing, Consumer(second, batch=2)),
                         ev.FaceMissing, Consumer(first, batch=3))
    assert Dispatcher(p.log, p.state, p.ctx, flow=flow).run_pending() == 5
    # The smallest batch of a kind's consumers sizes its groups; within a group, the map's order.
    assert calls == ["second:2", "first:2", "second:2", "first:2", "second:1", "first:1"]


def test_a_dry_run_leaves_a_received_photo_unrouted(tmp_path: Path, models_root: Path, faces_dir: Path) -> None:
    """`reconcile --dry-run` runs the checks through a copy of the map without the inbox router: a photo received
    but not routed yet (a daemon at work, a crash) keeps its place and no crop is written."""
    data = tmp_path / "data"
    (data / "inbox").mkdir(parents=True)
    shutil.copy(faces_dir / "identities/biden/biden.jpg", data / "inbox/biden.jpg")
    config = load_config(None, data_dir=str(data), environ={})
    config.state_dir.mkdir(parents=True)
    log = EventLog(config.log_path)
    log.append([photo_event(config.inbox_dir, "biden.jpg")])
    log.close()
    before = {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and "state" not in p.parts}
    env = {"FACESETD_MODELS_FACE_PACK": "buffalo_sc", "FACESETD_MODELS_ROOT": str(models_root)}

    cli(data, "reconcile", "--dry-run", env=env)
    after = {str(p.relative_to(data)) for p in data.rglob("*") if p.is_file() and "state" not in p.parts}
    assert after == before == {"inbox/biden.jpg"}

    cli(data, "reconcile", env=env)  # the real reconcile routes it
    assert not (data / "inbox/biden.jpg").exists() and list((data / "corpus").rglob("*.png"))


def test_every_tracked_follower_is_declared_in_the_followers_map() -> None:
    """Issue 22: each name the code commits a follower's position under (state/processor.py commit) is a
    follower of handlers/flow.py FOLLOWERS, and each tracked follower declared there commits somewhere."""
    from daemon.pipeline import MERGER, PROMOTER
    from handlers.dispatch import PROCESSOR as CHECKS
    from handlers.flow import FOLLOWERS
    from state.corpus_state import PROCESSOR as PROJECTION
    from state.pool_projection import POOL_CLUSTERS

    tracked = {f.position.split("`")[1].split(":")[0] for f in FOLLOWERS if f.position.startswith("tracking `")}
    assert tracked == {CHECKS, PROJECTION, PROMOTER, MERGER, POOL_CLUSTERS}
    # and every commit() in the tree is one of theirs: the calls name these constants (or the merger's key)
    repo = Path(__file__).resolve().parents[1]
    calls = [line.strip() for path in [*repo.glob("daemon/**/*.py"), *repo.glob("handlers/**/*.py"),
                                       *repo.glob("state/**/*.py")]
             for line in path.read_text().splitlines()
             if re.search(r"\bcommit\((?:self\.|pipeline\.)?log, ", line)]
    named = {re.search(r"commit\((?:self\.|pipeline\.)?log, (\w+)", c).group(1) for c in calls}  # type: ignore[union-attr]
    # `tracking`: the dead letters' (daemon/dead_letters.py), Pipeline.tracking_name of the promoter or the merger
    assert named == {"PROCESSOR", "PROMOTER", "merger", "pool_clusters", "tracking"}, calls


def test_the_runner_runs_exactly_the_declared_followers() -> None:
    """Issue 22: the one runner (daemon/runner.py) has a step for every follower of FOLLOWERS, and no other."""
    from daemon.runner import STEPS
    from handlers.flow import FOLLOWERS

    assert sorted(STEPS) == sorted(f.name for f in FOLLOWERS)
    source = (Path(__file__).resolve().parents[1] / "daemon/runner.py").read_text()
    stepped = set(re.findall(r'self\._step\("([\w ]+)"', source))
    assert stepped == set(STEPS)
