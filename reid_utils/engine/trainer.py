"""The orchestration behind :func:`reid_utils.engine.fit`: data, model, losses, optimizer,
resume, validation, checkpoints, history and logging for one training run.

:class:`TrainingRun` holds the state of one run so that a checkpoint captures all of it. It
calls :func:`reid_utils.engine.loop.train_one_epoch` and :func:`reid_utils.engine.loop.evaluate`; the
file layout of ``out_dir`` and the history's keys are documented in :mod:`reid_utils.engine.loop`.
"""
from __future__ import annotations

import copy
import glob
import json
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config import TrainConfig
from ..data import load_dataset, load_image_tensor, load_split, make_split, resolve_data_root, save_split
from ..errors import CheckpointError, ConfigError, ReidError, TrainingError
from ..io import atomic_write_text, ensure_dir
from ..losses import MultiTaskLoss, positive_ratios
from ..models import build_model_from_config
from ..visualize.history import plot_history
from . import loop
from .batches import make_train_batches
from .budget import DEFAULT_NUM_EPOCHS, WARM_STEPS, EpochPlanner
from .checkpoint import check_compatible, check_resumable, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .distill import teacher_targets
from .inference import CachedImages
from .loop import LOSS_PARTS
from .optim import EarlyStopping, LRSchedule, build_optimizer, optimizer_kind
from .runtime import (
    DistInfo,
    barrier,
    broadcast_from_main,
    distributed_session,
    fast_path as make_fast_path,
    make_grad_scaler,
    maybe_compile,
    select_device,
    unwrap_model,
)
from .threads import ThreadGovernor

