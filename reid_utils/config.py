"""One typed training config, shared by the notebooks' ``main(**overrides)``, the command line
(``python -m reid_utils train --lr 0.001 ...``) and the checkpoint.

::

    cfg = TrainConfig.from_overrides(model="la_transformer", num_epochs=20)   # per-model defaults
    cfg = cfg.replace(lr=3e-4)                                                 # validated copy
    TrainConfig.from_overrides(lr_rate=0.1)   # ConfigError: unknown option 'lr_rate' (did you mean 'lr'?) ...

The defaults are the recommended recipe for training **from scratch on a CPU at 128x64**
(no ImageNet weights offline). With a GPU and internet, ``pretrained=True, depth=50,
height=256, width=128`` is the papers' setting.

Precedence in :meth:`TrainConfig.from_overrides` (later wins): the field defaults below, the
chosen optimizer's lr / weight decay (:data:`OPTIMIZER_DEFAULTS`), the model's defaults
(:func:`defaults_for`), the smoke settings (``smoke=True``), then the caller's overrides.
"""
from __future__ import annotations

import dataclasses
import difflib
import inspect
import re
import types
import typing
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError
from .models.registry import MODEL_NAMES, models_with_option

EARLY_STOPPING_METRICS = ("mAP", "rank1", "course_mAP", "course_rank1", "attribute_accuracy", "score", "val_loss")
ModelName = Literal["resnet50", "apr", "convhead", "self_attention", "cbam", "alm", "la_transformer", "osnet"]
EarlyStoppingMetric = Literal["mAP", "rank1", "course_mAP", "course_rank1", "attribute_accuracy", "score", "val_loss"]


