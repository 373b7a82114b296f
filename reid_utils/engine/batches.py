"""Training batches for the engine: which images go together, and how they are augmented.

Two interchangeable sources, both yielding per epoch dicts ``{"image": float (B, 3, H, W) on the
device, "pid": int64 (B,) training labels, "attributes": int64 (B, 12), "index": int64 (B,)}``
(``index``: the images' rows in the training set, for the distillation targets):

* :class:`TensorBatches` (``cache_images=True``, the fast path): every training image is
  decoded once into a ``uint8`` tensor ``(N, 3, H, W)`` (on the GPU when there is one), and
  each batch is gathered and augmented on-tensor in one call
  (:func:`~reid_utils.data.batch_augment`). No DataLoader, no per-image Python work.
* :class:`LoaderBatches`: a DataLoader with per-image torchvision transforms in worker
  processes (for datasets too big for RAM).

Batches come from :class:`~reid_utils.data.PKSampler` (P identities x K images) when the loss
has a metric term, else from :class:`ShuffleBatchSampler`. Both depend only on
``(seed, epoch, rank)``, and the tensor path's augmentation generator is seeded the same way,
so a resumed run sees exactly the batches of an uninterrupted one.
"""
from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..config import TrainConfig
from ..data import PKSampler, ReidDataset, Split, batch_augment, build_transforms, load_image_tensor, normalize_batch
from ..errors import ConfigError
from .runtime import DistInfo, FastPath, default_num_workers


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A 63-bit seed that depends on ``(seed, epoch, rank)`` only."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(2, np.uint64)[0] >> np.uint64(1))


class ShuffleBatchSampler(torch.utils.data.Sampler):
    """Shuffled batches of ``batch_size`` indices (last partial batch dropped), a pure
    function of ``(seed, epoch)``. Distributed: one common permutation dealt to the ranks."""

    def __init__(self, num_items: int, batch_size: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if num_items // world_size < batch_size:
            raise ConfigError(
                f"{num_items} training images cannot fill one batch of {batch_size} (batch_p x batch_k) on each of "
                f"{world_size} rank(s); lower batch_p or batch_k"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def __len__(self) -> int:
        return (self.num_items // self.world_size) // self.batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def batches(self, epoch: int) -> list[list[int]]:
        order = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
        mine = order[self.rank :: self.world_size][: len(self) * self.batch_size]
        return mine.reshape(len(self), self.batch_size).tolist()

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        self.epoch += 1
        return iter(self.batches(epoch))


def augment_options(cfg: TrainConfig) -> dict:
    """The config's augmentation switches as :func:`~reid_utils.data.build_transforms` options."""
    if not cfg.augment:
        return {"flip": False, "rotation": 0.0, "blur": 0.0, "sharpness": 0.0, "pad": 0, "erasing": 0.0}
    return {
        "flip": cfg.random_flip,
        "rotation": cfg.rotation,
        "blur": cfg.blur,
        "sharpness": cfg.sharpness,
        "pad": cfg.pad_pixels,
        "erasing": cfg.erasing,
    }


def make_batch_sampler(cfg: TrainConfig, labels: list[int], info: DistInfo):
    """PK sampler for metric losses, shuffled batches otherwise."""
    if cfg.uses_metric_loss:
        return PKSampler(labels, cfg.batch_p, cfg.batch_k, seed=cfg.seed, rank=info.rank, world_size=info.world_size)
    return ShuffleBatchSampler(len(labels), cfg.batch_size, seed=cfg.seed, rank=info.rank, world_size=info.world_size)


class TensorBatches:
    """Decoded training images in one uint8 tensor, gathered and augmented per batch."""

    def __init__(self, cfg: TrainConfig, split: Split, fp: FastPath, info: DistInfo, progress: bool = False):
        dataset = ReidDataset(split.train, pid_to_label=split.pid_to_label)
        self.sampler = make_batch_sampler(cfg, dataset.labels, info)
        self.device, self.memory_format = fp.device, fp.memory_format
        images = load_image_tensor(split.train, image_size=(cfg.height, cfg.width), progress=progress)
        self.images = images.to(self.device)  # (N, 3, H, W) uint8
        self.labels = torch.as_tensor(dataset.labels, dtype=torch.int64, device=self.device)  # (N,)
        self.attributes = torch.as_tensor(np.stack([r.attributes for r in split.train]), dtype=torch.int64,
                                          device=self.device)  # (N, 12)
        self.options = augment_options(cfg)
        self.augment = cfg.augment
        self.seed, self.rank = cfg.seed, info.rank

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[dict]:
        self.sampler.set_epoch(epoch)
        generator = torch.Generator(device=self.device)
        generator.manual_seed(epoch_seed(self.seed, epoch, self.rank))
        for indices in self.sampler.batches(epoch):
            index = torch.as_tensor(indices, device=self.device)
            raw = self.images.index_select(0, index)  # (B, 3, H, W) uint8
            if self.augment:
                images = batch_augment(raw, generator=generator, **self.options)
            else:
                images = normalize_batch(raw)
            yield {
                "image": images.contiguous(memory_format=self.memory_format),
                "pid": self.labels.index_select(0, index),
                "attributes": self.attributes.index_select(0, index),
                "index": index,
            }
        self.sampler.set_epoch(epoch + 1)


class LoaderBatches:
    """Per-image transforms in DataLoader workers (images decoded from disk every epoch)."""

    def __init__(self, cfg: TrainConfig, split: Split, fp: FastPath, info: DistInfo):
        transform = build_transforms(cfg.height, cfg.width, train=True, **augment_options(cfg))
        self.dataset = ReidDataset(split.train, transform, pid_to_label=split.pid_to_label)
        self.sampler = make_batch_sampler(cfg, self.dataset.labels, info)
        self.fp = fp
        self.num_workers = default_num_workers(fp.device) if cfg.num_workers < 0 else cfg.num_workers
        self.seed, self.rank = cfg.seed, info.rank

    def __len__(self) -> int:
        return len(self.sampler)

    def epoch(self, epoch: int) -> Iterator[dict]:
        self.sampler.set_epoch(epoch)
        # A fresh loader per epoch whose worker seeds depend on (seed, epoch, rank): resumable.
        # (Workers are not persistent, so their random streams never carry across epochs.)
        generator = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.rank))
        loader = DataLoader(
            self.dataset,
            batch_sampler=self.sampler,
            num_workers=self.num_workers,
            pin_memory=self.fp.device.type == "cuda",
            generator=generator,
            prefetch_factor=4 if self.num_workers > 0 else None,
        )
        for batch in loader:
            yield {
                "image": self.fp.to_device(batch["image"]),
                "pid": batch["pid"].to(self.fp.device, non_blocking=True),
                "attributes": batch["attributes"].to(self.fp.device, non_blocking=True),
                "index": batch["index"].to(self.fp.device, non_blocking=True),
            }
        self.sampler.set_epoch(epoch + 1)


def make_train_batches(cfg: TrainConfig, split: Split, fp: FastPath, info: DistInfo, progress: bool = False):
    """:class:`TensorBatches` when ``cfg.cache_images`` else :class:`LoaderBatches`."""
    if cfg.cache_images:
        return TensorBatches(cfg, split, fp, info, progress)
    return LoaderBatches(cfg, split, fp, info)