#: The cosine's span while a time-budgeted run times its first steps (they are all in the warmup).
PROVISIONAL_EPOCHS = 10_000
#: A time-budgeted run's warmup takes at most this share of the planned steps.
MAX_PLANNED_WARMUP_SHARE = 0.2
#: Epochs at least this long redraw curves.png every epoch; shorter runs draw it at the end.
LIVE_CURVES_SECONDS = 20.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class TrainingRun:
    """State of one :func:`fit` call (kept in one place so checkpoints capture all of it)."""

    def __init__(self, cfg: TrainConfig, device: torch.device, info: DistInfo):
        """Nothing is read or built here; :meth:`run` does the work."""
        self.cfg, self.info = cfg, info
        self.out_dir = Path(cfg.out_dir)
        self.last_path, self.best_path = self.out_dir / "last.pt", self.out_dir / "best.pt"
        self.verbose = cfg.progress and info.is_main
        self.fp = make_fast_path(device, cfg.precision, cfg.compile, cfg.num_threads or None).apply()
        # threads = the cores other processes leave free (auto threads on a CPU only)
        self.governor = ThreadGovernor(self.fp.num_threads or 1, self.log) \
            if device.type == "cpu" and not cfg.num_threads else None

    def log(self, message: str) -> None:
        if self.verbose:
            print(message, file=sys.stderr, flush=True)

    # -- setup ----------------------------------------------------------------------------------
    def _split(self):
        """Load the dataset and the split file of ``out_dir`` (made once, on rank 0)."""
        cfg = self.cfg
        index = load_dataset(resolve_data_root(cfg.data_root))
        if cfg.subset_ids:
            keep = set(sorted(index.train_pids)[: cfg.subset_ids])
            index.train = [r for r in index.train if r.pid in keep]
        path = Path(cfg.split_file) if cfg.split_file else self.out_dir / "split.json"
        if self.info.is_main and not path.exists():
            save_split(make_split(index, cfg.val_fraction, cfg.split_seed), path)
            self.made_split = path  # removed again if the run fails on its input before saving anything
        barrier(self.info)
        split = load_split(path, index)
        if cfg.split_file is None and (abs(split.val_fraction - cfg.val_fraction) > 1e-9 or split.seed != cfg.split_seed):
            raise ConfigError(
                f"{path} holds a split with val_fraction={split.val_fraction}, split_seed={split.seed}; the config "
                f"asks for val_fraction={cfg.val_fraction}, split_seed={cfg.split_seed}: use another out_dir, "
                "delete the split file, or pass split_file"
            )
        return index, split, path

    def undo(self) -> None:
        """After a failure on the input (ReidError) before any checkpoint was saved: remove the
        split file and the out_dir this run created, so that nothing of it stays behind."""
        if not self.info.is_main or self.last_path.exists():
            return
        made_split = getattr(self, "made_split", None)
        if made_split is not None:
            made_split.unlink(missing_ok=True)
        if getattr(self, "made_dir", False) and self.out_dir.is_dir() and not any(self.out_dir.iterdir()):
            self.out_dir.rmdir()

    def _clean_temporary_files(self) -> None:
        """Remove temporary files left by a write that was killed (atomic writes never leave a
        half-written checkpoint, but cannot delete their temporary file after SIGKILL)."""
        if self.info.is_main:
            for name in ("last.pt", "best.pt", "history.json", "curves.png", "split.json"):
                for tmp in glob.glob(str(self.out_dir / f".{name}.*.tmp")):
                    try:
                        os.unlink(tmp)
                    except OSError:
                        pass

    def run(self) -> dict:
        """Train (or continue) and return the history; see :func:`reid_utils.engine.fit`."""
        cfg, info = self.cfg, self.info
        start_time = self.start_time = time.monotonic()
        self.made_dir = not self.out_dir.exists()
        if info.is_main:
            ensure_dir(self.out_dir)  # a file in the way or a read-only folder: OutputError
        self._clean_temporary_files()
        ckpt = self._checkpoint_to_resume()
        self._setup(ckpt)
        if self.governor is not None:
            self.governor.update()
        # an epoch's training cost for the budget: from one epoch's end to the next one's, so that
        # saving the checkpoints (fsync'ed, tens of MB) counts; its validation pass is timed apart
        cycle_seconds: list[float] = []
        cycle_start = time.monotonic()
        epoch = self.start_epoch
        while epoch < self.num_epochs:  # a time-budgeted run plans num_epochs during epoch 1
            if self.stopped:
                break
            epoch_start = time.monotonic()
            row = self._train(epoch)
            validated = self.has_val and ((epoch + 1) % cfg.val_every == 0 or epoch + 1 >= self.num_epochs)
            validation_seconds = self._validate_into(row) if validated else 0.0
            cycle_seconds.append(time.monotonic() - cycle_start - validation_seconds)
            if self.planner is not None:
                self._set_num_epochs(self.planner.after_epoch(epoch + 1, cycle_seconds, self.validation_seconds),
                                     at_step=(epoch + 1) * self.steps_per_epoch)
            over_budget = bool(cfg.max_minutes) and (  # would the next epoch, validated, end past the budget?
                time.monotonic() - start_time + float(np.mean(cycle_seconds)) + self._validation_estimate()
                > cfg.max_minutes * 60
            )
            if self.has_val and not validated and (over_budget or epoch + 1 >= self.num_epochs):
                self._validate_into(row)  # the run ends here (a shrunk plan, the budget): its last epoch is validated
                validated = True
            row["epoch_seconds"] = time.monotonic() - epoch_start
            _append_row(self.history, row)
            cycle_start = time.monotonic()
            if self.governor is not None:
                self.governor.update()
            improved = False  # an epoch without validation says nothing about best.pt or patience
            if validated or not self.has_val:
                improved = self.early.update(row.get(cfg.early_stopping_metric) if self.has_val else None, epoch + 1)
            self.stopped = bool(broadcast_from_main(self.early.should_stop or over_budget, info))
            if info.is_main:
                self._save(epoch + 1, improved)
            self.log(_epoch_line(row, self.num_epochs, improved and self.has_val))
            if self.stopped:
                reason = (f"no {cfg.early_stopping_metric} improvement for {cfg.patience} epochs"
                          if self.early.should_stop else f"time budget of {cfg.max_minutes} min")
                self.log(f"stopping after epoch {epoch + 1}: {reason}")
            barrier(info)
            epoch += 1
        if self.best_path.exists():
            best = load_checkpoint(self.best_path, map_location=self.fp.device)
            self.model.load_state_dict(best["model"])
            self.log(f"best epoch {best['epoch']} ({cfg.early_stopping_metric} {_fmt(self.early.best)}) "
                     f"reloaded from {self.best_path}")
        return self.history

    def _checkpoint_to_resume(self) -> dict | None:
        if self.cfg.resume and self.last_path.exists():
            return load_checkpoint(self.last_path)
        if self.cfg.resume:
            self.log(f"resume: no {self.last_path} yet, starting a new run")
        elif self.last_path.exists():
            self.log(f"starting a new run in {self.out_dir}: its checkpoints will be replaced (resume=True continues)")
        return None

    def _setup(self, ckpt: dict | None) -> None:
        """Split, model, losses, batches, optimizer and schedule; restored from ``ckpt`` if given."""
        cfg, info, fp = self.cfg, self.info, self.fp
        _, self.split, split_path = self._split()
        num_ids = self.split.num_train_ids
        if ckpt is not None:
            check_compatible(ckpt, cfg, num_ids, self.last_path)
            check_resumable(ckpt, cfg, self.last_path)
            if {int(k): int(v) for k, v in ckpt["pid_to_label"].items()} != self.split.pid_to_label:
                raise CheckpointError(f"{self.last_path}: its identity mapping differs from the split in {split_path}")

        seed_everything(cfg.seed + info.rank)
        self.model = build_model_from_config(cfg, num_ids)
        self.loss_fn, self.val_loss_fn = make_losses(cfg, self.model, self.split.train)
        if ckpt is not None:
            self.model.load_state_dict(ckpt["model"])
            if "loss" in ckpt:
                self.loss_fn.load_state_dict(ckpt["loss"])
        fp.prepare(self.model)
        self.loss_fn.to(fp.device)
        if cfg.sync_bn and info.distributed:
            self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.train_model = self.model
        if info.distributed:
            ids = [fp.device.index] if fp.device.type == "cuda" else None
            self.train_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                   find_unused_parameters=False)
        self.train_model = maybe_compile(self.train_model, fp)

        self.batches = make_train_batches(cfg, self.split, fp, info, progress=self.verbose)
        if cfg.uses_distillation:
            self._distillation_targets()
        self.steps_per_epoch = min(len(self.batches), cfg.max_steps) if cfg.max_steps else len(self.batches)
        self.planner = None
        if ckpt is not None and cfg.max_minutes and ckpt.get("planned_epochs"):
            self.num_epochs = int(ckpt["planned_epochs"])  # the plan of the interrupted budgeted run
        elif cfg.max_minutes and ckpt is None:
            self.planner = EpochPlanner(
                cfg.max_minutes * 60, cfg.num_epochs, self.steps_per_epoch, cfg.batch_size,
                len(self.split.val_query) + len(self.split.val_gallery), cfg.flip_eval, self.start_time, self.log,
                val_every=cfg.val_every,
            )
            self.num_epochs = cfg.num_epochs or PROVISIONAL_EPOCHS  # until the first steps are timed
        else:
            self.num_epochs = cfg.num_epochs or DEFAULT_NUM_EPOCHS
        self.schedule = LRSchedule(cfg, self.steps_per_epoch, self.num_epochs,
                                   max_warmup_share=MAX_PLANNED_WARMUP_SHARE if cfg.max_minutes else 1.0)
        resumed_plan = ckpt is not None and cfg.max_minutes and ckpt.get("planned_epochs")
        if resumed_plan and (ckpt.get("scheduler") or {}).get("num_epochs"):
            self.schedule.load_state_dict(ckpt["scheduler"])  # a re-planned cosine continues as it was
        self.scaler = make_grad_scaler(fp)
        self.early = EarlyStopping(cfg.early_stopping_metric, cfg.patience)
        self.history: dict[str, list] = {}
        self.start_epoch, self.stopped = 0, False
        if ckpt is not None:
            self.start_epoch = int(ckpt["epoch"])
            self.history = {k: list(v) for k, v in ckpt.get("history", {}).items()}
            self.early.load_state_dict(ckpt.get("early_stopping", {}))
            self.stopped = bool(ckpt.get("stopped", False))
        self.kind = optimizer_kind(cfg, self.start_epoch)
        self.optimizer = build_optimizer(cfg, [self.model, self.loss_fn], self.kind)
        if ckpt is not None:
            self._restore_training_state(ckpt)

        self.has_val = bool(self.split.val_query)
        self.validation_seconds: float | None = None  # the latest validation pass, once measured
        self.val_images = None
        if self.has_val and info.is_main and cfg.cache_images:
            self.val_images = CachedImages.from_records(
                list(self.split.val_query) + list(self.split.val_gallery), cfg.height, cfg.width
            )
        self.log(
            f"{cfg.model}: {num_ids} training ids / {len(self.split.train)} images, validation "
            f"{len(self.split.val_query)} queries / {len(self.split.val_gallery)} gallery | {fp.describe()} | "
            f"{self.steps_per_epoch} steps of {cfg.batch_size} per epoch | out_dir {self.out_dir}"
        )

    def _distillation_targets(self) -> None:
        """The teachers' soft targets for every training image (inside the time budget)."""
        cfg, fp, start = self.cfg, self.fp, time.monotonic()
        images = getattr(self.batches, "images", None)
        if images is None:  # the DataLoader path decodes per epoch: decode once more here
            images = load_image_tensor(self.split.train, image_size=(cfg.height, cfg.width))
        form = unwrap_model(self.model).attribute_form
        ids, attributes = teacher_targets(cfg, images, self.split.pid_to_label, form, fp)
        self.loss_fn.set_teacher_targets(ids.to(fp.device), attributes.to(fp.device))
        self.log(f"distillation: soft targets of {len(cfg.teacher_paths)} teacher(s) for {len(images)} training "
                 f"images in {time.monotonic() - start:.0f} s (weight {cfg.distill_weight}, "
                 f"identity temperature {cfg.distill_temperature})")

    def _restore_training_state(self, ckpt: dict) -> None:
        cfg = self.cfg
        if ckpt.get("optimizer") is not None and ckpt.get("optimizer_kind") == self.kind:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            peak = cfg.switch_lr if cfg.optimizer == "adamw_sgd" and self.kind == "sgd" else cfg.lr
            for group in self.optimizer.param_groups:  # a resumed run may change lr: the config wins
                group["peak_lr"] = peak
        if self.scaler is not None and ckpt.get("grad_scaler"):
            self.scaler.load_state_dict(ckpt["grad_scaler"])
        if ckpt.get("sampler"):
            self.batches.sampler.load_state_dict(ckpt["sampler"])
        if ckpt.get("rng") and self.info.world_size == ckpt.get("world_size", 1):
            set_rng_state(ckpt["rng"])
        self.log(f"resumed from {self.last_path} after epoch {self.start_epoch}")

    def _train(self, epoch: int) -> dict:
        """One epoch of training; returns the history row (validation adds to it)."""
        cfg, fp = self.cfg, self.fp
        if optimizer_kind(cfg, epoch) != self.kind:  # the AdamW -> SGD switch
            self.kind = optimizer_kind(cfg, epoch)
            self.optimizer = build_optimizer(cfg, [self.model, self.loss_fn], self.kind)
            self.log(f"epoch {epoch + 1}: switching to {self.kind}")
        try:
            train = loop.train_one_epoch(  # looked up at call time: tests patch it
                self.train_model, self.batches.epoch(epoch), self.loss_fn, self.optimizer, fp, epoch,
                scaler=self.scaler, schedule=self.schedule, start_step=epoch * self.steps_per_epoch,
                max_steps=self.steps_per_epoch, clip_grad_norm=cfg.clip_grad_norm, progress=self.verbose,
                on_step=self._plan_on_step if self.planner is not None and epoch == 0 else None,
            )
        except TrainingError as error:
            kept = (f"the last good checkpoint {self.last_path} (epoch {epoch}) is kept"
                    if self.last_path.exists() else "no checkpoint was written yet")
            raise TrainingError(f"{error}; training stopped, {kept}. Try a lower lr or precision='fp32'.") from None
        return {
            "epoch": epoch + 1,
            "lr": train["lr"],
            "train_loss": train["loss"],
            **{f"train_{part}_loss": train[part] for part in LOSS_PARTS},
            "train_images_per_second": train["images_per_second"],
        }

    def _validate_into(self, row: dict) -> float:
        """Validate on rank 0, add the metrics to ``row`` and return the seconds it took."""
        start, cfg = time.monotonic(), self.cfg
        if self.info.is_main:
            row.update(loop.evaluate(
                self.model, self.split, self.fp, val_images=self.val_images, val_loss_fn=self.val_loss_fn,
                height=cfg.height, width=cfg.width, batch_size=cfg.eval_batch_size, flip=cfg.flip_eval,
                num_workers=None if cfg.num_workers < 0 else cfg.num_workers,
            ))
        self.validation_seconds = time.monotonic() - start
        return self.validation_seconds

    def _validation_estimate(self) -> float:
        """Seconds of one validation pass: as last measured, else the plan's estimate, else 0."""
        if not self.has_val:
            return 0.0
        if self.validation_seconds is not None:
            return self.validation_seconds
        return self.planner.validation_seconds if self.planner is not None else 0.0

    def _plan_on_step(self, step: int) -> None:
        if self.fp.device.type == "cuda" and step in (WARM_STEPS - 1, self.planner.plan_step):
            torch.cuda.synchronize(self.fp.device)  # time the steps, not their launches
        planned = self.planner.on_step(step)
        if planned is not None:
            self._set_num_epochs(planned, at_step=step + 1)

    def _set_num_epochs(self, num_epochs: int, at_step: int | None = None) -> None:
        num_epochs = broadcast_from_main(num_epochs, self.info)  # each rank times itself; rank 0's plan holds
        if num_epochs != self.num_epochs:
            self.num_epochs = num_epochs
            self.schedule.set_num_epochs(num_epochs, at_step)

    def _save(self, epoch: int, improved: bool) -> None:
        """last.pt (everything to resume), best.pt when improved (without the optimizer),
        history.json and curves.png; all atomic."""
        state = dict(
            optimizer=self.optimizer.state_dict(),
            optimizer_kind=self.kind,
            scheduler={"global_step": epoch * self.steps_per_epoch, "steps_per_epoch": self.steps_per_epoch,
                       **self.schedule.state_dict()},
            grad_scaler=self.scaler.state_dict() if self.scaler is not None else None,
            rng=rng_state(),
            sampler=self.batches.sampler.state_dict(),
            early_stopping=self.early.state_dict(),
            loss=self.loss_fn.state_dict(),
            stopped=self.stopped,  # early stopping or the time budget: a resume then trains nothing
            planned_epochs=self.num_epochs if self.cfg.max_minutes else None,
            world_size=self.info.world_size,
        )
        args = (self.model, self.cfg, self.split.pid_to_label, epoch, self.history)
        if improved:
            save_checkpoint(self.best_path, *args, **{k: v for k, v in state.items() if k not in ("optimizer", "grad_scaler")})
        save_checkpoint(self.last_path, *args, **state)
        # curves.png after every epoch lets a long run be watched; on short epochs the plot
        # would cost more than the epoch, so it is drawn at the end of the run only
        last = epoch >= self.num_epochs or self.stopped
        self._write_history(self.history, plot=last or self.history["epoch_seconds"][-1] >= LIVE_CURVES_SECONDS)

    def _write_history(self, history: dict, plot: bool = True) -> None:
        atomic_write_text(self.out_dir / "history.json", json.dumps(history, indent=1) + "\n")
        if not plot:
            return
        try:
            plot_history(history, path=self.out_dir / "curves.png")
        except Exception as error:  # a plotting problem must never stop training
            self.log(f"could not draw curves.png: {error}")


