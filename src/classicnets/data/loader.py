"""Batches for training: a device-resident `TensorLoader` and a disk-streaming `StreamingLoader`.

Both share `EpochOrder`, which decides which samples form batch b of epoch e on rank r:
  * the epoch's order is a permutation from a generator seeded with (seed, epoch), so any epoch can be
    rebuilt from two numbers, which is what makes mid-epoch resume exact;
  * ranks split each *global* batch (batch_size × world_size consecutive samples of the permutation)
    into near-equal contiguous slices. Every rank therefore runs the same number of steps (DDP's
    collectives must match), the union over ranks of batch b is the batch a single process with
    batch_size × world_size would see, and, without drop_last, every sample appears exactly once per
    epoch: no padding, no duplicates. A final global batch too small to give every rank a sample is
    merged into the one before it (at most world_size - 1 extra samples, once per epoch);
  * with drop_last, only full global batches are used.
The augmentation of batch b draws from a generator seeded with (seed, epoch, b, rank), so a resumed
run also reproduces the same crops and flips.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterator

import torch

from classicnets.data.folder import FolderDataset, collate_images
from classicnets.errors import ClassicNetsError

Transform = Callable[[torch.Tensor, "torch.Generator | None"], torch.Tensor]


def derive_seed(*numbers: int) -> int:
    """A well-mixed 63-bit seed from a tuple of integers (nearby tuples give unrelated streams)."""
    packed = struct.pack(f"<{len(numbers)}q", *numbers)
    return int.from_bytes(hashlib.blake2b(packed, digest_size=8).digest(), "little") >> 1


class EpochOrder:
    """Which indices form each batch of an epoch on one rank; see the module docstring."""

    def __init__(self, num_samples, batch_size, *, shuffle, drop_last, seed, rank, world_size):
        if batch_size < 1:
            raise ClassicNetsError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise ClassicNetsError(f"rank {rank} is outside 0..{world_size - 1} for world size {world_size}")
        if num_samples < world_size:
            raise ClassicNetsError(
                f"{num_samples} samples cannot feed {world_size} ranks: every rank needs at least one sample"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.shuffle, self.drop_last, self.seed = shuffle, drop_last, seed
        self.rank, self.world_size = rank, world_size
        global_batch = batch_size * world_size
        if drop_last:
            self.num_batches = num_samples // global_batch
            if self.num_batches == 0:
                raise ClassicNetsError(
                    f"{num_samples} samples give no full batch of {batch_size} x {world_size} rank(s) with "
                    f"drop_last: lower the batch size or turn drop_last off"
                )
        else:
            self.num_batches = -(-num_samples // global_batch)
            last = num_samples - (self.num_batches - 1) * global_batch
            if self.num_batches > 1 and last < world_size:
                self.num_batches -= 1  # fold the tiny remainder into the previous global batch

    def permutation(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.num_samples)
        gen = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_samples, generator=gen)

    def bounds(self, batch: int) -> tuple[int, int]:
        """[start, end) of this rank's slice of global batch `batch` within the permutation."""
        global_batch = self.batch_size * self.world_size
        start = batch * global_batch
        last = batch == self.num_batches - 1
        end = self.num_samples if (last and not self.drop_last) else start + global_batch
        length = end - start
        rank, world = self.rank, self.world_size
        return start + rank * length // world, start + (rank + 1) * length // world

    def batch_seed(self, epoch: int, batch: int) -> int:
        return derive_seed(self.seed, epoch, batch, self.rank)

    def identity(self) -> dict:
        """What a saved position is only valid for."""
        return {
            "num_samples": self.num_samples,
            "global_batch_size": self.batch_size * self.world_size,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }


