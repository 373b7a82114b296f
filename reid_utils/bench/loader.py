"""Data loading speed next to training speed: is the loader the bottleneck?

Two ways of making training batches, both over the training images decoded once into the
:class:`~reid_utils.data.ReidDataset` cache and batched by :class:`~reid_utils.data.PKSampler`:

* ``loader_img_s``: a DataLoader with the per-image train transforms
  (:func:`~reid_utils.data.build_transforms`) in worker processes, persistent workers,
  the workers :func:`~reid_utils.engine.runtime.default_num_workers` picks;
* ``tensor_img_s``: the engine's ``cache_images`` path, one gather and one on-tensor
  :func:`~reid_utils.data.batch_augment` call per batch (here including the resize from the
  cached size, which the engine does once up front).

``loader_over_train`` = loader images per second / fast training images per second at the same
size: above 1, the loader keeps up (it runs in parallel with training in a worker).
"""
from __future__ import annotations

import os
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from ..data import ENV_VAR, PKSampler, ReidDataset, batch_augment, build_transforms, load_dataset, resolve_data_root
from ..engine.runtime import FastPath, default_num_workers
from ..io import repo_root
from .timing import log, size_key, sync


def loader_root(settings) -> Path:
    """``settings.data_root``, else ``$REID_DATA_ROOT``, else (``settings.prefer_course_data``)
    the course release next to the repository (``../shared/data/market1501_course``) when
    present, else the bundled sample (generated on first use)."""
    if settings.data_root or os.environ.get(ENV_VAR):
        return resolve_data_root(settings.data_root)
    repo = repo_root()
    course = repo.parent / "shared" / "data" / "market1501_course" if repo is not None else None
    if settings.prefer_course_data and course is not None and (course / "annotations_train.csv").is_file():
        return course
    return resolve_data_root()


def bench_loader(settings, fast: FastPath, train_img_s: dict[str, float]) -> dict:
    """Training images per second out of the DataLoader and out of the on-tensor augmentation,
    per size, next to ``train_img_s`` (size key -> fast training images per second, may be empty)."""
    root = loader_root(settings)
    records = load_dataset(root).train
    pid_to_label = {pid: label for label, pid in enumerate(sorted({r.pid for r in records}))}
    dataset = ReidDataset(records, pid_to_label=pid_to_label, cache=True)
    log(f"loader: decoding {len(records)} training images of {root} into the cache")
    start = time.perf_counter()
    dataset.preload()  # before the workers fork, so they share it
    cache_seconds = time.perf_counter() - start
    workers = default_num_workers(fast.device)
    sizes = {}
    for height, width in settings.sizes:
        key = size_key((height, width))
        log(f"loader {key}: DataLoader ({workers} worker(s)) and on-tensor augmentation")
        dataset.transform = build_transforms(height, width, train=True)
        sampler = PKSampler(dataset.labels, settings.batch_p, settings.batch_k, seed=0)
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                            pin_memory=fast.device.type == "cuda", persistent_workers=workers > 0,
                            prefetch_factor=4 if workers > 0 else None)
        entry = {"loader_img_s": images_per_second(_endless(loader), settings.loader_batches)}
        del loader

        images = dataset.cache_tensor.to(fast.device)  # (N, 3, h, w) uint8 at the native size
        generator = torch.Generator(device=fast.device).manual_seed(0)

        def tensor_batches():
            epoch = 0
            while True:
                for indices in sampler.batches(epoch):
                    raw = images.index_select(0, torch.as_tensor(indices, device=fast.device))  # (B, 3, h, w)
                    yield {"image": batch_augment(raw, size=(height, width), generator=generator)}
                epoch += 1

        entry["tensor_img_s"] = images_per_second(tensor_batches(), settings.loader_batches, fast.device)
        if key in train_img_s:
            entry["train_fast_img_s"] = train_img_s[key]
            entry["loader_over_train"] = entry["loader_img_s"] / train_img_s[key]
        sizes[key] = entry
    return {
        "data_root": str(root),
        "num_images": len(records),
        "batch_size": settings.batch_p * settings.batch_k,
        "num_workers": workers,
        "cache_seconds": cache_seconds,
        "sizes": sizes,
    }


def _endless(loader):
    """Batches of ``loader``, epoch after epoch (the PK sampler moves to the next epoch itself)."""
    while True:
        yield from loader


def images_per_second(batches, num_batches: int, device: torch.device | None = None) -> float:
    """Images per second over ``num_batches`` batches of an iterable of ``{"image": (B, ...)}``,
    after an untimed first batch (worker start-up)."""
    iterator = iter(batches)
    next(iterator)
    images, start = 0, time.perf_counter()
    for _ in range(num_batches):
        images += len(next(iterator)["image"])
    if device is not None:
        sync(device)
    return images / (time.perf_counter() - start)