def make_losses(cfg: TrainConfig, model: nn.Module, train_records) -> tuple[nn.Module, nn.Module]:
    """The training MultiTaskLoss of ``cfg`` for ``model``, and the validation loss (the
    attribute term alone). Attribute weights come from ``train_records``' positive ratios."""
    form = unwrap_model(model).attribute_form
    ratios = positive_ratios(np.stack([np.asarray(r.attributes) for r in train_records]))
    loss_fn = MultiTaskLoss(
        alpha=cfg.alpha, attribute_form=form, id_loss=cfg.id_loss, label_smoothing=cfg.label_smoothing,
        am_scale=cfg.am_scale, am_margin=cfg.am_margin, triplet_weight=cfg.triplet_weight,
        triplet_margin=cfg.triplet_margin, center_weight=cfg.center_weight, num_ids=unwrap_model(model).num_ids,
        feat_dim=_feature_dim(unwrap_model(model), cfg), attribute_weighting=cfg.attribute_weighting,
        positive_ratios=ratios, distill_weight=cfg.distill_weight if cfg.uses_distillation else 0.0,
        distill_temperature=cfg.distill_temperature,
    )
    val_loss_fn = MultiTaskLoss(alpha=1.0, attribute_form=form, attribute_weighting=cfg.attribute_weighting,
                                positive_ratios=ratios)
    return loss_fn, val_loss_fn


