"""Model size and cost: parameters and GFLOPs at a given input size (torch's FLOP counter)."""
from __future__ import annotations

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (all, or only those with ``requires_grad``)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def model_summary(model: nn.Module, height: int = 256, width: int = 128) -> dict:
    """Parameters and GFLOPs of one forward pass on one ``(1, 3, height, width)`` image, in eval mode.

    GFLOPs are **FLOPs / 1e9** as counted by :class:`torch.utils.flop_counter.FlopCounterMode`,
    which counts a multiply-add as 2 FLOPs (convolutions, matmuls, attention). Many papers
    (ResNet's "3.8 GFLOPs" for ResNet-50 at 224x224) report multiply-adds instead: divide by
    2 to compare with them. Element-wise ops (BN, ReLU, pooling) are not counted.

    The pass runs with autograd enabled on purpose: under ``no_grad`` in eval mode
    ``nn.MultiheadAttention`` takes a fused fast path that the FLOP counter does not see.

    ``params`` counts every parameter, identity classifier included. The model's training mode
    is restored afterwards.

    >>> model_summary(torch.nn.Conv2d(3, 8, 1), 4, 4)
    {'params': 32, 'gflops': 7.68e-07}
    """
    was_training = model.training
    first = next(model.parameters(), None)
    device = first.device if first is not None else torch.device("cpu")
    x = torch.zeros(1, 3, height, width, device=device)
    model.eval()
    try:
        with FlopCounterMode(display=False) as counter:
            model(x)
    finally:
        model.train(was_training)
    return {"params": count_parameters(model), "gflops": counter.get_total_flops() / 1e9}
