"""Engine: the fast path, batched extraction, every model learning, and a short apr training
on the synthetic sample that must beat chance and the majority-class baseline."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reid_utils.config import MODEL_NAMES, TrainConfig
from reid_utils.data import ReidDataset, build_transforms, load_dataset, make_split
from reid_utils.engine import best_epoch, evaluate, main, runtime, train_one_epoch
from reid_utils.engine.checkpoint import load_checkpoint, load_model_from_checkpoint
from reid_utils.engine.inference import CachedImages, extract
from reid_utils.engine.optim import build_optimizer
from reid_utils.engine.runtime import _cpuinfo_flags, cpu_supports_bf16, fast_path, select_device
from reid_utils.engine.trainer import make_losses
from reid_utils.errors import ConfigError
from reid_utils.models import build_model_from_config

TIMING_KEYS = ("train_images_per_second", "epoch_seconds")


#: tiny models and batches: see the ``one_thread`` fixture in conftest.py
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------------------------
# Runtime


def test_select_device_and_forcing():
    assert select_device("cpu").type == "cpu"
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            select_device("cuda")
    with pytest.raises(ConfigError, match="not one of"):
        select_device("tpu")


@pytest.mark.parametrize("cap, bf16", [({}, True), ({"ONEDNN_MAX_CPU_ISA": "avx2"}, False),
                                        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_BF16"}, True),
                                        ({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI"}, False),
                                        ({"ATEN_CPU_CAPABILITY": "avx2"}, False),
                                        ({"ATEN_CPU_CAPABILITY": "avx512"}, True)])
def test_a_kernel_cap_below_bf16_turns_cpu_bf16_off(monkeypatch, cap, bf16):
    """A bf16 CPU whose kernels are capped at AVX2 (the notebook tests do it) emulates bf16,
    several times slower than fp32: the fast path must then pick fp32."""
    monkeypatch.setattr(runtime, "_cpuinfo_flags", lambda: {"avx2", "avx512f", "avx512_bf16"})
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    for name, value in cap.items():
        monkeypatch.setenv(name, value)
    assert cpu_supports_bf16() is bf16
    assert fast_path("cpu").autocast_dtype == (torch.bfloat16 if bf16 else None)
    if not bf16:
        assert "caps the kernels below bf16" in runtime.describe_precision("cpu")


def test_cpu_fast_path_follows_the_cpu_flags(monkeypatch):
    for name in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY"):
        monkeypatch.delenv(name, raising=False)
    flags = _cpuinfo_flags()
    if flags:
        assert cpu_supports_bf16() == bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    auto = fast_path("cpu")
    assert auto.channels_last and auto.autocast_dtype == (torch.bfloat16 if cpu_supports_bf16() else None)
    assert not auto.grad_scaler  # bf16 needs no loss scaling
    plain = fast_path("cpu", "fp32")
    assert plain.autocast_dtype is None and not plain.channels_last and not plain.compile
    assert plain.describe().startswith("cpu | fp32")
    assert "bf16 autocast" in fast_path("cpu", "bf16").describe()
    with pytest.raises(ConfigError, match="fp16"):
        fast_path("cpu", "fp16")


# ---------------------------------------------------------------------------------------------
# Inference


@pytest.fixture(scope="module")
def tiny_split(tiny_course_root):
    return make_split(load_dataset(tiny_course_root), val_fraction=0.25, seed=0)


@pytest.fixture(scope="module")
def eval_model():
    torch.manual_seed(0)
    cfg = TrainConfig.from_overrides(height=128, width=64)
    return build_model_from_config(cfg, num_ids=4).eval()


def test_extract_is_batched_and_flip_averaged(eval_model, tiny_split):
    records = (tiny_split.val_query + tiny_split.val_gallery)[:10]
    fp = fast_path("cpu", "fp32")
    full = extract(eval_model, records, fp, batch_size=7, flip=True, num_workers=0)
    n = len(records)
    assert full["embeddings"].shape == (n, eval_model.embedding_dim) and full["embeddings"].dtype == torch.float32
    assert full["attribute_logits"].shape == (n, 41)
    assert full["paths"] == [str(r.path) for r in records]
    assert full["pids"].tolist() == [r.pid for r in records] and full["camids"].tolist() == [r.camid for r in records]
    # the flip average equals two separate passes averaged
    dataset = ReidDataset(records, build_transforms(128, 64, train=False))
    images = torch.stack([dataset[i]["image"] for i in range(n)])
    with torch.no_grad():
        plain, mirrored = eval_model(images), eval_model(images.flip(3))
    expected = (plain["embedding"] + mirrored["embedding"]) / 2
    torch.testing.assert_close(full["embeddings"], expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(full["attribute_logits"], (plain["attribute_logits"] + mirrored["attribute_logits"]) / 2,
                               rtol=1e-4, atol=1e-4)
    # batch size does not matter; decoded-image cache gives the same features at the native size
    cached = extract(eval_model, CachedImages.from_records(records, 128, 64), fp, batch_size=64)
    torch.testing.assert_close(cached["embeddings"], full["embeddings"], rtol=1e-4, atol=1e-4)
    no_flip = extract(eval_model, records, fp, flip=False, num_workers=0)
    torch.testing.assert_close(no_flip["embeddings"], plain["embedding"], rtol=1e-4, atol=1e-4)
    assert not eval_model.training


def test_extract_fast_path_is_close_to_fp32(eval_model, tiny_split):
    records = tiny_split.val_query
    fp32 = extract(eval_model, records, fast_path("cpu", "fp32"), num_workers=0)
    fast = extract(eval_model, records, fast_path("cpu", "bf16"), num_workers=0)
    cos = torch.nn.functional.cosine_similarity(fp32["embeddings"], fast["embeddings"], dim=1)
    assert cos.min() > 0.98  # bf16 keeps 8 mantissa bits: features agree in direction
    eval_model.to(memory_format=torch.contiguous_format)


# ---------------------------------------------------------------------------------------------
# Every model learns (a few steps on one fixed batch)


def _fixed_batch(split, height, width, num_ids=4, per_id=2):
    dataset = ReidDataset(split.train, build_transforms(height, width, train=False), split.pid_to_label)
    chosen, seen = [], {}
    for i, label in enumerate(dataset.labels):
        if label < num_ids and seen.get(label, 0) < per_id:
            chosen.append(i)
            seen[label] = seen.get(label, 0) + 1
    items = [dataset[i] for i in chosen]
    return {
        "image": torch.stack([it["image"] for it in items]),
        "pid": torch.tensor([it["pid"] for it in items]),
        "attributes": torch.stack([it["attributes"] for it in items]),
    }


@pytest.mark.parametrize("model_name", [m for m in MODEL_NAMES if m != "apr"])
def test_every_model_decreases_its_loss(model_name, tiny_split):
    torch.manual_seed(0)
    sizes = {"vit_embed_dim": 48, "vit_depth": 2, "vit_heads": 2} if model_name == "la_transformer" else {}
    cfg = TrainConfig.from_overrides(model=model_name, height=64, width=32, dropout=0.0, lr=1e-3,
                                     warmup_epochs=0, **sizes)
    model = build_model_from_config(cfg, num_ids=len(tiny_split.pid_to_label))
    loss_fn, _ = make_losses(cfg, model, tiny_split.train)
    optimizer = build_optimizer(cfg, [model, loss_fn], "adamw")
    batch = _fixed_batch(tiny_split, 64, 32)
    fp = fast_path("cpu", "fp32")
    first = train_one_epoch(model, [batch], loss_fn, optimizer, fp, 0, progress=False)["loss"]
    train_one_epoch(model, [batch] * 6, loss_fn, optimizer, fp, 1, progress=False)
    last = train_one_epoch(model, [batch], loss_fn, optimizer, fp, 2, progress=False)["loss"]
    assert math.isfinite(first) and last < 0.8 * first, (first, last)
    model.eval()
    with torch.no_grad():
        out = model(batch["image"])
    assert out["embedding"].shape == (len(batch["pid"]), model.embedding_dim)
    assert out["attribute_logits"].shape == (len(batch["pid"]), 41 if model.attribute_form == "groups" else 30)
    assert torch.isfinite(out["embedding"]).all() and torch.isfinite(out["attribute_logits"]).all()


# ---------------------------------------------------------------------------------------------
# apr on the synthetic sample


@pytest.fixture(scope="module")
def apr_sample(tmp_path_factory):
    """80 synthetic identities x 4 images: 60 to train on, 20 for validation (45 queries)."""
    from reid_utils.synthetic.generator import write_sample

    return write_sample(tmp_path_factory.mktemp("apr") / "sample", num_ids=80, seed=1, layout="course", images_per_id=4)


def _chance_map(q_pids, g_pids, q_camids, g_camids, trials=200) -> float:
    """Expected market-protocol mAP of a random ranking (Monte Carlo)."""
    from reid_utils.metrics import evaluate_reid

    rng = np.random.default_rng(0)
    return float(np.mean([
        evaluate_reid(rng.random((len(q_pids), len(g_pids))), q_pids, g_pids, q_camids, g_camids)["mAP"]
        for _ in range(trials)
    ]))


@pytest.mark.slow
def test_apr_default_learns_above_chance_and_majority(apr_sample, tmp_path):
    """Train the apr defaults (ResNet-18 from scratch; 64x32 and 12 short epochs to stay fast).

    Margins and why (observed here: mAP 0.45 vs chance 0.125; attributes 0.728 vs majority 0.675):

    * Re-ID: validation mAP must exceed the mAP of a random ranking (Monte Carlo on the same
      query/gallery, about 0.12 for these 20 identities) by 0.2 absolute. With 45 queries the
      standard error of mAP is about 0.04, so 0.2 is five standard errors.
    * Attributes: the mean accuracy over the 12 groups must beat uniform guessing
      (mean of 1/classes, 0.41) by 0.2, and the majority-class baseline (always the most frequent
      training class per group: 0.675 here, high because bags, hats etc. are rare) by 0.03.
      A predictor that ignores the image cannot beat the majority baseline at all; 0.03 on the
      mean of 12 groups is, e.g., +0.18 on each colour group. The colour groups, the most visible
      attributes of the synthetic pedestrians, must each beat their majority class by 0.1
      (observed: +0.15 on downcolour, whose majority class covers 35% of the images).
    Training is seeded and in fp32, so the outcome does not depend on the CPU's bf16 support.
    """
    from reid_utils.metrics import majority_baseline
    from reid_utils.schema import GROUPS

    out = tmp_path / "run"
    history = main(data_root=str(apr_sample), out_dir=str(out), height=64, width=32, num_epochs=12, batch_p=8,
                   batch_k=4, val_fraction=0.25, warmup_epochs=1, precision="fp32", num_threads=1, progress=False)
    split = make_split(load_dataset(apr_sample), val_fraction=0.25, seed=0)
    q, g = split.val_query, split.val_gallery
    chance = _chance_map(np.array([r.pid for r in q]), np.array([r.pid for r in g]),
                         np.array([r.camid for r in q]), np.array([r.camid for r in g]))
    train_groups = np.stack([r.attributes for r in split.train])
    val_groups = np.stack([r.attributes for r in q + g])
    majority = majority_baseline(train_groups, val_groups)
    uniform = float(np.mean([1 / group.num_classes for group in GROUPS]))
    best = best_epoch(history, "score")
    assert best["mAP"] > chance + 0.2, (best["mAP"], chance)
    assert best["attribute_accuracy"] > max(majority + 0.03, uniform + 0.2), (best["attribute_accuracy"], majority)
    for g_index, name in ((10, "upcolour"), (11, "downcolour")):
        group_majority = np.mean(val_groups[:, g_index] == np.bincount(train_groups[:, g_index]).argmax())
        assert best[f"attribute_accuracy_{name}"] > group_majority + 0.1, (name, best[f"attribute_accuracy_{name}"])
    assert history["train_loss"][-1] < history["train_loss"][0]

    # files: best.pt (reloadable alone), last.pt, history.json, curves.png, split.json
    for name in ("best.pt", "last.pt", "history.json", "curves.png", "split.json"):
        assert (out / name).is_file(), name
    assert json.loads((out / "history.json").read_text())["epoch"] == list(range(1, 13))
    model, ckpt = load_model_from_checkpoint(out / "best.pt")
    assert ckpt["epoch"] == best["epoch"] and "optimizer" not in ckpt
    assert "optimizer" in load_checkpoint(out / "last.pt")
    again = evaluate(model, split, fast_path("cpu", "fp32"), val_images=CachedImages.from_records(q + g, 64, 32))
    assert abs(again["mAP"] - best["mAP"]) < 1e-6  # the same weights on the same split


def test_smoke_mode_is_deterministic(tiny_course_root, tmp_path):
    runs = [main(smoke=True, data_root=str(tiny_course_root), out_dir=str(tmp_path / f"run{i}")) for i in range(2)]
    for key in runs[0]:
        if key not in TIMING_KEYS:
            np.testing.assert_array_equal(runs[0][key], runs[1][key], err_msg=key)
    assert runs[0]["epoch"] == [1] and len(runs[0]["mAP"]) == 1


def test_plot_history_writes_png(tmp_path):
    from reid_utils.visualize import plot_history

    history = {"epoch": [1, 2, 3], "train_loss": [3.0, 2.0, 1.5], "train_id_loss": [2.0, 1.5, 1.0],
               "train_attribute_loss": [0.7, 0.6, 0.5], "train_triplet_loss": [0.3, 0.2, 0.1],
               "train_center_loss": [0.0, 0.0, 0.0], "val_loss": [0.8, 0.7, 0.7], "mAP": [0.2, 0.4, 0.5],
               "rank1": [0.3, 0.5, 0.6], "attribute_accuracy": [0.6, 0.7, 0.75],
               "attribute_accuracy_age": [0.5, 0.6, 0.6], "lr": [1e-4, 1e-3, 5e-4]}
    fig = plot_history(history, path=tmp_path / "curves.png", title="test")
    assert (tmp_path / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(fig.axes) == 4


def test_best_epoch_picks_by_metric():
    history = {"epoch": [1, 2, 3], "mAP": [0.1, 0.5, 0.3], "val_loss": [1.0, 0.9, 0.5]}
    assert best_epoch(history, "mAP")["epoch"] == 2
    assert best_epoch(history, "val_loss")["epoch"] == 3
