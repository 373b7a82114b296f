"""Training and validation: plain functions.

* :func:`train_one_epoch` -> dict of mean losses, lr and speed;
* :func:`evaluate` -> dict of validation metrics (re-ID mAP / rank-1 under the Market and the
  course protocols, attribute accuracy per group and mean, validation loss);

:func:`~reid_utils.engine.trainer.fit` and :func:`~reid_utils.engine.trainer.main` run the
whole training with them (see :mod:`reid_utils.engine.trainer`).

What :func:`fit` writes in ``cfg.out_dir`` (all atomically: an interruption never leaves a
half-written file): ``split.json`` (the identity-disjoint split, reused by every notebook),
``last.pt`` after every epoch (everything needed to resume exactly), ``best.pt`` (the best
epoch by ``cfg.early_stopping_metric``, reloaded into the model at the end),
``history.json`` and ``curves.png``.

The history is a dict of lists, one value per epoch: ``epoch``, ``lr``, ``train_loss``,
``train_id_loss``, ``train_attribute_loss``, ``train_triplet_loss``, ``train_center_loss``,
``train_distill_loss``,
``train_images_per_second``, ``epoch_seconds`` and, with validation, ``val_loss``, ``mAP``,
``rank1``, ``rank5``, ``mINP``, ``course_mAP``, ``course_rank1``, ``attribute_accuracy``,
``attribute_accuracy_<group>`` for the 12 groups, ``mA`` and ``score``. Metrics are fractions
in [0, 1], NaN on the epochs that ``cfg.val_every > 1`` leaves without validation.
``pandas.DataFrame(history)`` makes it a table.

Under torchrun every rank trains on its own identities (distributed PK sampler) and rank 0
alone validates, logs and writes files.
"""
from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import TrainingError
from ..losses import LOSS_PARTS, PART_NAMES
from ..metrics.retrieval import compute_distance
from ..metrics.scores import attribute_metrics, evaluate_reid
from ..schema import GROUP_NAMES, labelled_rows, predict_groups
from .inference import CachedImages, extract, split_features
from .optim import LRSchedule
from .runtime import FastPath, autocast, fast_path as make_fast_path, unwrap_model


#: Steps between host reads of the loss on CUDA (see :func:`train_one_epoch`).
SYNC_EVERY = 20


# ---------------------------------------------------------------------------------------------
# One epoch


def _check_finite(recent: torch.Tensor, epoch: int, step: int, log_every: int, total: int | None) -> None:
    """TrainingError when the loss parts summed since the last check are not all finite."""
    values = recent.tolist()  # the one host read per log step
    if all(math.isfinite(v) for v in values):
        return
    where = f"step {step + 1}" if log_every == 1 else f"steps {max(step + 2 - log_every, 1)}-{step + 1}"
    parts = dict(zip(PART_NAMES, values))
    raise TrainingError(
        f"the loss became {parts['total']} at epoch {epoch + 1}, {where}" + (f"/{total}" if total else "")
        + f" (parts: {', '.join(f'{k}={v:.4g}' for k, v in parts.items() if k != 'total')})"
    )


