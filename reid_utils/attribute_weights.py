"""Attribute class weights from the training set's positive ratios (for the weighted losses
of :mod:`reid_utils.losses`): DeepMAR / ALM's exponential weights and inverse-frequency
weights, for the binary form and per group of the groups form."""
from __future__ import annotations

import torch

from .schema import GROUPS

_MIN_RATIO = 1e-3  # ratios are clamped into [_MIN_RATIO, 1 - _MIN_RATIO] before weighting


def _clamped(ratios: torch.Tensor) -> torch.Tensor:
    return torch.as_tensor(ratios, dtype=torch.float32).clamp(_MIN_RATIO, 1 - _MIN_RATIO)


def exp_weights(ratios: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DeepMAR / ALM weights from positive ratios ``a`` ``(30,)``: ``(exp(1 - a), exp(a))``.

    This is the weighted sigmoid cross-entropy as released with ALM (Tang et al. 2019, weight
    ``exp(y + (1 - 2y) a)``) and with the DeepMAR code (Li et al. 2015): a positive label of
    attribute ``j`` weighs ``exp(1 - a_j)``, a negative one ``exp(a_j)``. The papers print the
    compact ``exp(-a_j / sigma^2)``; the two-sided form is what their code trains with and it
    keeps rare positives from being swamped (``w_pos / w_neg = e^(1 - 2a)``).
    """
    a = _clamped(ratios)
    return torch.exp(1 - a), torch.exp(a)


def frequency_weights(ratios: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-frequency ("balanced") weights: ``(1 / (2a), 1 / (2(1 - a)))``.

    Positives and negatives of each attribute then carry the same total weight
    (``N a * 1/(2a) = N (1-a) * 1/(2(1-a)) = N/2``), as scikit-learn's ``class_weight="balanced"``.
    """
    a = _clamped(ratios)
    return 1 / (2 * a), 1 / (2 * (1 - a))


def group_class_frequencies(ratios: torch.Tensor) -> list[torch.Tensor]:
    """``(30,)`` binary positive ratios -> 12 ``(C_g,)`` class frequencies of the groups form.

    Binary groups: ``[1 - a, a]``; colours: the colour ratios plus ``multicolour = 1 - sum``.
    """
    r = torch.as_tensor(ratios, dtype=torch.float32)
    binaries = [torch.stack([1 - r[j], r[j]]) for j in range(4, 13)]
    up, down = r[13:21], r[21:30]
    return [
        r[0:4],
        *binaries,
        torch.cat([up, (1 - up.sum()).clamp_min(0)[None]]),
        torch.cat([down, (1 - down.sum()).clamp_min(0)[None]]),
    ]


def group_class_weights(ratios: torch.Tensor, weighting: str) -> list[torch.Tensor]:
    """Per-group class weights for :func:`grouped_cross_entropy`, consistent with the binary form.

    ``"exp"``: ``w_c = exp(1 - f_c)`` (for a binary group: ``exp(1 - a)`` / ``exp(a)`` as in
    :func:`exp_weights`); ``"frequency"``: ``w_c = 1 / (C_g f_c)``, where ``f_c`` is the class
    frequency.
    """
    weights = []
    for freq, group in zip(group_class_frequencies(ratios), GROUPS):
        f = _clamped(freq)
        weights.append(torch.exp(1 - f) if weighting == "exp" else 1 / (group.num_classes * f))
    return weights
