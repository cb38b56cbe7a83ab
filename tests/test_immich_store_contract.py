"""One contract for every ImportStore: the daemon's event-log store and the tests' in-memory store.

As in eventsourcing's tests/persistence.py: ImportStoreContract holds the tests and an abstract
make_store(); each backend subclasses it. What only the event log can show (events appended, one
transaction per import, the corpus's own bytes) is in that backend's subclass.
"""

from __future__ import annotations

import ast
import threading
from abc import ABC, abstractmethod
from pathlib import Path

import pytest

from daemon.immich.store import EventLogImportStore, ImportStore, Refusal, StagedAsset
from state import events as ev
from state.corpus_state import CorpusState
from state.eventlog import EventLog
from tests.immich_memory_store import MemoryImportStore

REPO = Path(__file__).resolve().parents[1]
SERVER, OTHER_SERVER = "http://immich.test", "http://other.test"
ASSET_1, ASSET_2 = "3f0e1c2a-0000-4000-8000-000000000001", "3f0e1c2a-0000-4000-8000-000000000002"


def staged(tmp_path: Path, asset_id: str = ASSET_1, sha: str = "a" * 64, *, server: str = SERVER,
           user: str = "alice", checksum: str = "c2hhMQ==") -> StagedAsset:
    """A staged original as the poller hands it to the store."""
    path = tmp_path / "staging" / f"{asset_id}.jpg"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"original " + sha.encode())
    return StagedAsset(path=path, sha256=sha, server=server, user=user, asset_id=asset_id,
                       original_file_name="IMG_0001.JPG", taken_at="2024-05-01T10:00:00.000Z",
                       faces=((10.0, 20.0, 130.0, 150.0),), checksum=checksum)


