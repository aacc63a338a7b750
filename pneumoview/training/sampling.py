"""Seeded, DDP-sharded samplers and the dataset over the in-memory image cache, and the loaders built on them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from pneumoview.training.augment import AugmentConfig, augment
from pneumoview.training.datasets import ImageCache
from pneumoview.training.family import Family
from pneumoview.training.recipes import TrainConfig


class EpochSampler(Sampler):
    """Shuffled (or weighted) order for one epoch, sharded over DDP ranks like ``DistributedSampler``.

    The order depends only on ``seed`` and the epoch. Training samplers yield ``(position, epoch)`` so the dataset
    can draw the augmentation from ``(seed, epoch, position)``; evaluation samplers yield plain positions, each
    exactly once over all ranks (no padding).
    """

    def __init__(
        self,
        n: int,
        *,
        shuffle: bool,
        seed: int,
        rank: int = 0,
        world: int = 1,
        weights: np.ndarray | None = None,
        tag_epoch: bool = True,
    ) -> None:
        self.n, self.shuffle, self.seed = n, shuffle, seed
        self.rank, self.world = rank, world
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        self.tag_epoch = tag_epoch
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> list[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g).tolist()
        elif self.shuffle:
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        if self.tag_epoch and self.world > 1 and order:
            total = math.ceil(self.n / self.world) * self.world
            order = (order * math.ceil(total / len(order)))[:total]
        return order[self.rank :: self.world]

    def __iter__(self) -> Iterator[Any]:
        for i in self._order():
            yield (i, self.epoch) if self.tag_epoch else i

    def __len__(self) -> int:
        if self.tag_epoch:
            return math.ceil(self.n / self.world)
        return len(range(self.rank, self.n, self.world))


class CachedImages(Dataset):
    """Rows of an :class:`ImageCache`, augmented when indexed by ``(position, epoch)``.

    ``make(row, image_u8, mask_u8, boxes_xyxy)`` turns the (augmented) arrays into the family's sample.
    """

    def __init__(
        self,
        cache: ImageCache,
        rows: Sequence[int],
        make: Callable[[int, np.ndarray, np.ndarray | None, np.ndarray], Any],
        *,
        augment_cfg: AugmentConfig,
        seed: int,
        with_mask: bool = False,
    ) -> None:
        self.cache, self.rows, self.make = cache, list(rows), make
        self.augment_cfg, self.seed, self.with_mask = augment_cfg, seed, with_mask

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: Any) -> Any:
        position, epoch = item if isinstance(item, tuple) else (item, None)
        row = self.rows[position]
        image = self.cache.images[row]
        boxes = self.cache.boxes[row]
        mask = None
        if self.with_mask:
            from pneumoview.training.augment import box_mask

            mask = box_mask(boxes, image.shape)
        if epoch is not None and self.augment_cfg.enabled:
            rng = np.random.default_rng([self.seed, epoch, row])
            image, mask, boxes = augment(image, rng, self.augment_cfg, mask=mask, boxes_xyxy=boxes)
        return self.make(row, image, mask, boxes)


def make_loader(
    dataset: Dataset, sampler: Sampler, batch_size: int, cfg: TrainConfig, family: Family, drop_last: bool
) -> DataLoader:
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=cfg.workers,
        collate_fn=family.collate,
        pin_memory=torch.cuda.is_available() and cfg.device != "cpu",
        drop_last=drop_last,
        persistent_workers=cfg.workers > 0,
    )