class _PositionMixin:
    """Epoch bookkeeping shared by both loaders: set_epoch, len, state_dict, load_state_dict."""

    order: EpochOrder
    epoch: int
    position: int

    def __len__(self) -> int:
        return self.order.num_batches

    def set_epoch(self, epoch: int) -> None:
        """Start epoch `epoch` from its first batch, unless it is the epoch a restored state is inside."""
        if epoch != self.epoch:
            self.epoch, self.position = int(epoch), 0

    def state_dict(self) -> dict:
        """Epoch and the index of the next batch, plus what they are only valid for."""
        return {"epoch": self.epoch, "batch": self.position, **self.order.identity()}

    def load_state_dict(self, state: dict) -> None:
        mine = self.order.identity()
        for key, value in mine.items():
            if key in state and state[key] != value:
                raise ClassicNetsError(
                    f"cannot resume the data loader: it was saved with {key}={state[key]} but now has "
                    f"{key}={value}; resume with the same data set, batch size x ranks, seed and drop_last"
                )
        if not 0 <= int(state["batch"]) <= len(self):
            raise ClassicNetsError(f"saved loader position {state['batch']} is outside 0..{len(self)}")
        self.epoch, self.position = int(state["epoch"]), int(state["batch"])

    def _generator(self, batch: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.order.batch_seed(self.epoch, batch))

    def _finish_epoch(self) -> None:
        self.epoch, self.position = self.epoch + 1, 0


def _default_transform(x: torch.Tensor, generator=None) -> torch.Tensor:
    return x.to(torch.float32).div_(255.0)


class TensorLoader(_PositionMixin):
    """The whole data set as one tensor on `device`; each batch is an index into it plus a transform.

    Iterating yields (transform(uint8 batch, generator), labels) on `device` for the rest of the current
    epoch, then moves to the next epoch. Without a transform x is float32 in [0, 1].
    """

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.device = torch.device(device)
        self.images = dataset.images.to(self.device)
        self.labels = dataset.labels.to(self.device)
        self.transform = transform or _default_transform
        self.order = EpochOrder(
            len(self.images), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
            rank=rank, world_size=world_size,
        )
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.order.permutation(self.epoch).to(self.device)
        while self.position < len(self):
            batch = self.position
            start, end = self.order.bounds(batch)
            idx = perm[start:end]
            self.position += 1  # consumed once handed out: a checkpoint taken after it resumes at the next
            x = self.transform(self.images.index_select(0, idx), self._generator(batch))
            yield x, self.labels.index_select(0, idx)
        self._finish_epoch()


class StreamingLoader(_PositionMixin):
    """Same interface and batch order as `TensorLoader`, for folders too big for memory: images are
    decoded per batch by `num_workers` DataLoader worker processes, then moved to `device` and
    transformed there. An unreadable image stops with an error naming it, or with the folder's
    skip_bad it is dropped from its batch and listed in `skipped`."""

    def __init__(
        self,
        dataset,
        batch_size: int,
        *,
        shuffle: bool = True,
        drop_last: bool = False,
        seed: int = 0,
        device: str | torch.device = "cpu",
        transform: Transform | None = None,
        rank: int = 0,
        world_size: int = 1,
        num_workers: int = 2,
    ):
        self.dataset = dataset
        self.decoder = dataset.decoder()
        self.device = torch.device(device)
        self.transform = transform or _default_transform
        self.num_workers = num_workers
        self.skipped: list[str] = []
        self.order = EpochOrder(
            len(dataset), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
            rank=rank, world_size=world_size,
        )
        self.epoch, self.position = 0, 0

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        perm = self.order.permutation(self.epoch).tolist()
        first = self.position
        batches = [perm[slice(*self.order.bounds(b))] for b in range(first, len(self))]
        if not batches:
            self._finish_epoch()
            return
        loader = torch.utils.data.DataLoader(
            self.decoder,
            batch_sampler=batches,
            num_workers=self.num_workers,
            collate_fn=collate_images,
            pin_memory=self.device.type == "cuda",
        )
        for batch, (images, labels, errors) in enumerate(loader, start=first):
            if errors:
                if not self.dataset.skip_bad:
                    raise ClassicNetsError(errors[0][1])
                keep = torch.ones(len(images), dtype=torch.bool)
                for k, _ in errors:
                    keep[k] = False
                    self.skipped.append(self.decoder.files[batches[batch - first][k]])
                images, labels = images[keep], labels[keep]
            self.position = batch + 1
            images = images.to(self.device, non_blocking=True)
            yield self.transform(images, self._generator(batch)), labels.to(self.device, non_blocking=True)
        self._finish_epoch()


def make_loader(dataset, batch_size: int, **kwargs):
    """A `TensorLoader` for an in-memory `ArrayDataset`, a `StreamingLoader` for a streamed folder."""
    if isinstance(dataset, FolderDataset):
        return StreamingLoader(dataset, batch_size, **kwargs)
    kwargs.pop("num_workers", None)
    return TensorLoader(dataset, batch_size, **kwargs)
