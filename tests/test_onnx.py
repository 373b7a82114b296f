"""ONNX export (issue 14): every registry model exports, onnxruntime matches PyTorch on real,
varied images (so a graph that ignores its input fails), the batch size is dynamic, and the
documented numpy + PIL preprocessing reproduces PyTorch's features. Skipped without onnx /
onnxruntime (``pip install -e .[onnx]``), except the test of that message itself."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reid_utils.cli import main as cli
from reid_utils.config import TrainConfig
from reid_utils.engine import input_size, load_model_from_checkpoint, save_checkpoint
from reid_utils.engine.runtime import fast_path
from reid_utils.errors import ExportError
from reid_utils.export.onnx import OUTPUT_NAMES, OnnxGraph, check_images, export_onnx, preprocess
from reid_utils.models import MODEL_NAMES, build_model_from_config
from reid_utils.search import extract_images

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def ort():
    pytest.importorskip("onnx")
    return pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    """One untrained checkpoint per model at the smoke settings (ResNet-18 / tiny ViT, 64x32)."""
    folder = tmp_path_factory.mktemp("onnx_checkpoints")
    paths = {}
    for name in MODEL_NAMES:
        torch.manual_seed(0)
        cfg = TrainConfig.from_overrides(model=name, smoke=True)
        paths[name] = save_checkpoint(folder / f"{name}.pt", build_model_from_config(cfg, 4), cfg,
                                      {i: i for i in range(4)})
    return paths


@pytest.fixture(scope="module")
def images() -> list[Path]:
    return check_images(count=6)  # spread over the sample's train/ folder: different people


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_onnx_matches_pytorch(name, checkpoints, images, ort, tmp_path):
    import onnx

    out = tmp_path / f"{name}.onnx"
    result = export_onnx(checkpoints[name], out, images=images)
    assert max(result["max_difference"].values()) <= 1e-4, result["max_difference"]
    print(name, result["max_difference"])

    proto = onnx.load(str(out))
    assert [o.name for o in proto.graph.output] == list(OUTPUT_NAMES)
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert (int(metadata["height"]), int(metadata["width"])) == (64, 32) and metadata["flip_averaged"] == "True"

    # dynamic batch: 6 images at once equal the same images one at a time; every image differs
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    batch = preprocess(images, 64, 32)
    together = session.run(None, {"image": batch})
    alone = [session.run(None, {"image": batch[i : i + 1]}) for i in range(len(batch))]
    for k in range(2):
        assert together[k].shape[0] == len(images)
        np.testing.assert_allclose(together[k], np.concatenate([a[k] for a in alone]), atol=1e-5)
    spread = np.ptp(together[0], axis=0).max()  # how much the embedding changes between people
    assert spread > 1000 * max(result["max_difference"]["embedding"], 1e-7), spread


def test_onnx_features_equal_pytorch_extraction(checkpoints, images, ort, tmp_path):
    """The README's recipe (PIL bilinear resize, / 255, onnxruntime) gives the features that
    search / evaluation compute in PyTorch (eval transform, flip averaging)."""
    out = export_onnx(checkpoints["apr"], tmp_path / "apr.onnx", images=images)["path"]
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    embedding, logits = session.run(None, {"image": preprocess(images, 64, 32)})
    model, ckpt = load_model_from_checkpoint(checkpoints["apr"])
    torch_features = extract_images(model, images, *input_size(ckpt), fast_path("cpu", "fp32"), num_workers=0)
    np.testing.assert_allclose(embedding, torch_features["embeddings"].numpy(), atol=1e-4)
    np.testing.assert_allclose(logits, torch_features["attribute_logits"].numpy(), atol=1e-4)


def test_without_flip_and_with_a_fixed_batch(checkpoints, images, ort, tmp_path):
    import onnx

    out = export_onnx(checkpoints["resnet50"], tmp_path / "plain.onnx", dynamic_batch=False, flip=False,
                      images=images)["path"]
    proto = onnx.load(str(out))
    assert proto.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 1
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    x = preprocess(images[:1], 64, 32)
    model, _ = load_model_from_checkpoint(checkpoints["resnet50"])
    with torch.no_grad():
        single = OnnxGraph(model, flip=False)(torch.from_numpy(x))[0].numpy()
        flipped = OnnxGraph(model, flip=True)(torch.from_numpy(x))[0].numpy()
    got = session.run(["embedding"], {"image": x})[0]
    np.testing.assert_allclose(got, single, atol=1e-4)
    assert np.abs(got - flipped).max() > 1e-3  # really one pass, not the flip average


def test_cli_prints_the_difference_and_fails_above_the_tolerance(checkpoints, ort, tmp_path, capsys):
    out = tmp_path / "cnn.onnx"
    assert cli(["onnx", "--checkpoint", str(checkpoints["convhead"]), "--out", str(out)]) == 0
    stdout = capsys.readouterr().out
    assert "largest difference" in stdout and out.is_file()
    out.unlink()
    assert cli(["onnx", "--checkpoint", str(checkpoints["convhead"]), "--out", str(out), "--tolerance", "1e-12"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "differ by" in err
    assert not out.exists() and not list(tmp_path.glob(".*partial"))  # nothing half-checked left behind


def test_missing_onnx_is_a_one_line_error(checkpoints, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx now raises ImportError
    with pytest.raises(ExportError, match=r"pip install -e \.\[onnx\]"):
        export_onnx(checkpoints["apr"], tmp_path / "x.onnx")
    assert cli(["onnx", "--checkpoint", str(checkpoints["apr"]), "--out", str(tmp_path / "x.onnx")]) == 2
    assert "onnx" in capsys.readouterr().err