def train_one_epoch(
    model: nn.Module,
    batches,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    fast_path: FastPath,
    epoch: int,
    *,
    scaler: torch.amp.GradScaler | None = None,
    schedule: LRSchedule | None = None,
    start_step: int = 0,
    max_steps: int = 0,
    clip_grad_norm: float = 0.0,
    progress: bool = True,
    log_every: int = 0,
    on_step: Callable[[int], None] | None = None,
) -> dict:
    """Train ``model`` for one epoch.

    Args:
        batches: iterable of dicts ``{"image": (B, 3, H, W), "pid": (B,) labels,
            "attributes": (B, 12)}`` and optionally ``"index": (B,)`` training-set indices (a :mod:`~reid_utils.engine.batches` source's ``epoch(e)``
            or a DataLoader over a ReidDataset).
        loss_fn: ``loss_fn.terms(outputs, pids, attributes, index)`` -> ``(total, parts)``
            (MultiTaskLoss).
        epoch: 0-based, for messages and the progress bar.
        schedule: sets the learning rate before every step from the global step
            ``start_step + step``.
        max_steps: stop after this many steps (0: the whole iterable).
        clip_grad_norm: clip the total gradient norm (0: off).
        progress: tqdm bar on stderr with the running loss.
        log_every: steps between reads of the loss on the host (the bar, the NaN check).
            Reading a GPU value makes the CPU wait for the GPU, so on CUDA it happens every
            :data:`SYNC_EVERY` steps (0, the default); on a CPU every step costs nothing.
        on_step: called with the 0-based step after each optimizer step (the time budget
            times the first steps with it).

    Returns:
        ``{"loss", "id", "attribute", "triplet", "center", "distill"}`` (means per image), ``"lr"`` (of
        the last step), ``"steps"``, ``"images"``, ``"seconds"`` and ``"images_per_second"``.

    Raises:
        TrainingError: the loss is NaN or Inf (naming the epoch and step). On a CPU it is
            checked every step, before the optimizer steps on it; on CUDA every ``log_every``
            steps (the error then names the steps since the last check).
    """
    model.train()
    loss_fn.train()
    log_every = log_every or (SYNC_EVERY if fast_path.device.type == "cuda" else 1)
    sums = torch.zeros(len(PART_NAMES), device=fast_path.device)  # per-image sums of the loss parts
    checked = torch.zeros(len(PART_NAMES), device=fast_path.device)  # sums at the last finite check
    images_seen, steps, lr = 0, 0, optimizer.param_groups[0]["lr"]
    total = len(batches) if hasattr(batches, "__len__") else None
    if max_steps:
        total = min(total, max_steps) if total is not None else max_steps
    params = [p for group in optimizer.param_groups for p in group["params"]]
    bar = tqdm(total=total, desc=f"epoch {epoch + 1}", file=sys.stderr, disable=not progress, leave=False,
               dynamic_ncols=True, unit="batch")
    start = time.perf_counter()
    try:
        for step, batch in enumerate(batches):
            if max_steps and step >= max_steps:
                break
            if schedule is not None:
                lr = schedule.apply(optimizer, start_step + step)
            images = fast_path.to_device(batch["image"])
            pids = batch["pid"].to(fast_path.device, non_blocking=True)
            attributes = batch["attributes"].to(fast_path.device, non_blocking=True)
            index = batch.get("index")  # rows of the distillation targets
            index = None if index is None else index.to(fast_path.device, non_blocking=True)
            with autocast(fast_path):
                outputs = model(images)
                loss, terms = loss_fn.terms(outputs, pids, attributes, index)  # terms: (6,) on the device
            batch_size = images.shape[0]
            sums += terms * batch_size
            if (step + 1) % log_every == 0 or step + 1 == total:
                _check_finite(sums - checked, epoch, step, log_every, total)
                checked = sums.clone()
                bar.set_postfix(loss=f"{float(sums[-1]) / (images_seen + batch_size):.4f}", lr=f"{lr:.2e}", refresh=False)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                if clip_grad_norm > 0:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                if clip_grad_norm > 0:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                optimizer.step()
            images_seen += batch_size
            steps += 1
            bar.update(1)
            if on_step is not None:
                on_step(step)
        _check_finite(sums - checked, epoch, steps - 1, log_every, total)
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    means = dict(zip(PART_NAMES, (sums / max(images_seen, 1)).tolist()))
    result = {"loss": means["total"], **{key: means[key] for key in LOSS_PARTS}}
    result.update(lr=lr, steps=steps, images=images_seen, seconds=seconds,
                  images_per_second=images_seen / seconds if seconds > 0 else 0.0)
    return result


# ---------------------------------------------------------------------------------------------
# Validation


