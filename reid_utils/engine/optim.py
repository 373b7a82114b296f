"""Optimizers, the learning-rate schedule and early stopping.

* :func:`build_optimizer`: SGD (Nesterov), Adam, AdamW, and the AdamW -> SGD switch at
  ``switch_epoch`` (:func:`optimizer_kind` says which one an epoch uses). Biases and
  normalisation weights (1-d parameters), positional embeddings and class tokens get no
  weight decay.
* :class:`LRSchedule`: per-step factor = linear warmup (from 10% of the peak) then cosine
  (down to 1% of the peak at the last step), step decay, or constant. The schedule is a pure
  function of the global step, so resuming needs only that step.
* :class:`EarlyStopping`: best value, best epoch and patience counter, with a state dict.
"""
from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ..config import TrainConfig
from .budget import DEFAULT_NUM_EPOCHS

WARMUP_START = 0.1  # warmup starts at this fraction of the peak lr
COSINE_FLOOR = 0.01  # cosine ends at this fraction of the peak lr

_NO_DECAY_NAMES = ("pos_embed", "pos_embedding", "cls_token", "class_token")


def optimizer_kind(cfg: TrainConfig, epoch: int) -> str:
    """``"sgd"``, ``"adam"`` or ``"adamw"``: the optimizer used in (0-based) ``epoch``."""
    if cfg.optimizer == "adamw_sgd":
        return "adamw" if epoch < cfg.switch_epoch else "sgd"
    return cfg.optimizer


def parameter_groups(modules: Iterable[nn.Module], weight_decay: float) -> list[dict]:
    """Two groups: weights with decay; biases, norm weights and embeddings without."""
    decay, no_decay, seen = [], [], set()
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if param.ndim <= 1 or any(key in name for key in _NO_DECAY_NAMES):
                no_decay.append(param)
            else:
                decay.append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return [g for g in groups if g["params"]]


def build_optimizer(cfg: TrainConfig, modules: Iterable[nn.Module], kind: str) -> torch.optim.Optimizer:
    """The optimizer of ``kind`` (see :func:`optimizer_kind`) over ``modules``' parameters.

    Each param group remembers its peak learning rate in ``"peak_lr"``; :class:`LRSchedule`
    scales it every step. After an AdamW -> SGD switch SGD uses ``switch_lr`` and
    ``switch_weight_decay``.
    """
    switched = cfg.optimizer == "adamw_sgd" and kind == "sgd"
    lr = cfg.switch_lr if switched else cfg.lr
    weight_decay = cfg.switch_weight_decay if switched else cfg.weight_decay
    groups = parameter_groups(modules, weight_decay)
    if kind == "sgd":
        optimizer = torch.optim.SGD(groups, lr=lr, momentum=cfg.momentum, nesterov=cfg.momentum > 0)
    elif kind == "adam":
        optimizer = torch.optim.Adam(groups, lr=lr)
    elif kind == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=lr)
    else:  # pragma: no cover - validated by TrainConfig
        raise ValueError(f"unknown optimizer kind {kind!r}")
    for group in optimizer.param_groups:
        group["peak_lr"] = lr
    return optimizer


class LRSchedule:
    """Learning-rate factor per global step (see the module docstring).

    ``LRSchedule(cfg, steps_per_epoch)(step)`` -> factor in (0, 1]; :meth:`apply` writes
    ``peak_lr * factor`` into every param group and returns the lr.
    """

    def __init__(self, cfg: TrainConfig, steps_per_epoch: int, num_epochs: int | None = None,
                 max_warmup_share: float = 1.0):
        self.kind = cfg.scheduler
        self.steps_per_epoch = max(1, int(steps_per_epoch))
        self.warmup_epochs = cfg.warmup_epochs
        self.max_warmup_share = max_warmup_share  # a planned run keeps its warmup short of the whole run
        self.step_size, self.gamma = cfg.step_size, cfg.gamma
        self.anchor: tuple[int, float] | None = None
        self.total_steps = 0
        self.set_num_epochs(num_epochs or cfg.num_epochs or DEFAULT_NUM_EPOCHS)

    def set_num_epochs(self, num_epochs: int, at_step: int | None = None) -> None:
        """Span the schedule over ``num_epochs``.

        ``at_step``: the global step at which a running plan changes (a time-budgeted run
        re-plans after every epoch). Past the warmup, the cosine then continues from the factor
        it had reached down to the floor at the new end, so the learning rate never jumps,
        whether the plan grows or shrinks; within the warmup the warmup simply goes on.
        """
        before = self(at_step) if at_step is not None and self.total_steps else None
        self.num_epochs = int(num_epochs)
        self.total_steps = self.num_epochs * self.steps_per_epoch
        self.warmup_steps = min(round(self.warmup_epochs * self.steps_per_epoch),
                                int(self.max_warmup_share * self.total_steps), self.total_steps - 1)
        self.anchor = None
        if before is not None and self.kind == "cosine" and at_step >= self.warmup_steps:
            self.anchor = (int(at_step), before)

    def state_dict(self) -> dict:
        return {"num_epochs": self.num_epochs, "anchor": list(self.anchor) if self.anchor else None}

    def load_state_dict(self, state: dict) -> None:
        self.set_num_epochs(int(state["num_epochs"]))
        self.anchor = tuple(state["anchor"]) if state.get("anchor") else None

    def __call__(self, step: int) -> float:
        if self.anchor is not None and step >= self.anchor[0]:  # a re-planned cosine
            start, top = self.anchor
            progress = min(1.0, (step - start) / max(1, self.total_steps - 1 - start))
            return COSINE_FLOOR + (top - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
        if step < self.warmup_steps:
            return WARMUP_START + (1 - WARMUP_START) * step / self.warmup_steps
        if self.kind == "cosine":
            span = max(1, self.total_steps - 1 - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return COSINE_FLOOR + (1 - COSINE_FLOOR) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.kind == "step":
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_size)
        return 1.0

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        factor = self(step)
        for group in optimizer.param_groups:
            group["lr"] = group["peak_lr"] * factor
        return optimizer.param_groups[0]["lr"]


class EarlyStopping:
    """Track ``metric`` (higher is better, except ``val_loss``) and stop after ``patience``
    epochs without improvement (``patience=0``: never stop)."""

    def __init__(self, metric: str, patience: int):
        self.metric, self.patience = metric, patience
        self.mode = "min" if metric == "val_loss" else "max"
        self.best: float | None = None
        self.best_epoch = 0
        self.bad_epochs = 0

    def update(self, value: float | None, epoch: int) -> bool:
        """Record ``epoch``'s value; True when it is the best so far. ``None`` (no validation)
        counts as an improvement, so the latest epoch is the best."""
        if value is None or not math.isfinite(value):
            improved = value is None
        elif self.best is None:
            improved = True
        else:
            improved = value < self.best if self.mode == "min" else value > self.best
        if improved:
            self.best, self.best_epoch = value, epoch
        self.bad_epochs = epoch - self.best_epoch  # epochs validated every N count as N
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict:
        return {"metric": self.metric, "patience": self.patience, "best": self.best,
                "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict) -> None:
        if state.get("metric") == self.metric:  # a changed metric starts afresh
            self.best, self.best_epoch, self.bad_epochs = state["best"], state["best_epoch"], state["bad_epochs"]
