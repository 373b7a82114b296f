"""The GPU check: ``python -m reid_utils bench --gpu`` on any CUDA machine, in under 5 minutes.

It trains APR-Net with a ResNet-50 at 256x128 under the automatic mixed precision for a few
hundred steps through the real training loop (:func:`~reid_utils.engine.loop.train_one_epoch`:
autocast, GradScaler for fp16, no host synchronisation between log steps), then runs the
inference path (flip-averaged features, :func:`~reid_utils.engine.inference.forward_batch`) and
the evaluation path (distances and :func:`~reid_utils.metrics.evaluate_reid`) on the GPU. It
reports images per second, peak GPU memory, the precision and why, and whether the loss fell.

The images are synthetic but learnable: every identity is a fixed random pattern seen with
noise, so a working pipeline drives the loss down and retrieves the right identity.
``--dry-run`` runs the same code small, on the CPU when there is no GPU (CI does).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..engine.inference import forward_batch
from ..engine.loop import train_one_epoch
from ..engine.runtime import describe_precision, fast_path, make_grad_scaler, select_device
from ..errors import ConfigError
from ..losses import MultiTaskLoss
from ..metrics import compute_distance, evaluate_reid
from ..models import build_model
from ..schema import GROUPS
from .timing import log, sync


@dataclass(frozen=True)
class GpuCheckSettings:
    depth: int = 50  # ResNet depth of APR-Net
    height: int = 256
    width: int = 128
    num_ids: int = 64  # synthetic identities
    batch_p: int = 16  # batch = 16 x 4 = 64 images (fits 16 GB at 256x128 in fp16)
    batch_k: int = 4
    steps: int = 300  # training steps (fewer if max_seconds runs out)
    max_seconds: float = 240.0  # training time limit, so that the whole check stays under 5 minutes
    eval_images_per_id: int = 4


FULL = GpuCheckSettings()
DRY_RUN = GpuCheckSettings(depth=18, height=64, width=32, num_ids=8, batch_p=4, batch_k=2, steps=12,
                           max_seconds=60.0, eval_images_per_id=2)


class SyntheticIdentities:
    """PK batches of ``num_ids`` learnable identities: a fixed random pattern each, plus noise."""

    def __init__(self, settings: GpuCheckSettings, device: torch.device, seed: int = 0):
        self.settings, self.device = settings, device
        self.generator = torch.Generator().manual_seed(seed)
        s = settings
        self.patterns = torch.randn(s.num_ids, 3, s.height, s.width, generator=self.generator)
        self.attributes = torch.stack(
            [torch.randint(g.num_classes, (s.num_ids,), generator=self.generator) for g in GROUPS], dim=1
        )  # (num_ids, 12)

    def images(self, pids: torch.Tensor) -> torch.Tensor:
        noise = torch.randn(len(pids), *self.patterns.shape[1:], generator=self.generator)
        return self.patterns[pids] + 0.5 * noise  # (B, 3, H, W)

    def batch(self) -> dict:
        s = self.settings
        ids = torch.randperm(s.num_ids, generator=self.generator)[: s.batch_p]
        pids = ids.repeat_interleave(s.batch_k)
        return {"image": self.images(pids).pin_memory() if self.device.type == "cuda" else self.images(pids),
                "pid": pids, "attributes": self.attributes[pids]}


def gpu_check(dry_run: bool = False, settings: GpuCheckSettings | None = None) -> dict:
    """Run the check (see the module docstring) and return its report."""
    device = select_device("auto")
    if device.type != "cuda" and not dry_run:
        raise ConfigError("bench --gpu needs a CUDA GPU (none is visible); --dry-run runs it small on the CPU")
    s = settings or (DRY_RUN if dry_run else FULL)
    fp = fast_path(device).apply()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    torch.manual_seed(0)
    model = fp.prepare(build_model("apr", num_ids=s.num_ids, depth=s.depth))
    loss_fn = MultiTaskLoss(alpha=0.5, attribute_form=model.attribute_form, triplet_weight=1.0).to(device)
    optimizer = torch.optim.AdamW(list(model.parameters()) + list(loss_fn.parameters()), lr=3e-4, weight_decay=5e-4)
    for group in optimizer.param_groups:
        group["peak_lr"] = group["lr"]
    data = SyntheticIdentities(s, device)
    scaler = make_grad_scaler(fp)
    log(f"gpu check: apr resnet{s.depth} {s.height}x{s.width}, batch {s.batch_p * s.batch_k}, {fp.describe()}")

    losses, images, train_seconds, start = [], 0, 0.0, time.perf_counter()
    chunk = max(1, min(20, s.steps // 10))
    while len(losses) * chunk < s.steps and time.perf_counter() - start < s.max_seconds:
        epoch = train_one_epoch(model, [data.batch() for _ in range(chunk)], loss_fn, optimizer, fp, len(losses),
                                scaler=scaler, progress=False)
        losses.append(epoch["loss"])
        if len(losses) > 1:  # the first chunk pays for cuDNN autotuning and warm-up
            images += epoch["images"]
            train_seconds += epoch["seconds"]
    sync(device)

    model.eval()
    pids = torch.arange(s.num_ids).repeat_interleave(s.eval_images_per_id)
    eval_images = data.images(pids)
    infer_start = time.perf_counter()
    embeddings = torch.cat([forward_batch(model, eval_images[i:i + 64], fp, flip=True)["embedding"].float()
                            for i in range(0, len(eval_images), 64)])
    sync(device)
    infer_seconds = time.perf_counter() - infer_start
    is_query = torch.zeros(len(pids), dtype=torch.bool)
    is_query[:: s.eval_images_per_id] = True  # one query per identity, the rest is the gallery
    embeddings = embeddings.to(device)
    distmat = compute_distance(embeddings[is_query.to(device)], embeddings[~is_query.to(device)], metric="cosine")
    metrics = evaluate_reid(distmat.cpu(), pids[is_query], pids[~is_query], protocol="course")
    third = max(1, len(losses) // 3)
    report = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"{device} (dry run)",
        "precision": describe_precision(device),
        "fast_path": fp.describe(),
        "steps": len(losses) * chunk,
        "train_images_per_second": images / train_seconds if train_seconds else None,
        "infer_images_per_second": 2 * len(eval_images) / infer_seconds,  # flip: two passes per image
        "peak_memory_gb": torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None,
        "loss_first": sum(losses[:third]) / third,
        "loss_last": sum(losses[-third:]) / third,
        "eval_mAP": metrics["mAP"],
        "eval_rank1": metrics["rank1"],
        "seconds": time.perf_counter() - start,
    }
    report["loss_fell"] = report["loss_last"] < report["loss_first"]
    return report


def format_gpu_report(report: dict) -> str:
    rows = [f"{key:<24} {value:.4g}" if isinstance(value, float) else f"{key:<24} {value}"
            for key, value in report.items()]
    return "GPU check\n" + "\n".join(rows)
