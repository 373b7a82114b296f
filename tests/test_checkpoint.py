"""Checkpoints: round trip for every model, clear errors for bad files and mismatched configs."""
from __future__ import annotations

import pickle
import random

import numpy as np
import pytest
import torch

from reid_utils.config import MODEL_NAMES, TrainConfig
from reid_utils.engine.checkpoint import (
    CHECKPOINT_FORMAT,
    check_compatible,
    load_checkpoint,
    load_model_from_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from reid_utils.errors import CheckpointError
from reid_utils.models import build_model_from_config

NUM_IDS = 5
PID_TO_LABEL = {10 + i: i for i in range(NUM_IDS)}


#: tiny models and batches: see the ``one_thread`` fixture in conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_config(model: str = "apr", **overrides) -> TrainConfig:
    sizes = {"vit_embed_dim": 32, "vit_depth": 1, "vit_heads": 2} if model == "la_transformer" else {}
    return TrainConfig.from_overrides(model=model, height=64, width=32, **{**sizes, **overrides})


def _perturb(model: torch.nn.Module) -> None:
    """Make the weights (and BN statistics) differ from a fresh build, so loading matters."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for tensor in model.state_dict().values():  # parameters and persistent buffers
            if tensor.is_floating_point():
                tensor.add_(0.01 * torch.randn(tensor.shape, generator=generator))


#: The three ResNet-head variants share their code path with apr / cbam; they run in the slow set.
_ROUND_TRIP = [
    pytest.param(name, marks=pytest.mark.slow) if name in ("resnet50", "convhead", "self_attention") else name
    for name in MODEL_NAMES
]


@pytest.mark.parametrize("model_name", _ROUND_TRIP)
def test_round_trip_rebuilds_identical_model(tmp_path, model_name):
    torch.manual_seed(0)
    cfg = tiny_config(model_name)
    model = build_model_from_config(cfg, NUM_IDS)
    _perturb(model)
    model.eval()
    path = save_checkpoint(tmp_path / "m.pt", model, cfg, PID_TO_LABEL, epoch=3, history={"epoch": [1, 2, 3]})
    torch.manual_seed(123)  # the rebuild must not depend on the RNG
    rebuilt, ckpt = load_model_from_checkpoint(path)
    assert not rebuilt.training
    assert ckpt["format"] == CHECKPOINT_FORMAT and ckpt["epoch"] == 3 and ckpt["model_name"] == model_name
    assert ckpt["pid_to_label"] == PID_TO_LABEL and ckpt["num_ids"] == NUM_IDS
    assert ckpt["attribute_form"] == model.attribute_form == rebuilt.attribute_form
    assert ckpt["attribute_schema"]["form"] == model.attribute_form and len(ckpt["attribute_schema"]["groups"]) == 12
    x = torch.randn(2, 3, 64, 32)
    with torch.no_grad():
        a, b = model(x), rebuilt(x)
    assert torch.equal(a["embedding"], b["embedding"])
    assert torch.equal(a["attribute_logits"], b["attribute_logits"])


def test_checkpoint_is_weights_only_safe(tmp_path):
    cfg = tiny_config()
    model = build_model_from_config(cfg, NUM_IDS)
    optimizer = torch.optim.AdamW(model.parameters())
    save_checkpoint(tmp_path / "m.pt", model, cfg, PID_TO_LABEL, history={"mAP": [np.float64(0.5)]},
                    optimizer=optimizer.state_dict(), rng=rng_state(), early_stopping={"best": np.float32(1.0)})
    ckpt = torch.load(tmp_path / "m.pt", weights_only=True)  # no arbitrary code on load
    assert ckpt["history"]["mAP"] == [0.5]


def test_rng_state_round_trip():
    state = rng_state()
    expected = (random.random(), np.random.rand(), torch.rand(1))
    set_rng_state(state)
    assert (random.random(), np.random.rand()) == expected[:2] and torch.equal(torch.rand(1), expected[2])


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nothing\.pt: checkpoint file is missing"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_corrupt_and_truncated_files(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 10)
    with pytest.raises(CheckpointError, match=r"garbage\.pt: cannot read the checkpoint"):
        load_checkpoint(garbage)
    cfg = tiny_config()
    good = save_checkpoint(tmp_path / "good.pt", build_model_from_config(cfg, NUM_IDS), cfg, PID_TO_LABEL)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.pt: cannot read the checkpoint"):
        load_checkpoint(truncated)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.pt"):
        load_checkpoint(empty)


class _Evil:
    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_foreign_files_are_rejected(tmp_path):
    other = tmp_path / "other.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}}, other)
    with pytest.raises(CheckpointError, match=r"other\.pt: not a reid_utils checkpoint"):
        load_checkpoint(other)
    plain = tmp_path / "plain.pt"
    torch.save(torch.zeros(3), plain)
    with pytest.raises(CheckpointError, match="not a reid_utils checkpoint"):
        load_checkpoint(plain)
    evil = tmp_path / "evil.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "payload": _Evil()}, evil)
    with pytest.raises(CheckpointError, match=r"evil\.pt: cannot read the checkpoint"):
        load_checkpoint(evil)
    pickled = tmp_path / "pickled.pt"
    pickled.write_bytes(pickle.dumps({"format": CHECKPOINT_FORMAT}))
    with pytest.raises(CheckpointError, match="pickled.pt"):
        load_checkpoint(pickled)


def test_incomplete_checkpoint(tmp_path):
    path = tmp_path / "incomplete.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "config": {}}, path)
    with pytest.raises(CheckpointError, match="missing model, num_ids, attribute_form"):
        load_checkpoint(path)


def test_mismatched_config_says_what_differs(tmp_path):
    cfg = tiny_config()
    path = save_checkpoint(tmp_path / "apr.pt", build_model_from_config(cfg, NUM_IDS), cfg, PID_TO_LABEL)
    ckpt = load_checkpoint(path)
    check_compatible(ckpt, cfg.replace(lr=0.5, num_epochs=99), NUM_IDS, path)  # hyperparameters may change
    cases = [
        (cfg.replace(depth=34), NUM_IDS, "depth 18 vs 34"),
        (cfg.replace(model="resnet50"), NUM_IDS, "model 'apr' vs 'resnet50'"),
        (cfg, NUM_IDS + 1, "num_ids 5 vs 6"),
        (cfg.replace(height=128, width=64), NUM_IDS, "input size 64x32 vs 128x64"),
        (cfg.replace(attribute_form="binary"), NUM_IDS, "attribute form 'groups' vs 'binary'"),
        (cfg.replace(id_loss="amsoftmax"), NUM_IDS, "classifier 'linear' vs 'cosine'"),
    ]
    for other, num_ids, fragment in cases:
        with pytest.raises(CheckpointError) as info:
            check_compatible(ckpt, other, num_ids, path)
        assert fragment in str(info.value) and "apr.pt" in str(info.value)


def test_weights_that_do_not_fit_give_checkpoint_error(tmp_path):
    cfg = tiny_config()
    path = save_checkpoint(tmp_path / "apr.pt", build_model_from_config(cfg, NUM_IDS), cfg, PID_TO_LABEL)
    ckpt = torch.load(path, weights_only=True)
    ckpt["config"]["depth"] = 34  # a hand-edited file: config and weights disagree
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="apr.pt: the checkpoint is damaged"):  # the digest notices first
        load_model_from_checkpoint(path)
    del ckpt["digest"]  # as written before digests existed: the rebuilt model notices
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="do not fit model 'apr'"):
        load_model_from_checkpoint(path)


def test_gpu_checkpoint_loads_on_cpu(tmp_path, monkeypatch):
    """A checkpoint whose tensors were saved from a GPU loads on the CPU (map_location="cpu").

    Without a GPU, the file is written with every storage tagged ``cuda:0`` (what torch.save
    records for GPU tensors), which plain ``torch.load`` cannot open on a CPU-only machine.
    """
    cfg = tiny_config()
    model = build_model_from_config(cfg, NUM_IDS)
    path = tmp_path / "gpu.pt"
    if torch.cuda.is_available():
        save_checkpoint(path, model.to("cuda"), cfg, PID_TO_LABEL)
        ckpt = torch.load(path, weights_only=True)  # tensors come back on the GPU by default ...
        ckpt["model"] = {k: v.to("cuda") for k, v in ckpt["model"].items()}
        torch.save(ckpt, path)
    else:
        ckpt = torch.load(save_checkpoint(tmp_path / "cpu.pt", model, cfg, PID_TO_LABEL), weights_only=True)
        monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ckpt, path)
        monkeypatch.undo()
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)  # really a "GPU" file
    rebuilt, ckpt = load_model_from_checkpoint(path)  # ... and on the CPU here
    assert all(p.device.type == "cpu" for p in rebuilt.parameters())
    assert all(v.device.type == "cpu" for v in load_checkpoint(path)["model"].values())
