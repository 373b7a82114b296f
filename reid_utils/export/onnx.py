"""ONNX export of a trained model, checked against PyTorch with onnxruntime.

::

    result = export_onnx("runs/apr/best.pt", "apr.onnx")   # writes, then checks on real images
    result["max_difference"]   # {"embedding": 2e-6, "attribute_logits": 1e-6}

The graph (:class:`OnnxGraph`) takes what any image library gives and returns what
:func:`reid_utils.engine.extract` returns, so no PyTorch is needed to use it:

* input ``image``: ``float32 (B, 3, H, W)``, RGB, values in ``[0, 1]`` (pixels / 255), resized
  to the checkpoint's ``H x W`` (bilinear). ImageNet normalisation (mean ``0.485 0.456 0.406``,
  std ``0.229 0.224 0.225``) happens *inside* the graph: a forgotten or doubled normalisation
  is the usual reason for "the same output for every image".
* outputs ``embedding`` ``(B, D)`` and ``attribute_logits`` ``(B, A)`` (41 groups or 30
  binary logits; the form and the input size are in the file's metadata), by those names.
* flip averaging is in the graph by default (``flip=True``): the batch and its mirror image
  run together and their outputs are averaged, exactly as evaluation, export and search do,
  so ONNX features can be compared with features extracted in PyTorch. ``flip=False``
  halves the cost.
* the batch size is dynamic (``dynamic_batch=False`` fixes it to 1).

After writing, :func:`check_onnx` runs the file with onnxruntime on a few real images (varied
people, so a graph that ignores its input is caught) and compares both outputs with PyTorch;
a largest absolute difference above ``tolerance`` (1e-4) raises ExportError.

onnx and onnxruntime are optional (``pip install -e .[onnx]``), imported only here. The
legacy TorchScript exporter is used (``dynamo=False``): the ``torch.export`` one also needs
``onnxscript``. Every model of the registry exports, la_transformer included.
"""
from __future__ import annotations

import inspect
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..data import IMAGENET_MEAN, IMAGENET_STD, is_image_file, read_image
from ..engine.checkpoint import input_size, load_model_from_checkpoint
from ..errors import ExportError
from ..io import atomic_open
from ..synthetic import ensure_sample

OUTPUT_NAMES = ("embedding", "attribute_logits")
INPUT_NAME = "image"
OPSET = 17
TOLERANCE = 1e-4
INSTALL_HINT = "pip install -e .[onnx]  (or: pip install onnx onnxruntime)"


def require(module: str):
    """Import ``onnx`` / ``onnxruntime``, or raise ExportError saying how to install them."""
    try:
        return __import__(module)
    except ImportError:
        raise ExportError(f"ONNX export needs the optional package {module!r}: {INSTALL_HINT}") from None


class OnnxGraph(nn.Module):
    """What is exported: ``[0, 1]`` RGB images -> normalisation -> model (+ flip average).

    ``forward(image (B, 3, H, W)) -> (embedding (B, D), attribute_logits (B, A))``.
    """

    def __init__(self, model: nn.Module, flip: bool = True):
        super().__init__()
        self.model = model.eval()
        self.flip = flip
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (image - self.mean) / self.std  # (B, 3, H, W)
        if self.flip:
            x = torch.cat([x, x.flip(3)], dim=0)  # (2B, 3, H, W): images, then their mirrors
        out = self.model(x)
        embedding, logits = out["embedding"], out["attribute_logits"]  # (B or 2B, D), (B or 2B, A)
        if self.flip:
            embedding = embedding.reshape(2, -1, embedding.shape[1]).mean(dim=0)  # (B, D)
            logits = logits.reshape(2, -1, logits.shape[1]).mean(dim=0)  # (B, A)
        return embedding, logits


def preprocess(paths: Sequence[str | os.PathLike], height: int, width: int) -> np.ndarray:
    """Images -> the graph's input: ``float32 (B, 3, height, width)``, RGB in ``[0, 1]``.

    numpy and PIL only (what the README's onnxruntime snippet does): RGB, bilinear resize,
    ``/ 255``, channels first.
    """
    arrays = [np.asarray(read_image(p).resize((width, height), Image.BILINEAR), dtype=np.float32) / 255.0
              for p in paths]
    return np.stack(arrays).transpose(0, 3, 1, 2).copy()  # (B, H, W, 3) -> (B, 3, H, W)