@dataclass
class TrainConfig:
    """Every hyperparameter of a training run (see the module docstring for the precedence)."""
    # --- data --------------------------------------------------------------------------------
    data_root: str | None = None  # dataset folder; None -> $REID_DATA_ROOT -> the bundled synthetic sample
    out_dir: str = "runs/train"  # checkpoints, history.json, curves.png, split.json (a Google Drive folder on Colab)
    # Input size. 256x128 is the papers' size (course images are 128x64, upsampled 2x); 128x64
    # keeps the native resolution and is about 4x cheaper in compute and memory: the CPU choice.
    height: int = 128  # input image height in pixels (256 on GPU, 128 on CPU)
    width: int = 64  # input image width in pixels (128 on GPU, 64 on CPU)
    val_fraction: float = 0.2  # share of training identities held out for validation (0: no validation)
    split_seed: int = 0  # seed of the identity-disjoint train/val split
    split_file: str | None = None  # split JSON shared by the notebooks; None -> out_dir/split.json (made once, reused)
    subset_ids: int = 0  # keep only this many training identities (quick experiments); 0 = all
    cache_images: bool = True  # decode the training images once into RAM and augment whole batches on-tensor
    num_workers: int = -1  # DataLoader workers when not caching / for evaluation; -1 = auto for the device

    # --- model -------------------------------------------------------------------------------
    model: ModelName = "apr"  # registry name (build_model)
    depth: int = 18  # ResNet depth of the CNN models: 18, 34 or 50 (50 with ImageNet weights on GPU)
    last_stride: int = 1  # 1 keeps a 2x larger last feature map (better re-ID, a little slower); 2 = torchvision
    pretrained: bool = False  # ImageNet backbone weights from torchvision (needs internet; offline: weights_path)
    weights_path: str | None = None  # local backbone weights file instead of downloading
    attribute_form: Literal["groups", "binary"] | None = None  # attribute head; None = the model's own (cbam/alm: binary)
    dropout: float | None = None  # dropout in the model's head; None = the model's default (apr: 0.5)
    bottleneck_dim: int | None = None  # apr / la_transformer bottleneck width; None = model default
    attribute_pooling: Literal["global", "parts"] | None = None  # apr/osnet: parts = body-part groups also read their half
    head_channels: int | None = None  # convhead output channels; None = model default
    attention_heads: int | None = None  # self_attention heads; None = model default
    pyramid_dim: int | None = None  # alm feature-pyramid width d; None = model default (256)
    vit_patch_size: int | None = None  # la_transformer patch size; None = height // 16
    vit_embed_dim: int | None = None  # la_transformer token width; None = tiny (192) from scratch, 768 pretrained
    vit_depth: int | None = None  # la_transformer encoder blocks; None = 6 from scratch, 12 pretrained
    vit_heads: int | None = None  # la_transformer attention heads; None = 3 from scratch, 12 pretrained
    vit_dropout: float | None = None  # dropout inside the ViT encoder; None = model default
    lambda_global: float | None = None  # la_transformer lambda of f_i + lambda*G; None = model default (0.8)
    use_columns: bool | None = None  # la_transformer column parts as well as row parts; None = model default (True)

    # --- batches and schedule ----------------------------------------------------------------
    batch_p: int = 16  # identities per batch (PK sampling); batch size = batch_p * batch_k
    batch_k: int = 4  # images per identity in a batch
    num_epochs: int | None = None  # training epochs (the cosine spans them); None = 40, or planned from max_minutes
    max_steps: int = 0  # cap on steps per epoch (quick runs, smoke); 0 = the whole epoch
    max_minutes: float = 0.0  # time budget: plan the epochs (warmup + cosine) to end inside it; 0 = none
    optimizer: Literal["sgd", "adam", "adamw", "adamw_sgd"] = "adamw"  # sgd = Nesterov; adamw_sgd switches at switch_epoch
    lr: float = 1e-3  # peak learning rate (after warmup)
    weight_decay: float = 0.05  # decoupled (AdamW) or L2 (SGD/Adam); never on biases and norm layers
    momentum: float = 0.9  # SGD momentum (Nesterov)
    switch_epoch: int = 10  # adamw_sgd: first epoch (0-based) trained with SGD
    switch_lr: float = 0.01  # adamw_sgd: peak SGD learning rate after the switch
    switch_weight_decay: float = 5e-4  # adamw_sgd: SGD weight decay after the switch
    warmup_epochs: float = 2.0  # linear warmup from 10% of lr, per step
    scheduler: Literal["cosine", "step", "constant"] = "cosine"  # decay after warmup (cosine to 1% of lr at the end)
    step_size: int = 20  # step scheduler: epochs between decays
    gamma: float = 0.1  # step scheduler: decay factor
    clip_grad_norm: float = 0.0  # clip the gradient norm to this value; 0 = off

    # --- losses ------------------------------------------------------------------------------
    alpha: float = 0.5  # total = alpha * attribute loss + (1 - alpha) * identity loss + metric terms
    id_loss: Literal["ce", "amsoftmax"] = "ce"  # identity loss; amsoftmax uses a cosine classifier
    label_smoothing: float = 0.1  # identity cross-entropy label smoothing
    am_scale: float = 30.0  # AM-Softmax scale s
    am_margin: float = 0.35  # AM-Softmax margin m
    triplet_weight: float = 0.0  # batch-hard triplet weight; > 0 uses the PK sampler (apr: 0, CNN baselines: 1)
    triplet_margin: float | None = 0.3  # triplet margin; None = soft margin
    center_weight: float = 0.0  # center loss weight; > 0 uses the PK sampler
    attribute_weighting: Literal["none", "exp", "frequency"] = "none"  # attribute class weights from training ratios
    teachers: str = ""  # distillation: checkpoint(s) trained on this run's training ids, comma-separated; "" = off
    distill_weight: float = 1.0  # weight of the soft-target term when teachers are given
    distill_temperature: float = 4.0  # softmax temperature of the identity soft targets (attributes: 1)

    # --- augmentation (training only) --------------------------------------------------------
    augment: bool = True  # master switch for every augmentation below
    random_flip: bool = True  # horizontal flip with p = 0.5
    rotation: float = 5.0  # random rotation range in degrees
    pad: int | None = None  # pad-and-crop pixels; None = 10 at 256x128 scaled with the height (5 at 128x64)
    blur: float = 0.1  # probability of a 3x3 Gaussian blur
    sharpness: float = 0.1  # probability of a sharpness boost
    erasing: float = 0.5  # random erasing probability

    # --- validation and early stopping -------------------------------------------------------
    flip_eval: bool = True  # average features of each image and its mirror at evaluation
    eval_batch_size: int = 256  # images per forward pass at evaluation
    early_stopping_metric: EarlyStoppingMetric = "score"  # picks best.pt; score = mean of mAP and attribute accuracy
    patience: int = 10  # stop after this many epochs without improvement; 0 = never stop early
    val_every: int = 1  # validate after every N-th epoch and after the last (a time budget spends the rest on epochs)

    # --- runtime -----------------------------------------------------------------------------
    seed: int = 0  # seed of python, numpy, torch and the samplers
    device: str = "auto"  # auto (cuda, then mps, then cpu), cuda, cuda:N, mps or cpu
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"  # auto = the fast path; fp32 = plain
    compile: bool = False  # torch.compile the model (pays off for long runs; ~30 s to compile)
    num_threads: int = 0  # torch CPU threads; 0 = the cores available
    sync_bn: bool = False  # SyncBatchNorm across GPUs under torchrun
    resume: bool = False  # continue from out_dir/last.pt when it exists
    smoke: bool = False  # tiny, deterministic run for CI / nbval: CPU, fp32, one short epoch
    progress: bool = True  # tqdm bars and one log line per epoch on stderr

    # ------------------------------------------------------------------------------------------
    def __post_init__(self) -> None:
        _coerce_types(self)
        _validate(self)

    @property
    def batch_size(self) -> int:
        return self.batch_p * self.batch_k

    @property
    def uses_metric_loss(self) -> bool:
        """Triplet or center loss: batches need several images per identity (PK sampler)."""
        return self.triplet_weight > 0 or self.center_weight > 0

    @property
    def teacher_paths(self) -> list[str]:
        """The distillation teachers' checkpoint paths (``teachers`` split at commas)."""
        return [p.strip() for p in self.teachers.split(",") if p.strip()]

    @property
    def uses_distillation(self) -> bool:
        """Teachers given and a positive ``distill_weight``: the run computes their targets."""
        return bool(self.teacher_paths) and self.distill_weight > 0

    @property
    def pad_pixels(self) -> int:
        return self.pad if self.pad is not None else max(1, round(10 * self.height / 256))

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_overrides(cls, **overrides) -> "TrainConfig":
        """The config for ``model`` with per-model defaults, then ``overrides`` on top.

        Unknown names raise ConfigError listing the valid ones (with a close-match hint);
        out-of-range values raise ConfigError too.
        """
        check_names(overrides)
        model = overrides.get("model", cls.model)
        if model not in MODEL_NAMES:
            raise ConfigError(f"model={model!r} is not one of {', '.join(MODEL_NAMES)}")
        model_defaults = defaults_for(model)
        optimizer = overrides.get("optimizer", model_defaults.get("optimizer", cls.optimizer))
        if optimizer not in OPTIMIZER_DEFAULTS:
            raise ConfigError(f"optimizer={optimizer!r} is not one of {', '.join(OPTIMIZER_DEFAULTS)}")
        if optimizer != model_defaults.get("optimizer", cls.optimizer):
            # the model's tuned lr / weight decay belong to its own optimizer
            model_defaults = {k: v for k, v in model_defaults.items() if k not in OPTIMIZER_DEFAULTS[optimizer]}
        values = {**OPTIMIZER_DEFAULTS[optimizer], **model_defaults}
        if overrides.get("smoke", False):
            values.update(SMOKE_SETTINGS)
        values.update(overrides)
        return cls(**values)

    def replace(self, **changes) -> "TrainConfig":
        """A validated copy with ``changes`` (no per-model defaults are re-applied)."""
        check_names(changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        """Plain dict of every field (JSON- and checkpoint-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict, strict: bool = True) -> "TrainConfig":
        """Rebuild from :meth:`to_dict`. ``strict=False`` drops unknown keys (an older or newer
        version's fields) instead of raising."""
        if not strict:
            data = {k: v for k, v in data.items() if k in cls.field_names()}
        check_names(data)
        return cls(**data)


#: lr and weight decay that suit each optimizer (applied unless given explicitly).
OPTIMIZER_DEFAULTS: dict[str, dict] = {
    "sgd": {"lr": 0.05, "weight_decay": 5e-4},
    "adam": {"lr": 3.5e-4, "weight_decay": 5e-4},
    "adamw": {"lr": 1e-3, "weight_decay": 0.05},
    "adamw_sgd": {"lr": 1e-3, "weight_decay": 0.05},
}

#: What ``smoke=True`` changes (explicit overrides still win): deterministic and fast enough
#: for nbval on any CPU (fp32: bf16 results would differ between CPUs).
SMOKE_SETTINGS: dict = {
    "device": "cpu",
    "precision": "fp32",
    "compile": False,
    "num_epochs": 1,
    "max_steps": 3,
    "height": 64,
    "width": 32,
    "batch_p": 4,
    "batch_k": 2,
    "num_workers": 0,
    "num_threads": 1,
    "progress": False,
    "warmup_epochs": 0.0,
}

_MODEL_DEFAULTS: dict[str, dict] = {
    # APR-Net trains with identity + attribute losses (as in the paper), on shuffled batches.
    # A triplet loss did not help it on the real course data: with triplet_weight=1 on the
    # pooled trunk feature (PK batches) the 60-minute fp32 run ended at course mAP 72.5 and
    # rank-1 90.7 against 73.6 and 92.1 without (README "Ablations"), and it was worse still
    # on the dropout-regularised embedding (identity loss stuck near ln(num_ids)).
    "apr": {},
    # the APR-Net head on an OSNet trunk: the same recipe, so the two compare trunk against trunk
    "osnet": {},
    # BN-neck style baselines: identity CE + batch-hard triplet on the pooled feature, PK batches
    "resnet50": {"triplet_weight": 1.0},
    "convhead": {"triplet_weight": 1.0},
    "self_attention": {"triplet_weight": 1.0},
    # attribute models (notebook 02): weighted BCE on the binary form, shuffled batches
    "cbam": {"attribute_weighting": "frequency", "triplet_weight": 0.0, "early_stopping_metric": "attribute_accuracy"},
    "alm": {"attribute_weighting": "exp", "triplet_weight": 0.0, "early_stopping_metric": "attribute_accuracy"},
    # LA-Transformer: AM-Softmax part classifiers + triplet; a small ViT from scratch likes
    # AdamW, a longer warmup and clipped gradients
    "la_transformer": {
        "id_loss": "amsoftmax",
        "triplet_weight": 1.0,
        "optimizer": "adamw",
        "lr": 5e-4,
        "weight_decay": 0.05,
        "warmup_epochs": 5.0,
        "clip_grad_norm": 5.0,
    },
}


def defaults_for(model: str) -> dict:
    """The overrides that make ``model``'s recipe (on top of the field defaults)."""
    if model not in _MODEL_DEFAULTS:
        raise ConfigError(f"model={model!r} is not one of {', '.join(MODEL_NAMES)}")
    return dict(_MODEL_DEFAULTS[model])


def check_names(values: dict) -> None:
    """ConfigError for names that are not TrainConfig fields, with a did-you-mean hint."""
    valid = TrainConfig.field_names()
    unknown = [name for name in values if name not in valid]
    if not unknown:
        return
    hints = []
    for name in unknown:
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6) or sorted(
            (v for v in valid if name.startswith(v + "_") or v.startswith(name + "_")), key=len, reverse=True
        )[:1]
        hints.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ConfigError(f"unknown option(s) {', '.join(hints)}; valid options: {', '.join(valid)}")


# ---------------------------------------------------------------------------------------------
# Types and ranges


def _field_types() -> dict[str, object]:
    return typing.get_type_hints(TrainConfig)


def _coerce_types(cfg: TrainConfig) -> None:
    """Accept ints for floats and CLI-style strings ("1e-3", "true", "none"); reject wrong types."""
    for name, kind in _field_types().items():
        value = getattr(cfg, name)
        setattr(cfg, name, _coerce(name, value, kind))


def _coerce(name: str, value, kind):
    args = typing.get_args(kind)
    optional = type(None) in args
    if optional:
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null", "")):
            return None
        kind = next(a for a in args if a is not type(None))
        args = typing.get_args(kind)
    if typing.get_origin(kind) is Literal:
        if value not in args:
            raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, args))}")
        return value
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif kind is str:
        if isinstance(value, str):
            return value
        if hasattr(value, "__fspath__"):  # pathlib.Path for data_root / out_dir
            return str(value)
        if name == "teachers" and isinstance(value, (list, tuple)):  # teachers=["a/best.pt", "b/best.pt"]
            return ",".join(str(v) for v in value)
    else:  # pragma: no cover - every field has one of the types above
        return value
    expected = kind.__name__ + (" or None" if optional else "")
    raise ConfigError(f"{name}={value!r} has the wrong type, expected {expected}")


