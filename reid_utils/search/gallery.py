"""Any folder of images as a gallery: listing, batched features, and an on-disk feature cache.

* :func:`list_images`: every image file under a folder (recursive, any names), sorted.
* :func:`extract_images`: flip-averaged embeddings and attribute logits of image files, in
  batches (the engine's :func:`~reid_utils.engine.inference.forward_batch`), with a tqdm bar.
  An image that cannot be decoded is skipped and reported, not fatal: one broken file must
  not stop a search over 20,000.
* :func:`gallery_features`: :func:`extract_images` behind a cache file keyed by the
  checkpoint's content and the gallery's file list (paths, sizes, modification times), so a
  second search of the same folder with the same model only reads the cache.
"""
from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import build_transforms, is_image_file, read_image
from ..engine.inference import forward_batch, make_eval_loader
from ..engine.runtime import FastPath
from ..errors import DataError
from ..io import atomic_torch_save, ensure_dir

CACHE_FORMAT = "reid_utils.search_cache/1"


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every image file (``.jpg .jpeg .png .bmp``, any case) under ``folder``, recursively,
    sorted by path. Hidden files and folders are skipped. Raises DataError when ``folder`` is
    missing or holds no image."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise DataError(f"{folder}: gallery folder does not exist (expected a folder of images)")
    found = []
    for parent, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(parent) / name for name in files if is_image_file(name))
    if not found:
        raise DataError(f"{folder}: no image files (.jpg, .jpeg, .png, .bmp) in the folder or its sub-folders")
    return sorted(p.resolve() for p in found)


class ImageFiles(Dataset):
    """Image files with the eval transform: item ``i`` is ``{"image": (3, H, W) float, "index": i,
    "error": ""}``; an undecodable file gives a zero image and its error message."""

    def __init__(self, paths: Sequence[str | os.PathLike], height: int, width: int):
        self.paths = [Path(p) for p in paths]
        self.height, self.width = height, width
        self.transform = build_transforms(height, width, train=False)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict:
        try:
            image, error = self.transform(read_image(self.paths[i])), ""
        except DataError as err:
            image, error = torch.zeros(3, self.height, self.width), str(err)
        return {"image": image, "index": i, "error": error}


@torch.no_grad()
def extract_images(
    model: nn.Module,
    paths: Sequence[str | os.PathLike],
    height: int,
    width: int,
    fast_path: FastPath,
    flip: bool = True,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
    desc: str = "gallery",
) -> dict:
    """Embeddings and attribute logits of image files (eval mode, flip-averaged by default).

    Args:
        model: a registry model (moved to the fast path's device; its train/eval mode is restored).
        paths: image files; height, width: the model's input size (``input_size(ckpt)``).
        fast_path: device and precision (:func:`reid_utils.engine.runtime.fast_path`).
    Returns:
        ``{"paths": list[str] of the N decoded images, "embeddings": (N, D) float32,
        "attribute_logits": (N, A) float32 or None, "skipped": [(path, reason), ...]}`` on the CPU.
    """
    dataset = ImageFiles(paths, height, width)
    loader = make_eval_loader(dataset, batch_size, num_workers=num_workers, device=fast_path.device)
    fast_path.prepare(model)
    was_training = model.training
    model.eval()
    embeddings, logits, ok = [], [], []
    skipped: list[tuple[str, str]] = []
    try:
        for batch in tqdm(loader, desc=desc, unit="batch", file=sys.stderr, disable=not progress, leave=False):
            out = forward_batch(model, batch["image"], fast_path, flip)
            good = torch.tensor([not e for e in batch["error"]])  # (B,) bool
            embeddings.append(out["embedding"].cpu()[good])
            if "attribute_logits" in out:
                logits.append(out["attribute_logits"].cpu()[good])
            for i, error in zip(batch["index"].tolist(), batch["error"]):
                if error:
                    skipped.append((str(dataset.paths[i]), error))
                else:
                    ok.append(str(dataset.paths[i]))
    finally:
        model.train(was_training)
    if not ok:
        first = skipped[0][1] if skipped else "no images"
        raise DataError(f"none of the {len(dataset)} images could be read (first: {first})")
    return {
        "paths": ok,
        "embeddings": torch.cat(embeddings),
        "attribute_logits": torch.cat(logits) if logits else None,
        "skipped": skipped,
    }


def file_digest(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's content (hex)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def cache_key(checkpoint_digest: str, paths: Sequence[Path], height: int, width: int, flip: bool) -> str:
    """Key of a gallery's features: the checkpoint's content, every file's path, size and
    modification time, the input size and flip averaging (16 hex digits)."""
    digest = hashlib.sha256(f"{checkpoint_digest}|{height}x{width}|flip={flip}\n".encode())
    for path in paths:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def gallery_features(
    model: nn.Module,
    checkpoint: str | os.PathLike,
    paths: Sequence[Path],
    height: int,
    width: int,
    fast_path: FastPath,
    cache_dir: str | os.PathLike | None = None,
    flip: bool = True,
    batch_size: int = 64,
    num_workers: int | None = None,
    progress: bool = False,
) -> dict:
    """:func:`extract_images` of ``paths``, read from ``cache_dir/gallery_<key>.pt`` when a
    cache of the same checkpoint and file list exists, and written there otherwise.

    ``cache_dir=None`` disables the cache. An unreadable cache file is recomputed. The result
    has the keys of :func:`extract_images` plus ``"cache"``: the cache file (or None) and
    ``"cached"``: whether it was read from there.
    """
    cache = None
    if cache_dir is not None:
        key = cache_key(file_digest(checkpoint), paths, height, width, flip)
        cache = Path(cache_dir) / f"gallery_{key}.pt"
        if cache.is_file():
            try:
                stored = torch.load(cache, map_location="cpu", weights_only=True)
            except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never fatal
                stored = None
            if isinstance(stored, dict) and stored.get("format") == CACHE_FORMAT:
                features = {k: stored[k] for k in ("paths", "embeddings", "attribute_logits")}
                features["skipped"] = [tuple(s) for s in stored["skipped"]]
                return {**features, "cache": cache, "cached": True}
    features = extract_images(model, paths, height, width, fast_path, flip, batch_size, num_workers, progress)
    if cache is not None:
        ensure_dir(cache.parent)
        atomic_torch_save({"format": CACHE_FORMAT, **{k: features[k] for k in ("paths", "embeddings", "attribute_logits")},
                           "skipped": [list(s) for s in features["skipped"]]}, cache)
    return {**features, "cache": cache, "cached": False}
