"""Training and inference: the loop, the trainer, batches, optimizers, checkpoints, the runtime.

==============  ===================================================================
module          what it holds
==============  ===================================================================
``loop``        :func:`train_one_epoch`, :func:`evaluate`, :func:`best_epoch`
``trainer``     :func:`fit` and :func:`main` (the notebooks' entry point), ``TrainingRun``
``batches``     training batches: PK sampling, decoding, augmentation
``optim``       optimizers, warmup + cosine schedule, early stopping
``budget``      the time budget that plans the number of epochs (``max_minutes``)
``threads``     CPU threads that follow the cores other processes leave free
``checkpoint``  atomic, resumable, digest-checked checkpoints; :func:`load_model_from_checkpoint`
``runtime``     device, precision (the fast path), torchrun
``inference``   batched feature extraction with flip averaging
``refit``       :func:`refit`: a validated recipe trained again on every identity
==============  ===================================================================

::

    from reid_utils.engine import main
    history = main(model="apr", num_epochs=30, out_dir="runs/apr")
"""
from .checkpoint import input_size, load_checkpoint, load_model_from_checkpoint, save_checkpoint
from .inference import CachedImages, extract, split_features
from .loop import LOSS_PARTS, best_epoch, evaluate, train_one_epoch
from .refit import is_refit, refit, refit_dir, validated_run
from .runtime import FastPath, fast_path, select_device
from .trainer import fit, main

__all__ = [
    "LOSS_PARTS",
    "CachedImages",
    "FastPath",
    "best_epoch",
    "evaluate",
    "extract",
    "fast_path",
    "fit",
    "input_size",
    "is_refit",
    "load_checkpoint",
    "load_model_from_checkpoint",
    "main",
    "refit",
    "refit_dir",
    "save_checkpoint",
    "select_device",
    "split_features",
    "train_one_epoch",
    "validated_run",
]