def _validate(cfg: TrainConfig) -> None:
    """Range checks; ConfigError names the field, the value and the allowed range."""

    def need(ok: bool, name: str, expected: str) -> None:
        if not ok:
            raise ConfigError(f"{name}={getattr(cfg, name)!r} is out of range, expected {expected}")

    for field in dataclasses.fields(cfg):  # inf and nan pass "> 0"-style checks, then fail in training
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not abs(value) < float("inf"):
            raise ConfigError(f"{field.name}={value!r} is not a finite number")
    need(16 <= cfg.height <= 2048, "height", "16-2048 pixels")
    need(16 <= cfg.width <= 2048, "width", "16-2048 pixels")
    need(0 <= cfg.seed < 2**63, "seed", "0 <= seed < 2**63")
    need(0 <= cfg.split_seed < 2**63, "split_seed", "0 <= split_seed < 2**63")
    need(cfg.num_threads <= 1024, "num_threads", "at most 1024 (0 = the cores available)")
    need(cfg.num_workers <= 256, "num_workers", "at most 256 DataLoader worker processes")
    need(cfg.batch_p * cfg.batch_k <= 1 << 20, "batch_p", "batch_p * batch_k <= 1048576 images per batch")
    need(cfg.eval_batch_size <= 1 << 20, "eval_batch_size", "<= 1048576 images per forward pass")
    need(0.0 <= cfg.val_fraction < 1.0, "val_fraction", "0 <= val_fraction < 1")
    need(cfg.subset_ids >= 0 and cfg.subset_ids != 1, "subset_ids", "0 (all) or >= 2")
    need(cfg.num_workers >= -1, "num_workers", ">= 0, or -1 for auto")
    need(cfg.depth in (18, 34, 50, 101, 152), "depth", "one of 18, 34, 50, 101, 152")
    need(cfg.last_stride in (1, 2), "last_stride", "1 or 2")
    for name in ("dropout", "vit_dropout"):
        value = getattr(cfg, name)
        need(value is None or 0.0 <= value < 1.0, name, "0 <= p < 1 or None")
    for name in ("bottleneck_dim", "head_channels", "attention_heads", "pyramid_dim", "vit_patch_size",
                 "vit_embed_dim", "vit_depth", "vit_heads"):
        value = getattr(cfg, name)
        need(value is None or 1 <= value <= 65536, name, "1-65536 or None")
    if cfg.attribute_pooling == "parts":
        pooling_models = models_with_option("attribute_pooling")
        need(cfg.model in pooling_models, "attribute_pooling",
             f'"global" or None for models other than {" and ".join(pooling_models)}')
        need(cfg.attribute_form in (None, "groups"), "attribute_pooling", '"global" with attribute_form="binary"')
    need(cfg.batch_p >= 1, "batch_p", ">= 1")
    need(cfg.batch_k >= 1, "batch_k", ">= 1")
    if cfg.uses_metric_loss:
        need(cfg.batch_p >= 2, "batch_p", ">= 2 with a triplet/center loss (negatives need another identity)")
        need(cfg.batch_k >= 2, "batch_k", ">= 2 with a triplet/center loss (positives need a second image)")
    need(cfg.num_epochs is None or cfg.num_epochs >= 1, "num_epochs", ">= 1 (or None: 40, or planned from max_minutes)")
    need(cfg.max_steps >= 0, "max_steps", ">= 0 (0 = whole epoch)")
    need(cfg.max_minutes >= 0, "max_minutes", ">= 0 (0 = no limit)")
    need(cfg.lr > 0, "lr", "> 0")
    need(cfg.weight_decay >= 0, "weight_decay", ">= 0")
    need(0.0 <= cfg.momentum < 1.0, "momentum", "0 <= momentum < 1")
    need(cfg.switch_epoch >= 1, "switch_epoch", ">= 1")
    need(cfg.switch_lr > 0, "switch_lr", "> 0")
    need(cfg.switch_weight_decay >= 0, "switch_weight_decay", ">= 0")
    need(cfg.warmup_epochs >= 0, "warmup_epochs", ">= 0")
    need(cfg.step_size >= 1, "step_size", ">= 1")
    need(0.0 < cfg.gamma <= 1.0, "gamma", "0 < gamma <= 1")
    need(cfg.clip_grad_norm >= 0, "clip_grad_norm", ">= 0 (0 = off)")
    need(0.0 <= cfg.alpha <= 1.0, "alpha", "0 <= alpha <= 1")
    need(0.0 <= cfg.label_smoothing < 1.0, "label_smoothing", "0 <= label_smoothing < 1")
    need(cfg.am_scale > 0, "am_scale", "> 0")
    need(cfg.am_margin >= 0, "am_margin", ">= 0")
    need(cfg.triplet_weight >= 0, "triplet_weight", ">= 0")
    need(cfg.triplet_margin is None or cfg.triplet_margin >= 0, "triplet_margin", ">= 0 or None (soft margin)")
    need(cfg.center_weight >= 0, "center_weight", ">= 0")
    need(cfg.distill_weight >= 0, "distill_weight", ">= 0")
    need(cfg.distill_temperature > 0, "distill_temperature", "> 0")
    if cfg.teachers:
        need(cfg.id_loss == "ce", "id_loss", "'ce' with teachers (AM-Softmax's cosine logits are no distribution to match)")
    need(0.0 <= cfg.rotation <= 180.0, "rotation", "0-180 degrees")
    need(cfg.pad is None or cfg.pad >= 0, "pad", ">= 0 pixels or None")
    for name in ("blur", "sharpness", "erasing"):
        need(0.0 <= getattr(cfg, name) <= 1.0, name, "a probability 0-1")
    need(cfg.eval_batch_size >= 1, "eval_batch_size", ">= 1")
    need(cfg.patience >= 0, "patience", ">= 0 (0 = never stop early)")
    need(cfg.val_every >= 1, "val_every", ">= 1 (1 = validate after every epoch)")
    need(cfg.num_threads >= 0, "num_threads", ">= 0 (0 = auto)")
    device = cfg.device.lower()
    need(re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device) is not None, "device", "auto, cpu, mps, cuda or cuda:N")
    if cfg.model == "la_transformer":
        patch = cfg.vit_patch_size or max(cfg.height // 16, 1)
        if cfg.height % patch or cfg.width % patch:
            raise ConfigError(
                f"height x width = {cfg.height}x{cfg.width} is not divisible by la_transformer's patch size {patch}"
            )


def _field_help() -> dict[str, str]:
    """Each field's inline comment, read from this module's source (for ``--help``)."""
    try:
        source = inspect.getsource(TrainConfig)
    except (OSError, TypeError):  # pragma: no cover - source not shipped
        return {}
    pattern = re.compile(r"^\s{4}(\w+): .*?=.*?  # (.+)$")
    helps = {}
    for line in source.splitlines():
        match = pattern.match(line)
        if match:
            helps[match.group(1)] = match.group(2).strip()
    return helps


FIELD_HELP: dict[str, str] = _field_help()
for _field in dataclasses.fields(TrainConfig):  # the CLI reads field.metadata["help"]
    _field.metadata = types.MappingProxyType({"help": FIELD_HELP.get(_field.name, "")})