def _append_row(history: dict, row: dict) -> None:
    """Append one epoch; a key missing on either side gets NaN, so every list has one value per epoch."""
    done = len(history.get("epoch", []))
    for key in list(history) + [k for k in row if k not in history]:
        history.setdefault(key, [float("nan")] * done).append(row.get(key, float("nan")))


def _feature_dim(model: nn.Module, cfg: TrainConfig) -> int:
    """Width of ``outputs["features"]`` (for the center loss), probed on a copy of the model
    so that its BatchNorm statistics stay untouched."""
    if cfg.center_weight <= 0:
        return int(model.embedding_dim)
    probe = copy.deepcopy(model).train()
    with torch.no_grad():
        features = probe(torch.zeros(2, 3, cfg.height, cfg.width, device=next(model.parameters()).device))["features"]
    return int(features.shape[1])


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _epoch_line(row: dict, num_epochs: int, improved: bool) -> str:
    parts = [f"epoch {row['epoch']}/{num_epochs}", f"loss {row['train_loss']:.4f}"]
    parts.append("(" + " ".join(f"{p} {row[f'train_{p}_loss']:.3f}" for p in LOSS_PARTS if row[f"train_{p}_loss"]) + ")")
    if "mAP" in row:
        parts.append(f"val mAP {100 * row['mAP']:.1f} rank-1 {100 * row['rank1']:.1f}")
    if "attribute_accuracy" in row:
        parts.append(f"attributes {100 * row['attribute_accuracy']:.1f}%")
    parts.append(f"lr {row['lr']:.2e}")
    parts.append(f"{row['train_images_per_second']:.0f} img/s")
    parts.append(f"{row['epoch_seconds']:.0f} s")
    return "  ".join(parts) + ("  *" if improved else "")


