"""Aspect-ratio grouped batching, as in torchvision's detection references: batches of similar shapes pad little."""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
from torch.utils.data import BatchSampler, Sampler


def create_aspect_ratio_groups(aspect_ratios: Sequence[float], k: int = 3) -> list[int]:
    """Bin images by aspect ratio into ``2k + 2`` groups (bin edges log-spaced in [1/2, 2], as torchvision)."""
    bins = (2 ** np.linspace(-1, 1, 2 * k + 1)).tolist() if k > 0 else [1.0]
    return [bisect.bisect_right(bins, r) for r in aspect_ratios]


class GroupedBatchSampler(BatchSampler):
    """Batches whose images share an aspect-ratio group, so padding to a common size wastes little.

    Wraps any sampler (e.g. ``DistributedSampler``); yields ``len(sampler) //
    batch_size`` batches per epoch. Indices left over in partly filled groups at
    the end are batched together, group by group, and the last partial batch is
    dropped.

    Args:
        sampler: yields dataset indices.
        group_ids: group of every dataset index.
        batch_size: images per batch.
    """

    def __init__(self, sampler: Sampler[int], group_ids: Sequence[int], batch_size: int) -> None:
        super().__init__(sampler, batch_size, drop_last=True)
        self.group_ids = group_ids

    def __iter__(self) -> Iterator[list[int]]:
        buffers: dict[int, list[int]] = defaultdict(list)
        for idx in self.sampler:
            group = self.group_ids[idx]
            buffers[group].append(idx)
            if len(buffers[group]) == self.batch_size:
                yield buffers.pop(group)
        leftovers = [idx for group in sorted(buffers) for idx in buffers[group]]
        for start in range(0, len(leftovers) - self.batch_size + 1, self.batch_size):
            yield leftovers[start : start + self.batch_size]

    def __len__(self) -> int:
        return len(self.sampler) // self.batch_size