class ImportStoreContract(ABC):
    """What the poller relies on, whatever backs the store."""

    @pytest.fixture(autouse=True)
    def _folder(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path

    @abstractmethod
    def make_store(self) -> ImportStore:
        """A new, empty store for this backend."""

    def reopen(self, store: ImportStore) -> ImportStore:
        """The same store as the next process (or pass) sees it; a backend without persistence returns it."""
        return store

    def test_it_is_an_import_store(self) -> None:
        assert isinstance(self.make_store(), ImportStore)

    def test_a_watermark_is_none_until_advanced_and_then_the_last_value(self) -> None:
        store = self.make_store()
        assert store.watermark(SERVER, "alice") is None
        store.advance_watermark(SERVER, "alice", "2026-01-01T00:00:00.000Z")
        store.advance_watermark(SERVER, "alice", "2026-01-02T00:00:00.000Z")
        assert self.reopen(store).watermark(SERVER, "alice") == "2026-01-02T00:00:00.000Z"

    def test_watermarks_are_per_server_and_user(self) -> None:
        store = self.make_store()
        store.advance_watermark(SERVER, "alice", "2026-01-01T00:00:00.000Z")
        store.advance_watermark(OTHER_SERVER, "bob", "2025-06-01T00:00:00.000Z")
        store = self.reopen(store)
        assert store.watermark(SERVER, "bob") is None and store.watermark(OTHER_SERVER, "alice") is None
        assert store.watermark(OTHER_SERVER, "bob") == "2025-06-01T00:00:00.000Z"

    def test_delivered_bytes_are_known_for_every_server_and_user(self) -> None:
        store = self.make_store()
        assert not store.known_sha256("a" * 64)
        store.deliver(staged(self.tmp_path, sha="a" * 64, server=OTHER_SERVER, user="bob"))
        store = self.reopen(store)
        assert store.known_sha256("a" * 64) and not store.known_sha256("b" * 64)

    def test_imported_checksums_are_the_last_per_asset_of_that_server(self) -> None:
        store = self.make_store()
        assert store.imported_checksums(SERVER) == {}
        store.deliver(staged(self.tmp_path, ASSET_1, "a" * 64, checksum="Zmlyc3Q="))
        store.deliver(staged(self.tmp_path, ASSET_1, "b" * 64, checksum="ZWRpdGVk"))  # edited in Immich
        store.deliver(staged(self.tmp_path, ASSET_2, "c" * 64, user="bob", checksum="Ym9i"))
        store.deliver(staged(self.tmp_path, ASSET_2, "d" * 64, server=OTHER_SERVER, checksum="b3RoZXI="))
        store = self.reopen(store)
        assert store.imported_checksums(SERVER) == {ASSET_1: "ZWRpdGVk", ASSET_2: "Ym9i"}
        assert store.imported_checksums(OTHER_SERVER) == {ASSET_2: "b3RoZXI="}

    def test_an_import_without_a_checksum_is_not_listed_and_keeps_the_earlier_one(self) -> None:
        store = self.make_store()
        store.deliver(staged(self.tmp_path, ASSET_2, "e" * 64, checksum=""))
        assert self.reopen(store).imported_checksums(SERVER) == {}
        store.deliver(staged(self.tmp_path, ASSET_1, "a" * 64, checksum="Zmlyc3Q="))
        store.deliver(staged(self.tmp_path, ASSET_1, "b" * 64, checksum=""))
        assert self.reopen(store).imported_checksums(SERVER) == {ASSET_1: "Zmlyc3Q="}

    def test_defer_and_undefer(self) -> None:
        store = self.make_store()
        assert store.deferred(SERVER, "alice") == set()
        store.defer(SERVER, "alice", ASSET_1)
        store.defer(SERVER, "alice", ASSET_1)  # twice is once
        store.defer(SERVER, "alice", ASSET_2)
        store = self.reopen(store)
        assert store.deferred(SERVER, "alice") == {ASSET_1, ASSET_2}
        store.undefer(SERVER, "alice", ASSET_1)
        store.undefer(SERVER, "alice", "never-deferred")  # nothing to do
        assert self.reopen(store).deferred(SERVER, "alice") == {ASSET_2}
        store.defer(SERVER, "alice", ASSET_1)  # deferred again after it was settled
        assert self.reopen(store).deferred(SERVER, "alice") == {ASSET_1, ASSET_2}

    def test_deferrals_are_per_server_and_user(self) -> None:
        store = self.make_store()
        store.defer(SERVER, "alice", ASSET_1)
        store = self.reopen(store)
        assert store.deferred(SERVER, "bob") == set() and store.deferred(OTHER_SERVER, "alice") == set()
        store.undefer(SERVER, "bob", ASSET_1)  # another user's undefer leaves alice's deferral
        assert store.deferred(SERVER, "alice") == {ASSET_1}

    def test_refusals_are_the_last_checksum_per_asset_and_reason_of_that_server(self) -> None:
        store = self.make_store()
        assert store.refusals(SERVER, "too_large") == {}
        first = Refusal(SERVER, "alice", ASSET_1, "too_large", "the original is 9 bytes", "Zmlyc3Q=", 9)
        assert store.refuse(first) is True and self.reopen(store).refuse(first) is False  # recorded before
        store.refuse(Refusal(SERVER, "bob", ASSET_1, "too_large", "the original is 12 bytes", "ZWRpdGVk", 12))
        store.refuse(Refusal(SERVER, "alice", ASSET_2, "malformed", "a face box of 'x'", "Ym9i"))
        store.refuse(Refusal(SERVER, "alice", "", "malformed", "an asset is list, not an object"))
        store.refuse(Refusal(OTHER_SERVER, "alice", ASSET_2, "too_large", "the original is 9 bytes", "b3RoZXI="))
        store = self.reopen(store)
        assert store.refusals(SERVER, "too_large") == {ASSET_1: "ZWRpdGVk"}  # any user's; an id-less one: none
        assert store.refusals(SERVER, "malformed") == {ASSET_2: "Ym9i"}
        assert store.refusals(OTHER_SERVER, "too_large") == {ASSET_2: "b3RoZXI="}

    def test_poller_threads_write_at_once(self) -> None:
        """The poller's workers deliver and defer from several threads; nothing is lost."""
        store = self.make_store()
        errors: list[Exception] = []

        def work(i: int) -> None:
            try:
                store.deliver(staged(self.tmp_path, f"asset-{i}", f"{i:064x}", checksum=f"sum{i}"))
                store.defer(SERVER, "alice", f"later-{i}")
            except Exception as e:  # noqa: BLE001  # pragma: no cover - any failure is shown by the assert below
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert errors == []
        store = self.reopen(store)
        assert store.imported_checksums(SERVER) == {f"asset-{i}": f"sum{i}" for i in range(8)}
        assert store.deferred(SERVER, "alice") == {f"later-{i}" for i in range(8)}
        assert all(store.known_sha256(f"{i:064x}") for i in range(8))


class TestMemoryImportStore(ImportStoreContract):
    def make_store(self) -> ImportStore:
        return MemoryImportStore()

    def test_delivered_originals_stay_where_they_were_staged(self) -> None:
        store = MemoryImportStore()
        asset = staged(self.tmp_path)
        store.deliver(asset)
        assert store.delivered == [asset] and asset.path.is_file()


class TestEventLogImportStore(ImportStoreContract):
    def make_store(self) -> ImportStore:
        self.handed: list[str] = []
        log = EventLog(self.tmp_path / "events.sqlite3")
        return EventLogImportStore(log, lambda asset: self.handed.append(asset.asset_id) or [])

    def reopen(self, store: ImportStore) -> ImportStore:
        """A new connection to the same file, as the next `facesetd immich poll` opens it."""
        assert isinstance(store, EventLogImportStore)
        return EventLogImportStore(EventLog(store.log.path), lambda asset: [])

    def test_a_delivery_is_the_import_record_and_the_inbox_events_in_one_transaction(self) -> None:
        log = EventLog(self.tmp_path / "events.sqlite3")
        photo = ev.PhotoReceived(root="staging", path=f"{ASSET_1}.jpg", sha256="a" * 64)
        store = EventLogImportStore(log, lambda asset: [photo])
        store.deliver(staged(self.tmp_path))
        stored = log.read()
        assert [s.kind for s in stored] == [ev.ImmichAssetImported.KIND, ev.PhotoReceived.KIND]
        assert stored[0].time == stored[1].time  # one append: one transaction
        imported = stored[0].event
        assert isinstance(imported, ev.ImmichAssetImported)
        assert (imported.asset_id, imported.sha256, imported.checksum) == (ASSET_1, "a" * 64, "c2hhMQ==")
        assert imported.staged == str(staged(self.tmp_path).path)

    def test_unchanged_values_append_nothing(self) -> None:
        store = self.make_store()
        assert isinstance(store, EventLogImportStore)
        store.advance_watermark(SERVER, "alice", "2026-01-01T00:00:00.000Z")
        store.advance_watermark(SERVER, "alice", "2026-01-01T00:00:00.000Z")
        store.defer(SERVER, "alice", ASSET_1)
        store.defer(SERVER, "alice", ASSET_1)
        store.undefer(SERVER, "alice", ASSET_2)
        assert [s.kind for s in store.log.read()] == [ev.ImmichWatermarkAdvanced.KIND, ev.ImmichAssetDeferred.KIND]

    def test_the_same_refusal_is_recorded_once(self) -> None:
        """An asset at the watermark is listed again every pass: its refusal is one event, not one per pass."""
        store = self.make_store()
        assert isinstance(store, EventLogImportStore)
        face = Refusal(SERVER, "alice", ASSET_1, "malformed", "faces of asset 1, face 1: boundingBoxX1 is 'x'", "c3Vt")
        for _ in range(3):
            store.refuse(face)
        store.refuse(Refusal(SERVER, "bob", ASSET_1, "malformed", face.error, "c3Vt"))  # the same, seen by bob
        store.refuse(Refusal(SERVER, "alice", ASSET_1, "malformed", face.error, "bmV3"))  # new bytes, still odd
        refused = [s.event for s in self.reopen(store).log.read()]  # type: ignore[attr-defined]
        assert [(e.user, e.checksum) for e in refused if isinstance(e, ev.ImmichAssetRefused)] == [
            ("alice", "c3Vt"), ("alice", "bmV3")]

    def test_bytes_already_in_the_corpus_are_known(self) -> None:
        """A PNG exported from the corpus into Immich is not imported back."""
        log = EventLog(self.tmp_path / "events.sqlite3")
        corpus = CorpusState(log)
        log.append([ev.FaceAdded(path="faceset_001/faces/a.png", sha256="f" * 64, size=10, mtime_ns=1)])
        corpus.catch_up()
        store = EventLogImportStore(log, lambda asset: [], corpus=corpus)
        assert store.known_sha256("f" * 64) and not store.known_sha256("a" * 64)
        assert EventLogImportStore(EventLog(log.path), lambda asset: []).known_sha256("f" * 64)


def test_one_immich_store_module_that_reads_the_log_through_its_api() -> None:
    """The event-log store lives beside its protocol; no SQL text and no raw connection in daemon/immich/."""
    assert not (REPO / "daemon" / "immich_store.py").exists()
    for source in sorted((REPO / "daemon" / "immich").glob("*.py")):
        tree = ast.parse(source.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute):
                assert node.attr not in ("conn", "execute"), f"{source.name}:{node.lineno} touches the connection"
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                words = node.value.upper().split()
                assert not {"SELECT", "INSERT", "UPDATE", "DELETE"} & set(words[:1]), \
                    f"{source.name}:{node.lineno} holds SQL text"
    assert not hasattr(__import__("daemon.immich.store", fromlist=["x"]), "MemoryImportStore")