def check_images(images: str | os.PathLike | Sequence[str | os.PathLike] | None = None, count: int = 8) -> list[Path]:
    """``count`` images for the check: from a folder (spread over its sorted files), a list, or
    by default the bundled sample's ``train/`` folder (different people, different cameras)."""
    if images is None:
        images = ensure_sample() / "train"
    if isinstance(images, (str, os.PathLike)):
        folder = Path(images)
        if not folder.is_dir():
            raise ExportError(f"{folder}: check-image folder does not exist")
        files = sorted(p for p in folder.rglob("*") if p.is_file() and is_image_file(p))
        if not files:
            raise ExportError(f"{folder}: no image files to check the ONNX model on")
        step = max(1, len(files) // count)
        return files[::step][:count]
    return [Path(p) for p in images]


def _export(graph: nn.Module, example: torch.Tensor, path: Path, dynamic_batch: bool, opset: int) -> None:
    options = {}
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        options["dynamo"] = False  # the TorchScript exporter: no onnxscript needed
    if dynamic_batch:
        options["dynamic_axes"] = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():  # the exporter's deprecation notice and tracer remarks
        warnings.simplefilter("ignore")
        torch.onnx.export(graph, (example,), str(path), input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                          opset_version=opset, do_constant_folding=True, **options)


def export_onnx(
    checkpoint: str | os.PathLike,
    out: str | os.PathLike,
    dynamic_batch: bool = True,
    flip: bool = True,
    images: str | os.PathLike | Sequence[str | os.PathLike] | None = None,
    opset: int = OPSET,
    tolerance: float = TOLERANCE,
) -> dict:
    """Write ``out`` (an ONNX file) from a checkpoint, then :func:`check_onnx` it.

    Args:
        checkpoint: a ``.pt`` file written by training.
        out: the ``.onnx`` file to write (replaced atomically, after the check passed).
        dynamic_batch: any batch size (default); False fixes it to 1.
        flip: flip averaging inside the graph (see the module docstring).
        images: images for the check (a folder or a list; default: the bundled sample).
        tolerance: largest allowed absolute difference between onnxruntime and PyTorch.
    Returns:
        ``{"path": Path, "max_difference": {"embedding": float, "attribute_logits": float},
        "num_images": int, "height": int, "width": int, "model": str}``.
    """
    onnx = require("onnx")
    require("onnxruntime")
    out = Path(out)
    model, ckpt = load_model_from_checkpoint(checkpoint)
    height, width = input_size(ckpt)
    graph = OnnxGraph(model.float(), flip).eval()
    paths = check_images(images)
    example = torch.from_numpy(preprocess(paths[:2] if dynamic_batch else paths[:1], height, width))
    partial = out.with_name(f".{out.name}.partial")
    try:
        # grad mode on: under no_grad nn.MultiheadAttention takes a fused fast path
        # (aten::_native_multi_head_attention) that has no ONNX form
        _export(graph, example, partial, dynamic_batch, opset)
        proto = onnx.load(str(partial))
        metadata = {
            "producer": "reid_utils",
            "model": str(ckpt.get("model_name", "")),
            "height": str(height),
            "width": str(width),
            "input": "float32 (B, 3, H, W), RGB in [0, 1] (pixels / 255), bilinear resize to H x W",
            "normalisation": json.dumps({"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "in_graph": True}),
            "flip_averaged": str(flip),
            "attribute_form": str(ckpt["attribute_form"]),
            "attribute_schema": json.dumps(ckpt.get("attribute_schema", {})),
        }
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        differences = check_onnx(proto.SerializeToString(), graph, paths, height, width, dynamic_batch,
                                 tolerance, name=str(out))
        with atomic_open(out, "wb") as f:
            f.write(proto.SerializeToString())
    finally:
        partial.unlink(missing_ok=True)
    return {"path": out, "max_difference": differences, "num_images": len(paths), "height": height,
            "width": width, "model": str(ckpt.get("model_name", ""))}


def check_onnx(
    onnx_model: str | os.PathLike | bytes,
    graph: nn.Module,
    images: Sequence[str | os.PathLike],
    height: int,
    width: int,
    dynamic_batch: bool = True,
    tolerance: float = TOLERANCE,
    name: str = "model.onnx",
) -> dict[str, float]:
    """Run ``onnx_model`` (a path or the serialized bytes) with onnxruntime on ``images`` and
    compare with ``graph`` (an :class:`OnnxGraph`) in PyTorch, fp32 on the CPU.

    Returns the largest absolute difference per output. Raises ExportError when one exceeds
    ``tolerance``, or when every image gives the same embedding (a graph that ignores its
    input).
    """
    ort = require("onnxruntime")
    source = onnx_model if isinstance(onnx_model, bytes) else str(onnx_model)
    session = ort.InferenceSession(source, providers=["CPUExecutionProvider"])
    batch = preprocess(images, height, width)  # (N, 3, H, W)
    chunks = [batch] if dynamic_batch else [batch[i : i + 1] for i in range(len(batch))]
    got = [np.concatenate(parts) for parts in zip(*(session.run(list(OUTPUT_NAMES), {INPUT_NAME: c}) for c in chunks))]
    with torch.no_grad():
        expected = [t.numpy() for t in graph.cpu().float().eval()(torch.from_numpy(batch))]
    differences = {}
    for output, ours, theirs in zip(OUTPUT_NAMES, got, expected):
        if ours.shape != theirs.shape:
            raise ExportError(f"{name}: output {output!r} has shape {ours.shape} in onnxruntime, {theirs.shape} in PyTorch")
        differences[output] = float(np.abs(ours - theirs).max())
    worst = max(differences, key=differences.get)
    if differences[worst] > tolerance:
        raise ExportError(f"{name}: onnxruntime and PyTorch differ by {differences[worst]:.3g} on {worst!r} "
                          f"(largest allowed {tolerance:g}) over {len(images)} images")
    if len(images) > 1 and np.ptp(got[0], axis=0).max() == 0:
        raise ExportError(f"{name}: onnxruntime gives the same embedding for all {len(images)} images; "
                          "the graph ignores its input")
    return differences
