"""Deterministic training order: the run's seed, per-epoch permutations and per-episode seeds independent of
workers/ranks, and the loader that yields them (resumable at any batch)."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs (the model's initial weights, dropout)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def episode_seed(seed: int, epoch: int, position: int) -> int:
    """Seed of the episode at ``position`` of ``epoch``'s global order (32-bit, well mixed)."""
    return int(np.random.SeedSequence([seed, epoch, position]).generate_state(1)[0])


class SeededEpisodes(Dataset):
    """Wraps a training dataset so that item ``(index, seed)`` draws its augmentation from ``seed``.

    Python's ``random``, NumPy's global RNG and torch's CPU RNG are seeded before ``dataset[index]`` and
    restored afterwards, so an episode is the same whatever the worker, rank or resume point, and the
    main process's RNG (dropout, samplers inside models) is not disturbed when ``workers=0``.
    """

    def __init__(self, dataset: Dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, item: tuple[int, int]) -> Any:
        index, seed = item
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            random.seed(seed)
            np.random.seed(seed)
            torch.default_generator.manual_seed(seed)  # CPU only: CUDA RNG (dropout) stays untouched
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class EpochBatchSampler(Sampler[list[tuple[int, int]]]):
    """Batches of ``(index, seed)`` for one rank in one epoch, starting at batch ``start_batch``.

    The epoch's global order is a permutation seeded by (seed, epoch); global batch b is positions
    [b·G, (b+1)·G) with G = batch_size × world_size, and rank r takes its contiguous slice of it. The
    episodes of a global batch are therefore the same for any world size, and the tail that does not fill
    a global batch is dropped (as the references' ``drop_last=True``).
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        epoch: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
    ):
        self.num_items, self.batch_size = num_items, batch_size
        self.seed, self.epoch, self.rank, self.world_size = seed, epoch, rank, world_size
        self.start_batch = start_batch
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = num_items // self.global_batch

    def __len__(self) -> int:
        return max(self.batches_per_epoch - self.start_batch, 0)

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        generator = torch.Generator().manual_seed(
            int(np.random.SeedSequence([self.seed, self.epoch]).generate_state(1)[0])
        )
        order = torch.randperm(self.num_items, generator=generator).tolist()
        for b in range(self.start_batch, self.batches_per_epoch):
            first = b * self.global_batch + self.rank * self.batch_size
            yield [
                (order[p], episode_seed(self.seed, self.epoch, p))
                for p in range(first, first + self.batch_size)
            ]


def episode_loader(dataset: Dataset, batch_size: int, seed: int, epoch: int, rank: int, world_size: int,
                   start_batch: int, workers: int, pin_memory: bool) -> DataLoader:
    """This rank's batches of ``epoch`` from global batch ``start_batch`` on (``EpochBatchSampler``), each
    episode drawn from its own seed (``SeededEpisodes``)."""
    sampler = EpochBatchSampler(len(dataset), batch_size, seed, epoch, rank, world_size,  # type: ignore[arg-type]
                                start_batch)
    # An explicit generator keeps the DataLoader from drawing on the global torch RNG (resume parity).
    return DataLoader(
        SeededEpisodes(dataset),
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=pin_memory,
        generator=torch.Generator().manual_seed(0),
        persistent_workers=False,
    )


__all__ = ["EpochBatchSampler", "SeededEpisodes", "episode_loader", "episode_seed", "seed_everything"]
