"""Identity-disjoint split (Market-style val query/gallery, save/load) and the PK batch sampler."""
import json
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st

from reid_utils.data import DatasetIndex, PKSampler, Record, load_split, make_split, query_gallery, save_split
from reid_utils.errors import ConfigError, DataError

ROOT = Path("/data/course")


def make_index(num_ids=40, seed=0, extra=()) -> DatasetIndex:
    """Records without files: random cameras and 1-12 images per identity (some single-camera)."""
    rng = np.random.default_rng(seed)
    train = []
    for pid in range(1, num_ids + 1):
        cams = rng.choice(6, size=rng.integers(1, 4), replace=False)
        for i in range(int(rng.integers(1, 13))):
            cam = int(cams[i % len(cams)])
            train.append(Record(ROOT / "train" / f"{pid:04d}_c{cam + 1}_{i:09d}.jpg", pid, cam, np.zeros(12, dtype=np.int64)))
    train += list(extra)
    return DatasetIndex("course", ROOT, sorted(train, key=lambda r: r.path.name), [], [])


def check_query_gallery(query, gallery):
    """One query per (pid, camid) at most, each with a cross-camera match in the gallery."""
    assert len({(r.pid, r.camid) for r in query}) == len(query)
    gallery_cams = defaultdict(set)
    for r in gallery:
        gallery_cams[r.pid].add(r.camid)
    for q in query:
        assert gallery_cams[q.pid] - {q.camid}, f"query {q.path} has no cross-camera match"


def test_split_is_identity_disjoint_and_complete():
    index = make_index()
    split = make_split(index, val_fraction=0.25, seed=3)
    train_pids = {r.pid for r in split.train}
    val_pids = {r.pid for r in split.val_query + split.val_gallery}
    assert not train_pids & val_pids and train_pids | val_pids == set(range(1, 41))
    assert len(val_pids) == 10 == len(split.val_pids) and set(split.val_pids) == val_pids
    assert len(split.train) + len(split.val_query) + len(split.val_gallery) == len(index.train)
    assert split.pid_to_label == {pid: label for label, pid in enumerate(sorted(train_pids))}
    assert split.num_train_ids == 30 and "val_ids=10" in repr(split)
    check_query_gallery(split.val_query, split.val_gallery)


def test_split_is_deterministic():
    index = make_index()
    a, b, c = make_split(index, 0.2, seed=1), make_split(index, 0.2, seed=1), make_split(index, 0.2, seed=2)
    assert a.val_pids == b.val_pids and a.val_query == b.val_query and a.val_gallery == b.val_gallery
    assert a.val_pids != c.val_pids
    everything = make_split(index, 0.0)
    assert len(everything.train) == len(index.train) and everything.val_query == everything.val_gallery == []


def test_query_gallery_rules():
    def rec(pid, cam, i):
        return Record(Path(f"{pid:04d}_c{cam + 1}_{i:09d}.jpg"), pid, cam)

    single_camera = [rec(1, 0, i) for i in range(4)]
    query, gallery = query_gallery(single_camera)
    assert query == [] and gallery == single_camera  # no cross-camera match possible: gallery only
    two_cams = [rec(2, 0, 0), rec(2, 0, 1), rec(2, 0, 2), rec(2, 3, 3)]
    query, gallery = query_gallery(two_cams)
    assert len(query) == 1 and len(gallery) == 3  # c4's only image cannot be both query and match
    check_query_gallery(query, gallery)
    rich = [rec(3, cam, 10 * cam + i) for cam in range(3) for i in range(3)]
    query, gallery = query_gallery(rich, seed=5)
    assert sorted(r.camid for r in query) == [0, 1, 2] and len(gallery) == 6


@settings(max_examples=30, deadline=None)
@given(num_ids=st.integers(2, 30), seed=st.integers(0, 10**6), fraction=st.floats(0.05, 0.9))
def test_split_properties(num_ids, seed, fraction):
    index = make_index(num_ids, seed)
    split = make_split(index, fraction, seed)
    assert 1 <= len(split.val_pids) < num_ids
    assert not {r.pid for r in split.train} & set(split.val_pids)
    check_query_gallery(split.val_query, split.val_gallery)


def test_junk_and_distractors_are_never_training_identities():
    extra = [Record(ROOT / "train" / "-1_c1s1_000001_01.jpg", -1, 0), Record(ROOT / "train" / "0000_c1s1_000002_01.jpg", 0, 0)]
    split = make_split(make_index(extra=extra), 0.2)
    assert -1 not in split.pid_to_label and 0 not in split.pid_to_label
    assert all(r.pid > 0 for r in split.train + split.val_query)
    assert sum(r.pid <= 0 for r in split.val_gallery) == 2


def test_bad_split_arguments():
    with pytest.raises(ConfigError, match="val_fraction=1.0"):
        make_split(make_index(), 1.0)
    with pytest.raises(DataError, match="need at least 2"):
        make_split(make_index(num_ids=1), 0.2)