@torch.no_grad()
def evaluate(
    model: nn.Module,
    split,
    fast_path: FastPath | None = None,
    *,
    val_images: CachedImages | None = None,
    val_loss_fn: nn.Module | None = None,
    height: int = 128,
    width: int = 64,
    batch_size: int = 256,
    flip: bool = True,
    num_workers: int | None = None,
) -> dict:
    """Validation metrics of ``model`` on ``split.val_query`` / ``split.val_gallery``.

    Args:
        split: a :class:`~reid_utils.data.Split` (only its validation part is used).
        val_images: the query then gallery images, pre-decoded (:class:`CachedImages`);
            None decodes ``split``'s records.
        val_loss_fn: a MultiTaskLoss whose attribute term gives ``val_loss`` (identity terms
            cannot be computed: validation identities are not training classes).
        height, width, batch_size, flip, num_workers: as for :func:`~reid_utils.engine.inference.extract`.

    Returns:
        ``mAP``, ``rank1``, ``rank5``, ``mINP`` (Market protocol: same-camera matches and
        junk ignored), ``course_mAP``, ``course_rank1`` (course protocol: every same-id
        gallery image counts), ``attribute_accuracy`` (mean over the 12 groups),
        ``attribute_accuracy_<group>``, ``mA`` (label-based, 30 binary columns), ``val_loss``
        and ``score`` (mean of mAP and attribute accuracy). Fractions in [0, 1]. An empty
        dict when the split has no validation queries.
    """
    if not split.val_query:
        return {}
    module = unwrap_model(model)
    fast_path = fast_path or make_fast_path(next(module.parameters()).device)
    num_query = len(split.val_query)
    if val_images is not None:
        feats = extract(module, val_images, fast_path, batch_size=batch_size, flip=flip)
    else:
        records = list(split.val_query) + list(split.val_gallery)
        feats = extract(module, records, fast_path, batch_size=batch_size, flip=flip, height=height, width=width,
                        num_workers=num_workers)
    query, gallery = split_features(feats, [num_query, len(feats["paths"]) - num_query])
    distmat = compute_distance(query["embeddings"], gallery["embeddings"], metric="cosine")  # (Q, G)
    metrics: dict[str, float] = {}
    market = evaluate_reid(distmat, query["pids"], gallery["pids"], query["camids"], gallery["camids"],
                           protocol="market")
    metrics.update({k: market[k] for k in ("mAP", "rank1", "rank5", "mINP") if k in market})
    course = evaluate_reid(distmat, query["pids"], gallery["pids"], protocol="course")
    metrics.update(course_mAP=course["mAP"], course_rank1=course["rank1"])

    logits = feats["attribute_logits"]
    if logits is not None:
        true = torch.as_tensor(np.stack([np.asarray(r.attributes) for r in list(split.val_query) + list(split.val_gallery)]))
        known = labelled_rows(true)  # junk / distractors have no attributes
        if bool(known.any()):
            form = module.attribute_form
            result = attribute_metrics(predict_groups(logits[known], form).numpy(), true[known].numpy())
            metrics["attribute_accuracy"] = result["mean_accuracy"]
            for name in GROUP_NAMES:
                metrics[f"attribute_accuracy_{name}"] = result["accuracy"][name]
            metrics["mA"] = result["mA"]
            if val_loss_fn is not None:
                dummy_pids = torch.zeros(int(known.sum()), dtype=torch.int64)
                _, parts = val_loss_fn({"attribute_logits": logits[known]}, dummy_pids, true[known])
                metrics["val_loss"] = parts["attribute"]
    metrics["score"] = (metrics["mAP"] + metrics["attribute_accuracy"]) / 2 if "attribute_accuracy" in metrics \
        else metrics["mAP"]
    return {k: float(v) for k, v in metrics.items()}


def best_epoch(history: dict, metric: str = "score") -> dict:
    """The history row of the best epoch by ``metric`` (``val_loss``: lowest), as a dict."""
    values = history.get(metric)
    if not values:
        raise KeyError(f"history has no {metric!r} values; keys: {', '.join(history)}")
    pick = np.nanargmin if metric == "val_loss" else np.nanargmax
    i = int(pick(np.asarray(values, dtype=float)))
    return {key: column[i] for key, column in history.items() if len(column) > i}
