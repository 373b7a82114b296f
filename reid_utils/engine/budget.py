"""A time budget that plans the schedule: ``train --max-minutes 60`` on any machine.

Without a budget a run trains ``num_epochs`` epochs (40 when not given). With
``max_minutes=M`` the trainer times the first training steps, estimates the validation pass,
and plans how many epochs fit in ``M`` minutes, so that the warmup and the cosine decay end
inside the budget instead of being cut off while the learning rate is still high. A given
``num_epochs`` is then an upper bound. After every epoch the plan is checked against the
slowest of the last three epochs (validation and checkpoint writes included) and corrected
both ways: another process that starts or stops changes the speed. It shrinks when the
epochs left no longer fit, and grows only by what fits with one epoch in reserve, so jitter
does not move it. The schedule then continues its cosine from the learning rate it had
reached to the new end (:meth:`~reid_utils.engine.optim.LRSchedule.set_num_epochs`), so a
correction never makes the learning rate jump. Every plan and correction is logged.

With ``val_every=N`` the run validates after every N-th epoch and after the last only, and the
plan spends the time saved on more epochs: an epoch then costs its training plus a N-th of a
validation pass, and the last epoch's full validation is kept free in the budget.

The arithmetic is in plain functions (:func:`epochs_that_fit`, :func:`estimate_epoch_seconds`,
:func:`estimate_validation_seconds`) so that it can be tested without training anything.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable

#: Epochs of a run with neither ``num_epochs`` nor ``max_minutes``.
DEFAULT_NUM_EPOCHS = 40
#: Training steps timed before the first plan; the first two only warm up the kernels.
PLAN_AFTER_STEPS = 10
WARM_STEPS = 2
#: Share of the budget (and seconds, at least) kept free for the end of the run: reloading
#: best.pt, the last writes, an epoch slower than the ones before.
SAFETY_SHARE = 0.03
SAFETY_SECONDS = 2.0


def epochs_that_fit(remaining_seconds: float, epoch_seconds: float) -> int:
    """Whole epochs of ``epoch_seconds`` that fit in ``remaining_seconds`` (at least 0).

    >>> epochs_that_fit(100.0, 30.0)
    3
    """
    if epoch_seconds <= 0:
        raise ValueError(f"epoch_seconds must be > 0, got {epoch_seconds}")
    return max(0, math.floor(remaining_seconds / epoch_seconds + 1e-9))


def estimate_validation_seconds(step_seconds: float, val_images: int, batch_size: int, flip: bool) -> float:
    """One validation pass over ``val_images``, from the seconds of one training step.

    A forward pass costs about a third of a training step (forward + backward), flip
    averaging doubles it, and decoding and ranking add about 30 %.

    >>> round(estimate_validation_seconds(0.96, 100, 32, flip=True), 2)
    2.6
    """
    per_image_forward = step_seconds / max(batch_size, 1) / 3
    return 1.3 * val_images * (2 if flip else 1) * per_image_forward


def estimate_epoch_seconds(step_seconds: float, steps_per_epoch: int, val_images: int, batch_size: int,
                           flip: bool, val_every: int = 1) -> float:
    """One epoch: ``steps_per_epoch`` training steps plus its share of the validation passes
    (one every ``val_every`` epochs, see :func:`estimate_validation_seconds`)."""
    validation = estimate_validation_seconds(step_seconds, val_images, batch_size, flip)
    return step_seconds * steps_per_epoch + validation / val_every


class EpochPlanner:
    """Plans and corrects the number of epochs of a budgeted run (see the module docstring).

    Args:
        budget_seconds: the whole run's budget (``max_minutes * 60``).
        cap: ``num_epochs`` when given (an upper bound), else None.
        steps_per_epoch, batch_size, val_images, flip: what one epoch costs.
        val_every: the run validates after every ``val_every``-th epoch and after the last.
        start: ``time.monotonic()`` when the run started (setup counts against the budget).
        log: where the plan is reported (one line each).
    """

    def __init__(self, budget_seconds: float, cap: int | None, steps_per_epoch: int, batch_size: int,
                 val_images: int, flip: bool, start: float, log: Callable[[str], None], val_every: int = 1):
        self.budget = budget_seconds - max(SAFETY_SHARE * budget_seconds, SAFETY_SECONDS)
        self.cap = cap
        self.steps_per_epoch, self.batch_size = steps_per_epoch, batch_size
        self.val_images, self.flip, self.val_every = val_images, flip, val_every
        #: seconds of one validation pass: estimated at the first plan, then as measured
        self.validation_seconds = 0.0
        self.start, self.log = start, log
        self.num_epochs: int | None = None
        self._step_times: list[float] = []

    @property
    def plan_step(self) -> int:
        """0-based training step after which the first plan is made."""
        return min(PLAN_AFTER_STEPS, self.steps_per_epoch) - 1

    def _bounded(self, epochs: int) -> int:
        epochs = max(1, epochs)
        return min(epochs, self.cap) if self.cap else epochs

    def on_step(self, step: int) -> int | None:
        """Call after each training step of the first epoch; returns the planned number of
        epochs once it is known (at :attr:`plan_step`), else None."""
        self._step_times.append(time.monotonic())
        if self.num_epochs is not None or step != self.plan_step:
            return None
        times = self._step_times
        warm = min(WARM_STEPS, len(times) - 1)
        step_seconds = (times[-1] - times[warm - 1]) / (len(times) - warm) if warm else times[-1] - self.start
        self.validation_seconds = estimate_validation_seconds(step_seconds, self.val_images, self.batch_size, self.flip)
        epoch = estimate_epoch_seconds(step_seconds, self.steps_per_epoch, self.val_images, self.batch_size, self.flip,
                                       self.val_every)
        elapsed_epoch = times[-1] - times[0] + step_seconds  # the part of epoch 1 already done
        remaining = self.budget - (time.monotonic() - self.start) + elapsed_epoch - self._last_validation_extra()
        self.num_epochs = self._bounded(epochs_that_fit(remaining, epoch))
        validation = "validation" if self.val_every == 1 else f"validation every {self.val_every} epochs"
        self.log(f"time budget {self.budget / 60:.1f} min (after the reserve): {step_seconds:.2f} s per step, "
                 f"about {epoch:.0f} s per epoch with {validation} -> {self.num_epochs} epochs"
                 + (f" (capped by num_epochs={self.cap})" if self.cap and self.num_epochs == self.cap else ""))
        return self.num_epochs

    def _last_validation_extra(self) -> float:
        """What the last epoch's validation costs beyond the share every epoch's estimate has."""
        return self.validation_seconds * (1 - 1 / self.val_every)

    def after_epoch(self, epochs_done: int, epoch_seconds: list[float], validation_seconds: float | None = None) -> int:
        """The corrected plan after ``epochs_done`` epochs whose training took ``epoch_seconds``,
        each from the previous epoch's end to its own, validation excluded (writing the
        checkpoints counts); ``validation_seconds``: the latest validation pass, if measured.

        The estimate is the slowest of the last three epochs plus a ``val_every``-th of a
        validation pass. The plan shrinks only when the epochs it has left no longer fit in the
        budget, and grows only by what fits with one such epoch kept in reserve. The gap between
        the two keeps the plan steady while the epoch times jitter by a few percent, so the
        cosine reaches its floor at the planned end instead of being cut one epoch short. A plan
        that is complete (its cosine at the floor) does not grow again.
        """
        if validation_seconds is not None:
            self.validation_seconds = validation_seconds
        if self.num_epochs is not None and epochs_done >= self.num_epochs:
            return self.num_epochs
        # the latest speed: another process may have started
        slowest = max(max(epoch_seconds[-3:]) + self.validation_seconds / self.val_every, 1e-6)
        remaining = self.budget - (time.monotonic() - self.start) - self._last_validation_extra()
        fits = epochs_that_fit(remaining, slowest)
        planned = self.num_epochs
        if planned is None or epochs_done + fits - 1 > planned:
            new = epochs_done + fits - 1
        elif planned - epochs_done > fits:
            new = epochs_done + fits
        else:
            new = planned
        new = max(self._bounded(new), epochs_done)
        if new != planned:
            self.log(f"time budget: epochs take {slowest:.0f} s, re-planned to {new} epochs (was {planned})")
        self.num_epochs = new
        return new
