"""Training and inference speed of APR-Net: fast path vs plain fp32, per input size.

Both sides start from the same weights (two copies of one model), see the same fixed batch,
and alternate (see :func:`~.timing.interleaved`). Each entry of ``"sizes"`` holds
``fast_img_s``, ``plain_img_s`` (images / median seconds), ``speedup`` (their ratio) and the
raw ``*_rep_seconds`` of every timed repetition; with ``torch.compile`` also ``compiled_img_s``,
``compiled_speedup`` (compiled / plain) and ``compile_seconds`` (the first, compiling call).
"""
from __future__ import annotations

import copy
import gc
import time
from collections.abc import Callable

import torch
from torch import nn

from ..engine.inference import forward_batch
from ..engine.runtime import FastPath, autocast, make_grad_scaler
from ..losses import MultiTaskLoss
from ..models import build_model, model_summary
from ..schema import GROUPS
from .timing import activate, error_line, interleaved, log, median, size_key, sync


def apr_model(depth: int = 50, num_ids: int = 751) -> nn.Module:
    """APR-Net from scratch (seeded, so every run starts from the same weights)."""
    torch.manual_seed(0)
    return build_model("apr", num_ids=num_ids, depth=depth)


def pk_batch(batch_p: int, batch_k: int, height: int, width: int, device: torch.device) -> dict:
    """One fixed PK batch: ``image`` ``(P*K, 3, H, W)`` random, ``pid`` ``(P*K,)`` labels
    ``0..P-1`` (K each), ``attributes`` ``(P*K, 12)`` valid group classes, one set per identity."""
    generator = torch.Generator().manual_seed(0)
    per_id = torch.stack(
        [torch.randint(group.num_classes, (batch_p,), generator=generator) for group in GROUPS], dim=1
    )  # (P, 12)
    return {
        "image": torch.randn(batch_p * batch_k, 3, height, width, generator=generator).to(device),
        "pid": torch.arange(batch_p).repeat_interleave(batch_k).to(device),
        "attributes": per_id.repeat_interleave(batch_k, dim=0).to(device),
    }


def train_step(model: nn.Module, fp: FastPath, batch: dict) -> Callable[[], None]:
    """A callable doing one training step of ``model`` on ``batch`` the way ``fp`` says
    (as :func:`~reid_utils.engine.loop.train_one_epoch` does: autocast around forward and loss,
    GradScaler for fp16; multi-task loss with batch-hard triplet, AdamW)."""
    model = fp.prepare(model).train()
    loss_fn = MultiTaskLoss(alpha=0.5, attribute_form=model.attribute_form, triplet_weight=1.0).to(fp.device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3.5e-4, weight_decay=5e-4)
    scaler = make_grad_scaler(fp)

    def step() -> None:
        activate(fp)
        images = fp.to_device(batch["image"])  # channels_last on the fast side
        with autocast(fp):
            outputs = model(images)
            loss, _ = loss_fn(outputs, batch["pid"], batch["attributes"])
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        sync(fp.device)

    return step


def bench_train(settings, fast: FastPath, plain: FastPath) -> dict:
    """Training images per second, fast path vs plain fp32, per size of ``settings.sizes``."""
    model = apr_model(settings.depth, settings.num_ids)
    batch_size = settings.batch_p * settings.batch_k
    sizes = {}
    for height, width in settings.sizes:
        log(f"train {height}x{width}, batch {batch_size}: fast vs plain fp32")
        batch = pk_batch(settings.batch_p, settings.batch_k, height, width, fast.device)
        sides = {
            "fast": train_step(copy.deepcopy(model), fast, batch),
            "plain": train_step(copy.deepcopy(model), plain, batch),
        }
        entry = ratio_entry(interleaved(sides, settings.train_reps, settings.warmup), batch_size)
        entry["gflops_per_image"] = 3 * model_summary(model, height, width)["gflops"]  # forward + backward
        sizes[size_key((height, width))] = entry
        del sides
        gc.collect()
    return {"model": f"apr (resnet{settings.depth})", "batch_size": batch_size, "sizes": sizes}