def test_save_and_load_split(tmp_path):
    index = make_index()
    split = make_split(index, 0.2, seed=7)
    path = tmp_path / "splits" / "split.json"
    save_split(split, path)
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # atomic: no temporary file left
    data = json.loads(path.read_text())
    assert data["format"] == "reid_utils.split/1" and data["val_query"][0].startswith("train/")
    loaded = load_split(path, index)
    assert loaded.train == split.train and loaded.val_query == split.val_query and loaded.val_gallery == split.val_gallery
    assert loaded.pid_to_label == split.pid_to_label and (loaded.seed, loaded.val_fraction) == (7, 0.2)


def test_load_split_errors(tmp_path):
    index = make_index()
    path = tmp_path / "split.json"
    with pytest.raises(DataError, match="split.json: split file is missing"):
        load_split(path, index)
    path.write_text("{not json")
    with pytest.raises(DataError, match="split.json: not a valid JSON split file"):
        load_split(path, index)
    path.write_text('{"format": "something else"}')
    with pytest.raises(DataError, match="split.json: not a split file"):
        load_split(path, index)
    save_split(make_split(index, 0.2), path)
    with pytest.raises(DataError, match=r"split.json: split does not match the dataset .* 10 identities only in the split"):
        load_split(path, make_index(num_ids=30))
    other = make_index(seed=1)  # same identities, other images
    with pytest.raises(DataError, match=r"split.json: (validation query .* is not a validation image|.*different number of images)"):
        load_split(path, other)


# ---------------------------------------------------------------------------------------------
# PK sampler


def labels_for(counts):
    return [label for label, n in enumerate(counts) for _ in range(n)]


def check_batches(batches, labels, p, k):
    """P identities x K images; an identity with at least K images gives K different ones (a chunk of its
    shuffled images), one with fewer is drawn with replacement."""
    num_images = Counter(labels)
    for batch in batches:
        assert len(batch) == p * k
        counts = Counter(labels[i] for i in batch)
        assert len(counts) == p and set(counts.values()) == {k}
        for label in counts:
            if num_images[label] >= k:
                assert len({i for i in batch if labels[i] == label}) == k, f"repeated images of identity {label}"


def test_pk_batches():
    labels = labels_for([5, 8, 2, 4, 9, 3, 6, 1, 7, 4])
    sampler = PKSampler(labels, p=3, k=4, seed=0)
    batches = list(sampler)
    assert len(batches) == len(sampler) == (1 + 2 + 1 + 1 + 2 + 1 + 1 + 1 + 1 + 1) // 3
    check_batches(batches, labels, 3, 4)
    assert sampler.batch_size == 12
    only_image = labels.index(7)  # identity 7 has one image: its chunk is that image k = 4 times
    assert {batch.count(only_image) for batch in batches} <= {0, 4}


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(1, 12), min_size=4, max_size=30),
    p=st.integers(1, 4),
    k=st.integers(1, 5),
    seed=st.integers(0, 1000),
    epoch=st.integers(0, 5),
)
def test_pk_property(counts, p, k, seed, epoch):
    labels = labels_for(counts)
    sampler = PKSampler(labels, p, k, seed)
    batches = sampler.batches(epoch)
    assert len(batches) == len(sampler)
    check_batches(batches, labels, p, k)


def test_pk_determinism_epochs_and_state():
    labels = labels_for(np.random.default_rng(0).integers(1, 10, 30))
    a, b = PKSampler(labels, 4, 2, seed=5), PKSampler(labels, 4, 2, seed=5)
    first, second = list(a), list(a)  # iterating advances the epoch
    assert first != second and first == list(b)
    b.set_epoch(1)
    assert list(b) == second
    state = a.state_dict()
    resumed = PKSampler(labels, 4, 2, seed=0)
    resumed.load_state_dict(state)
    assert list(resumed) == list(a)  # a resumed run draws the batches of an uninterrupted one
    assert list(PKSampler(labels, 4, 2, seed=6)) != first
    with pytest.raises(ValueError, match="k=2, this sampler has k=3"):
        PKSampler(labels, 4, 3).load_state_dict(state)


def test_pk_distributed_ranks():
    labels = labels_for(np.random.default_rng(1).integers(2, 10, 40))
    world = [PKSampler(labels, 4, 2, seed=3, rank=r, world_size=3) for r in range(3)]
    for epoch in range(3):
        per_rank = [s.batches(epoch) for s in world]
        assert len({len(b) for b in per_rank}) == 1 and len(per_rank[0]) == len(world[0])
        identities = [{labels[i] for batch in b for i in batch} for b in per_rank]
        assert not identities[0] & identities[1] and not identities[0] & identities[2] and not identities[1] & identities[2]
        for b in per_rank:
            check_batches(b, labels, 4, 2)
    assert world[0].batches(0) != world[0].batches(1)
    with pytest.raises(ValueError, match="cannot fill batches of p=8"):
        PKSampler(labels, 8, 2, rank=0, world_size=6)
    with pytest.raises(ValueError, match="rank < world_size"):
        PKSampler(labels, 2, 2, rank=2, world_size=2)


def test_pk_with_dataloader():
    labels = labels_for([3, 4, 5, 6])
    dataset = torch.utils.data.TensorDataset(torch.arange(len(labels)), torch.tensor(labels))
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=PKSampler(labels, 2, 3, seed=0))
    batches = list(loader)
    assert len(batches) == len(loader) and all(batch[1].shape == (6,) for batch in batches)
    check_batches([batch[0].tolist() for batch in batches], labels, 2, 3)
