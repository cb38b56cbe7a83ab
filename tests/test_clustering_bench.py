"""bench/clustering.py: its scoring on hand-made clusters, its rules on well separated vectors, and the labelled
set's README naming every photo (so the licence record cannot go stale). No models needed."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_clustering", BENCH / "clustering.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


clustering = _load()
U = clustering.UNCLUSTERED


def test_bcubed_of_a_hand_made_example() -> None:
    # a a | a b | b alone; by hand: P = (1 + 1 + 1/2 + 1/2 + 1) / 5, R = (2/3 + 2/3 + 1/3 + 1/2 + 1/2) / 5
    s = clustering.score(["a", "a", "a", "b", "b"], [0, 0, 1, 1, U])
    assert s.precision == pytest.approx(0.8)
    assert s.recall == pytest.approx(8 / 15)
    assert s.f1 == pytest.approx(2 * 0.8 * (8 / 15) / (0.8 + 8 / 15))
    assert (s.clusters, s.impure) == (2, 1)


def test_bystanders_are_left_out_of_the_scoring() -> None:
    plain = clustering.score(["a", "a", "a", "b", "b"], [0, 0, 1, 1, U])
    with_bystanders = clustering.score(["a", "a", "a", "b", "b", "", ""], [0, 0, 1, 1, U, 1, 5])
    assert with_bystanders == plain


def test_everything_unclustered_is_all_singletons() -> None:
    s = clustering.score(["a"] * 5 + ["b"] * 3, [U] * 8)
    assert (s.precision, s.clusters, s.found, s.small_found) == (1.0, 0, 0, 0)
    assert s.recall == pytest.approx((5 * (1 / 5) + 3 * (1 / 3)) / 8)


def test_a_person_is_found_in_exactly_one_cluster_holding_most_of_them() -> None:
    five = ["p"] * 5
    assert clustering.score(five, [0, 0, 0, U, U]).found == 1  # 3 of 5 in one cluster
    assert clustering.score(five, [0, 0, 1, 1, U]).found == 0  # 2 of 5: no majority
    assert clustering.score(five, [0, 0, 0, 1, 1]).found == 0  # split: two clusters are theirs
    # absorbed: their 5 faces sit in a cluster where 6 faces of q are the majority
    absorbed = clustering.score(five + ["q"] * 6, [0] * 11)
    assert (absorbed.found, absorbed.of, absorbed.impure) == (1, 2, 1)  # q is found, p is not
    # found despite one stranger in their cluster (impurity is counted apart)
    assert clustering.score(five + ["r"], [0] * 6).found == 1


def test_a_small_person_needs_one_pure_cluster_of_three() -> None:
    assert clustering.score(["s"] * 3, [0, 0, 0]).small_found == 1
    assert clustering.score(["s"] * 4, [0, 0, U, U]).small_found == 0
    assert clustering.score(["s"] * 3 + ["t"], [0, 0, 0, 0]).small_found == 0


def _three_people(per_person: int = 6, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    """Unit vectors of three people, each a tight cloud (cosine ~0.02 from its mean) around orthogonal axes."""
    rng = np.random.default_rng(seed)
    rows, persons = [], []
    for k, name in enumerate("abc"):
        for _ in range(per_person):
            v = np.zeros(512)
            v[k] = 1.0
            v += rng.normal(0, 0.01, 512)
            rows.append(v / np.linalg.norm(v))
            persons.append(name)
    return np.stack(rows).astype(np.float32), persons


@pytest.mark.parametrize("rule", ["immich", "photoprism", "average_linkage", "complete_then_centroids"])
def test_every_peer_rule_finds_well_separated_people(rule: str) -> None:
    vecs, persons = _three_people()
    s = clustering.score(persons, getattr(clustering, rule)(vecs))
    assert (s.found, s.of, s.impure, s.f1) == (3, 3, 0, 1.0)


def test_facesetd_before_gates_on_distinct_photos() -> None:
    vecs, persons = _three_people()
    photos = [f"{p}/{i}.jpg" for i, p in enumerate(persons)]
    assert clustering.score(persons, clustering.facesetd_before(vecs, photos)).found == 3
    # a's six faces from five photos: under the gate of 6, a stays in the pool
    photos[1] = photos[0]
    labels = clustering.facesetd_before(vecs, photos)
    assert set(labels[:6]) == {U} and clustering.score(persons, labels).found == 2


def test_facesetd_rule_gates_at_five_distinct_photos() -> None:
    vecs, persons = _three_people()
    photos = [f"{p}/{i}.jpg" for i, p in enumerate(persons)]
    photos[1] = photos[0]  # a's six faces from five photos: the gate of 5 takes them, one face per photo
    labels = clustering.facesetd_rule(vecs, photos, 0.55)
    assert labels[1] == U and len(set(labels[:6]) - {U}) == 1 and clustering.score(persons, labels).found == 3


def test_immich_defers_non_core_faces_and_leaves_pairs_alone() -> None:
    vecs, _persons = _three_people(per_person=2)
    assert clustering.immich(vecs) == [U] * 6  # two faces a person: never core at minFaces 3


def test_the_people_readme_lists_every_photo() -> None:
    people = BENCH / "people"
    on_disk = {f"{p.parent.name}/{p.name}" for p in people.glob("*/*") if p.is_file()}
    readme = (people / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| ([\w.-]+/[\w.-]+\.jpg) \|", readme, flags=re.M))
    assert on_disk, "no photos under bench/people"
    assert listed == on_disk
    counts = dict(re.findall(r"^\| ([\w-]+) \| (\d+) \|", readme, flags=re.M))
    assert {p: int(n) for p, n in counts.items()} == {
        d.name: sum(1 for f in on_disk if f.startswith(d.name + "/")) for d in people.iterdir() if d.is_dir()}
