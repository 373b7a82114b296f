"""PK identity batch sampler: every batch holds P identities x K images of each.

Use it as a DataLoader ``batch_sampler``::

    sampler = PKSampler(train_set.labels, p=16, k=4, seed=0)
    loader = DataLoader(train_set, batch_sampler=sampler, num_workers=2)
    for epoch in range(num_epochs):
        sampler.set_epoch(epoch)   # optional: the sampler also advances by itself
        for batch in loader: ...

One epoch. Each identity's images are shuffled and cut into chunks of K (the remainder is
left out this epoch and drawn next time; an identity with fewer than K images gives one
chunk drawn with replacement). A batch takes one chunk from each of P distinct identities,
drawn with probability proportional to their remaining chunks; when fewer than P identities
have chunks left, every identity is reshuffled into fresh chunks. The number of batches per
epoch is fixed: ``total_chunks // (P * world_size)`` (at least 1).

Distributed training (``rank``, ``world_size``): every epoch the identities are shuffled
with the common seed and dealt to the ranks, so ranks see disjoint identities, and every rank
yields the same number of batches.

Determinism and resuming: the batches of an epoch depend only on ``(seed, epoch, rank)``.
``state_dict()`` holds the seed and the next epoch; ``load_state_dict`` restores them, so a
resumed run draws exactly the batches of an uninterrupted one. Iterating advances the epoch
by one, so forgetting ``set_epoch`` still gives fresh batches each epoch.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Iterator, Sequence

import numpy as np
import torch

from ..errors import ConfigError


class PKSampler(torch.utils.data.Sampler):
    """Batch sampler over ``labels`` (one int per dataset item) yielding lists of ``p * k`` indices."""

    def __init__(self, labels: Sequence[int], p: int, k: int, seed: int = 0, rank: int = 0, world_size: int = 1):
        if p < 1 or k < 1:
            raise ConfigError(f"PKSampler needs p >= 1 and k >= 1, got p={p}, k={k}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"PKSampler needs 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        labels = np.asarray(labels).tolist()
        by_label: dict[int, list[int]] = defaultdict(list)
        for index, label in enumerate(labels):
            by_label[int(label)].append(index)
        self.identities = sorted(by_label)
        self.indices = [np.array(by_label[label]) for label in self.identities]  # per identity
        if len(self.identities) // world_size < p:
            raise ConfigError(
                f"PKSampler: {len(self.identities)} training identities cannot fill batches of p={p} identities "
                f"on each of {world_size} rank(s); lower batch_p or use more identities"
            )
        self.p, self.k, self.seed = p, k, seed
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._chunks = [max(1, len(ix) // k) for ix in self.indices]
        self._num_batches = max(1, sum(self._chunks) // (p * world_size))

    def __len__(self) -> int:
        return self._num_batches

    @property
    def batch_size(self) -> int:
        return self.p * self.k

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch`` on the next iteration."""
        self.epoch = int(epoch)

    def state_dict(self) -> dict:
        return {"seed": self.seed, "epoch": self.epoch, "p": self.p, "k": self.k, "world_size": self.world_size}

    def load_state_dict(self, state: dict) -> None:
        for key in ("p", "k", "world_size"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"PKSampler state has {key}={state[key]}, this sampler has {key}={getattr(self, key)}")
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def _chunk(self, identity: int, rng: np.random.Generator) -> list[np.ndarray]:
        indices = self.indices[identity]
        if len(indices) < self.k:
            return [rng.choice(indices, self.k, replace=True)]
        shuffled = rng.permutation(indices)
        return [shuffled[i * self.k:(i + 1) * self.k] for i in range(len(indices) // self.k)]

    def batches(self, epoch: int) -> list[list[int]]:
        """The batches of ``epoch`` for this rank (pure: does not change the sampler)."""
        shared = np.random.default_rng([self.seed, epoch])  # same on every rank
        mine = np.sort(shared.permutation(len(self.identities))[self.rank::self.world_size])
        rng = np.random.default_rng([self.seed, epoch, self.rank + 1])
        chunks = {i: self._chunk(i, rng) for i in mine}
        batches = []
        while len(batches) < self._num_batches:
            available = np.array([i for i in mine if chunks[i]])
            if len(available) < self.p:
                chunks = {i: chunks[i] + self._chunk(i, rng) for i in mine}
                continue
            weights = np.array([len(chunks[i]) for i in available], dtype=float)
            picked = rng.choice(available, self.p, replace=False, p=weights / weights.sum())
            batches.append([int(j) for i in picked for j in chunks[i].pop()])
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        epoch = self.epoch
        self.epoch += 1
        return iter(self.batches(epoch))
