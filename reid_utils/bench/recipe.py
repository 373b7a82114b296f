"""The CPU recipe's training step against the variants that could make it faster.

Issue 12 asks where a CPU without bf16 can still save time: the memory format, the batch size
and ``torch.compile`` of the training step. :func:`bench_recipe` times one step of the recipe
(``apr``, ResNet-18, the recipe's input size and batch size, on the automatic fast path) and each
variant that changes one of those, all interleaved in one run, from the same weights. Batch
sizes are compared per image: a larger batch that runs more images per second still takes
fewer optimiser steps per epoch, which the time budget does not make up for.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import time

import torch

from ..engine.runtime import FastPath
from ..models import build_model, model_summary
from .model_speed import pk_batch, train_step
from .timing import error_line, interleaved, log, median, size_key


def bench_recipe(settings, fast: FastPath) -> dict:
    """Training images per second of the recipe's step and of its variants.

    Variants: ``batch<n/2>`` and ``batch<2n>`` (half and twice the identities per batch), the
    other memory format (``contiguous`` where the fast path is channels_last, else
    ``channels_last``) and, with ``settings.compile``, ``compiled`` (``torch.compile`` of the
    model; its first, compiling step is timed apart as ``compile_seconds``, and a failure is
    reported as ``compile_error`` instead of a variant).

    Returns ``{"model", "size", "path", "gflops_per_image", "variants", "fastest",
    "compiled_speedup"}``: ``variants[name]`` holds ``batch_size``, ``img_s``,
    ``rep_seconds`` and ``vs_recipe`` (its images per second over the recipe's); ``fastest``
    names the variant with the most images per second (``"recipe"`` included).
    """
    height, width = settings.recipe_size
    batch_p, batch_k = settings.recipe_batch_p, settings.batch_k
    torch.manual_seed(0)
    model = build_model("apr", num_ids=settings.num_ids, depth=settings.recipe_depth)
    other_format = "contiguous" if fast.channels_last else "channels_last"
    half, double = max(1, batch_p // 2), 2 * batch_p
    batches = {p: pk_batch(p, batch_k, height, width, fast.device) for p in (half, batch_p, double)}
    plan = {  # name -> (batch identities, path)
        "recipe": (batch_p, fast),
        f"batch{half * batch_k}": (half, fast),
        f"batch{double * batch_k}": (double, fast),
        other_format: (batch_p, dataclasses.replace(fast, channels_last=not fast.channels_last)),
    }
    log(f"recipe step {height}x{width}, batch {batch_p * batch_k}: against {', '.join(list(plan)[1:])}"
        f"{', torch.compile' if settings.compile else ''}")
    sides = {name: train_step(copy.deepcopy(model), path, batches[p]) for name, (p, path) in plan.items()}
    result = {"model": f"apr (resnet{settings.recipe_depth})", "size": size_key((height, width)),
              "path": fast.describe(), "gflops_per_image": 3 * model_summary(model, height, width)["gflops"]}
    if settings.compile:
        step, outcome = _compiled_step(model, fast, batches[batch_p])
        result.update(outcome)
        if step is not None:
            plan["compiled"] = (batch_p, fast)
            sides["compiled"] = step
    seconds = interleaved(sides, settings.train_reps, settings.warmup)
    variants = {}
    for name, (p, _) in plan.items():
        images = p * batch_k
        variants[name] = {"batch_size": images, "img_s": images / median(seconds[name]), "rep_seconds": seconds[name]}
    for entry in variants.values():
        entry["vs_recipe"] = entry["img_s"] / variants["recipe"]["img_s"]
    result.update(variants=variants, fastest=max(variants, key=lambda name: variants[name]["img_s"]),
                  compiled_speedup=variants["compiled"]["vs_recipe"] if "compiled" in variants else None)
    del sides
    gc.collect()
    return result


def _compiled_step(model, fast: FastPath, batch: dict):
    """``(step, {"compile_seconds"})`` for a ``torch.compile`` copy of ``model`` after its
    first (compiling) step, or ``(None, {"compile_error"})`` where compiling fails (no C
    compiler, an unsupported platform or operator)."""
    log("torch.compile of the training step: the first step compiles (a minute or more on 2 cores)")
    start = time.perf_counter()
    try:
        step = train_step(torch.compile(copy.deepcopy(model)), fast, batch)
        step()
    except Exception as error:  # report it and carry on with the other variants
        return None, {"compile_error": error_line(error)}
    return step, {"compile_seconds": time.perf_counter() - start}