# ---------------------------------------------------------------------------------------------
# The whole run


def main(**overrides) -> dict:
    """Train with ``TrainConfig.from_overrides(**overrides)`` and return the history.

    ``main(model="apr", num_epochs=30, out_dir="/content/drive/MyDrive/runs/apr", resume=True)``.
    An unknown option raises ConfigError listing the valid ones.
    """
    return fit(TrainConfig.from_overrides(**overrides))


def fit(cfg: TrainConfig) -> dict:
    """Train a model as ``cfg`` says (see the module docstring); returns the history.

    At the end the model weights of the best epoch are in ``out_dir/best.pt`` (and the last
    epoch's in ``out_dir/last.pt``); rebuild the model with
    :func:`~reid_utils.engine.load_model_from_checkpoint`.
    """
    if isinstance(cfg, dict):
        cfg = TrainConfig.from_overrides(**cfg)
    device = select_device(cfg.device)
    threads = torch.get_num_threads()
    try:
        with distributed_session(device) as info:
            if info.distributed and device.type == "cuda":
                device = torch.device("cuda", info.local_rank)
            run = TrainingRun(cfg, device, info)
            try:
                return run.run()
            except ReidError:  # bad input (a batch too large, a corrupt image): nothing left behind
                run.undo()
                raise
    finally:
        torch.set_num_threads(threads)  # the fast path may have changed it for the run