def bench_trunks(settings, fast: FastPath) -> dict:
    """Training images per second on the fast path: ``osnet`` against the CPU recipe's ``apr``
    (ResNet-18, last stride 1), the same APR-Net head, loss, batch and weights seed, per size.

    Each entry holds ``osnet_img_s``, ``resnet18_img_s``, ``speedup`` (osnet / resnet18), the
    ``*_rep_seconds`` and each model's ``*_gflops_per_image`` (forward + backward).
    """
    torch.manual_seed(0)
    models = {"osnet": build_model("osnet", num_ids=settings.num_ids),
              "resnet18": build_model("apr", num_ids=settings.num_ids, depth=18)}
    batch_size = settings.batch_p * settings.batch_k
    sizes = {}
    for height, width in settings.sizes:
        log(f"train {height}x{width}, batch {batch_size}: osnet vs apr (resnet18), fast path")
        batch = pk_batch(settings.batch_p, settings.batch_k, height, width, fast.device)
        sides = {name: train_step(copy.deepcopy(model), fast, batch) for name, model in models.items()}
        entry = ratio_entry(interleaved(sides, settings.train_reps, settings.warmup), batch_size,
                            over=("osnet", "resnet18"))
        entry.update({f"{name}_gflops_per_image": 3 * model_summary(model, height, width)["gflops"]
                      for name, model in models.items()})
        sizes[size_key((height, width))] = entry
        del sides
        gc.collect()
    return {"batch_size": batch_size, "path": fast.describe(), "sizes": sizes}


def ratio_entry(seconds: dict[str, list[float]], images: int, over: tuple[str, str] = ("fast", "plain")) -> dict:
    """``{"<side>_img_s", "<side>_rep_seconds"}`` for every side and ``speedup`` = the images
    per second of ``over[0]`` / those of ``over[1]``."""
    entry = {f"{name}_img_s": images / median(values) for name, values in seconds.items()}
    entry.update({f"{name}_rep_seconds": values for name, values in seconds.items()})
    entry["speedup"] = entry[f"{over[0]}_img_s"] / entry[f"{over[1]}_img_s"]
    return entry


def _forward(model: nn.Module, fp: FastPath, images: torch.Tensor) -> Callable[[], None]:
    def run() -> None:
        activate(fp)
        forward_batch(model, images, fp, flip=False)
        sync(fp.device)

    return run


def bench_infer(settings, fast: FastPath, plain: FastPath) -> dict:
    """Eval-mode images per second (no flip), fast path vs plain fp32, and torch.compile on
    the fast side at the first size when ``settings.compile``."""
    model = apr_model(settings.depth, settings.num_ids).eval()
    models = {"fast": fast.prepare(copy.deepcopy(model)).eval(), "plain": plain.prepare(copy.deepcopy(model)).eval()}
    paths = {"fast": fast, "plain": plain}
    sizes = {}
    for index, (height, width) in enumerate(settings.sizes):
        log(f"infer {height}x{width}, batch {settings.infer_batch}: fast vs plain fp32")
        generator = torch.Generator().manual_seed(1)
        images = torch.randn(settings.infer_batch, 3, height, width, generator=generator).to(fast.device)
        sides = {name: _forward(models[name], paths[name], images) for name in models}
        extra = {}
        if settings.compile and index == 0:
            compiled, extra = _compile(models["fast"], fast, images)
            if compiled is not None:
                sides["compiled"] = _forward(compiled, fast, images)
        entry = ratio_entry(interleaved(sides, settings.infer_reps, settings.warmup), settings.infer_batch)
        if "compiled_img_s" in entry:
            entry["compiled_speedup"] = entry["compiled_img_s"] / entry["plain_img_s"]
        entry.update(extra)
        entry["gflops_per_image"] = model_summary(model, height, width)["gflops"]
        sizes[size_key((height, width))] = entry
    return {"model": f"apr (resnet{settings.depth})", "batch_size": settings.infer_batch, "sizes": sizes}


def _compile(model: nn.Module, fp: FastPath, images: torch.Tensor) -> tuple[nn.Module | None, dict]:
    """``(torch.compile(copy of model), {"compile_seconds"})`` timed over the first call, or
    ``(None, {"compile_error"})`` where compiling fails (no C compiler, unsupported platform)."""
    log("torch.compile: the first call compiles (about 30 s or more on 2 cores)")
    compiled = torch.compile(copy.deepcopy(model))
    start = time.perf_counter()
    try:
        forward_batch(compiled, images, fp, flip=False)
        sync(fp.device)
    except Exception as error:  # report and carry on with the other numbers
        return None, {"compile_error": error_line(error)}
    return compiled, {"compile_seconds": time.perf_counter() - start}
