"""Batched feature extraction: images -> embeddings and attribute logits.

::

    feats = extract(model, split.val_query, fast_path(device), height=128, width=64)
    feats["embeddings"]        # (N, D) float32, flip-averaged
    feats["attribute_logits"]  # (N, A) float32, flip-averaged (A = 41 groups / 30 binary)
    feats["pids"], feats["camids"]  # (N,) int64 numpy arrays (original ids, -2/-1 when unknown)
    feats["paths"]             # list of N str

Everything is batched end to end: the DataLoader decodes and collates in workers, each batch
goes to the device once, and flip averaging runs the batch and its mirror image together as one
``(2B, 3, H, W)`` forward pass. The loop does no per-image Python work.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..data import ReidDataset, build_transforms, load_image_tensor, normalize_batch
from .runtime import FastPath, autocast, default_num_workers, fast_path as make_fast_path, unwrap_model


@dataclass
class CachedImages:
    """Decoded images kept in RAM for repeated extraction (e.g. validation every epoch).

    ``images``: ``uint8 (N, 3, H, W)`` already at the model's input size; extraction then only
    normalises whole batches (no decoding, no per-image transforms, no DataLoader).
    """

    images: torch.Tensor  # (N, 3, H, W) uint8
    pids: np.ndarray  # (N,) int64 original person ids
    camids: np.ndarray  # (N,) int64
    paths: list[str]

    @classmethod
    def from_records(cls, records, height: int = 128, width: int = 64, progress: bool = False) -> "CachedImages":
        records = list(records)
        if not records:
            raise ValueError("CachedImages: no records")
        return cls(
            images=load_image_tensor(records, image_size=(height, width), progress=progress),
            pids=np.array([r.pid for r in records], dtype=np.int64),
            camids=np.array([r.camid for r in records], dtype=np.int64),
            paths=[str(r.path) for r in records],
        )

    def __len__(self) -> int:
        return len(self.paths)


def make_eval_loader(
    source,
    batch_size: int = 256,
    height: int = 128,
    width: int = 64,
    num_workers: int | None = None,
    cache: bool = False,
    device: torch.device | str = "cpu",
    persistent_workers: bool = False,
) -> DataLoader:
    """A DataLoader with the eval transforms over ``source``.

    ``source``: a list of :class:`~reid_utils.data.Record`, a Dataset whose items are
    :class:`~reid_utils.data.ReidDataset` dicts, or a ready DataLoader (returned as is).
    Records keep their original ``pid`` (no label mapping). ``num_workers=None`` picks a
    default for the device; ``cache`` keeps decoded images in RAM (repeated evaluations).
    """
    if isinstance(source, DataLoader):
        return source
    if isinstance(source, Dataset):
        dataset = source
    else:
        dataset = ReidDataset(list(source), build_transforms(height, width, train=False), cache=cache)
    device = torch.device(device)
    workers = default_num_workers(device) if num_workers is None else num_workers
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=persistent_workers and workers > 0,
        prefetch_factor=4 if workers > 0 else None,
    )


@torch.no_grad()
def forward_batch(model: nn.Module, images: torch.Tensor, fp: FastPath, flip: bool = True) -> dict[str, torch.Tensor]:
    """Eval-mode outputs for one batch ``(B, 3, H, W)``, optionally flip-averaged.

    Returns ``{"embedding": (B, D), "attribute_logits": (B, A)}`` as float32 on the device
    (``attribute_logits`` absent if the model has none). With ``flip`` the batch and its
    horizontal mirror go through the model together as ``(2B, 3, H, W)`` and the two halves
    are averaged (embeddings and attribute logits alike).
    """
    images = images.to(fp.device, non_blocking=True)
    batch = images.shape[0]
    if flip:
        images = torch.cat([images, images.flip(dims=[3])], dim=0)  # (2B, 3, H, W)
    images = images.contiguous(memory_format=fp.memory_format)
    with autocast(fp):
        outputs = model(images)
    result = {}
    for key in ("embedding", "attribute_logits"):
        value = outputs.get(key)
        if value is None:
            continue
        value = value.float()
        if flip:
            value = (value[:batch] + value[batch:]) / 2  # (B, *)
        result[key] = value
    return result


@torch.no_grad()
def extract(
    model: nn.Module,
    source,
    fast_path: FastPath | None = None,
    batch_size: int = 256,
    flip: bool = True,
    height: int = 128,
    width: int = 64,
    num_workers: int | None = None,
    cache: bool = False,
    progress: bool = False,
) -> dict:
    """Embeddings and attribute logits for every image of ``source``, in order.

    Args:
        model: any registry model (DDP / compiled wrappers are unwrapped). It is moved to the
            fast path's device and memory format (in place, as ``Module.to`` does), put in
            eval mode for the call, and its previous mode is restored afterwards.
        source: a list of Records, a :class:`CachedImages`, a ReidDataset (or any Dataset
            with the same item dicts), or a DataLoader yielding such batches.
        fast_path: device and precision (None: the auto fast path on the model's device).
        batch_size: images per forward pass (doubled internally when ``flip``).
        flip: average each image's outputs with those of its horizontal mirror.
        height, width: input size for the eval transforms (ignored for Datasets / loaders).
        num_workers: DataLoader workers (None: a default for the device).
        cache: decode the records into a :class:`CachedImages` first (worth it when the same
            model runs twice over them, e.g. with and without flip; for repeated calls build
            the CachedImages once and pass it as ``source``).
        progress: show a tqdm bar on stderr.

    Returns:
        ``{"embeddings": (N, D) float32 tensor, "attribute_logits": (N, A) float32 tensor or
        None, "pids": (N,) int64 ndarray, "camids": (N,) int64 ndarray, "paths": list[str]}``,
        all on the CPU.
    """
    model = unwrap_model(model)
    if fast_path is None:
        fast_path = make_fast_path(next(model.parameters()).device)
    fast_path.prepare(model)
    if cache and not isinstance(source, (CachedImages, Dataset, DataLoader)):
        source = CachedImages.from_records(source, height, width)
    if isinstance(source, CachedImages):
        return _extract_cached(model, source, fast_path, batch_size, flip)
    loader = make_eval_loader(source, batch_size, height, width, num_workers, False, fast_path.device)
    was_training = model.training
    model.eval()
    embeddings, attribute_logits, pids, camids, paths = [], [], [], [], []
    batches = loader
    if progress:
        import sys

        from tqdm.auto import tqdm

        batches = tqdm(loader, desc="extract", file=sys.stderr, leave=False)
    try:
        for batch in batches:
            out = forward_batch(model, batch["image"], fast_path, flip)
            embeddings.append(out["embedding"].cpu())
            if "attribute_logits" in out:
                attribute_logits.append(out["attribute_logits"].cpu())
            pids.append(torch.as_tensor(batch["pid"]))
            camids.append(torch.as_tensor(batch["camid"]))
            paths.extend(batch["path"])
    finally:
        model.train(was_training)
    if not embeddings:
        raise ValueError("extract: the source holds no images")
    return {
        "embeddings": torch.cat(embeddings),
        "attribute_logits": torch.cat(attribute_logits) if attribute_logits else None,
        "pids": torch.cat(pids).numpy().astype(np.int64),
        "camids": torch.cat(camids).numpy().astype(np.int64),
        "paths": list(paths),
    }


def _extract_cached(model: nn.Module, cached: CachedImages, fp: FastPath, batch_size: int, flip: bool) -> dict:
    was_training = model.training
    model.eval()
    embeddings, attribute_logits = [], []
    try:
        for start in range(0, len(cached), batch_size):
            raw = cached.images[start : start + batch_size].to(fp.device, non_blocking=True)  # (B, 3, H, W) uint8
            out = forward_batch(model, normalize_batch(raw), fp, flip)
            embeddings.append(out["embedding"].cpu())
            if "attribute_logits" in out:
                attribute_logits.append(out["attribute_logits"].cpu())
    finally:
        model.train(was_training)
    return {
        "embeddings": torch.cat(embeddings),
        "attribute_logits": torch.cat(attribute_logits) if attribute_logits else None,
        "pids": cached.pids.copy(),
        "camids": cached.camids.copy(),
        "paths": list(cached.paths),
    }


def concat_features(parts: Sequence[dict]) -> dict:
    """Join several :func:`extract` results (e.g. query then gallery) into one, in order."""
    return {
        "embeddings": torch.cat([p["embeddings"] for p in parts]),
        "attribute_logits": None
        if any(p["attribute_logits"] is None for p in parts)
        else torch.cat([p["attribute_logits"] for p in parts]),
        "pids": np.concatenate([p["pids"] for p in parts]),
        "camids": np.concatenate([p["camids"] for p in parts]),
        "paths": [path for p in parts for path in p["paths"]],
    }


def split_features(features: dict, sizes: Sequence[int]) -> list[dict]:
    """Cut an :func:`extract` result into consecutive pieces of ``sizes`` (inverse of concat)."""
    if sum(sizes) != len(features["paths"]):
        raise ValueError(f"sizes {list(sizes)} do not add up to {len(features['paths'])} images")
    pieces, start = [], 0
    for size in sizes:
        stop = start + size
        pieces.append(
            {
                "embeddings": features["embeddings"][start:stop],
                "attribute_logits": None
                if features["attribute_logits"] is None
                else features["attribute_logits"][start:stop],
                "pids": features["pids"][start:stop],
                "camids": features["camids"][start:stop],
                "paths": features["paths"][start:stop],
            }
        )
        start = stop
    return pieces
