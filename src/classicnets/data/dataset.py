"""`ArrayDataset`: a whole data set as two tensors, the value every other part of classicnets consumes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import torch

from classicnets.errors import ClassicNetsError


def printable(text: str | bytes | os.PathLike) -> str:
    """`text` (a class name, a path) as it can be printed on one line by any stream, even a strict UTF-8
    one: bytes of a file name that are not UTF-8 (Python keeps them as surrogate escapes) become \\xNN,
    control characters and other unprintable ones their escape (\\n, \\x1b, \\u200b). Printable text is
    returned unchanged."""
    text = os.fsdecode(text)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def _escape(char: str) -> str:
    if 0xDC80 <= ord(char) <= 0xDCFF:  # os.fsdecode's surrogate escape of the byte ord(char) - 0xDC00
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


@dataclass
class ArrayDataset:
    """Images uint8 N×C×H×W, labels int64 N, class names, and where they came from.

    `checksum` says what was verified ("ok", or why not); `notes` lists what loading did to the data
    (resizing, grayscale to RGB, skipped files) so `classicnets data info` can say it.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    name: str
    split: str
    source: str = ""
    checksum: str = "not checked"
    notes: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    _stats: tuple | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Class names are printed (data info, predict, evaluate): make them printable once, here.
        self.classes = [printable(c) if isinstance(c, str) else c for c in self.classes]
        if self.images.dtype != torch.uint8 or self.images.ndim != 4:
            raise ClassicNetsError(
                f"ArrayDataset images must be uint8 N×C×H×W, "
                f"got {self.images.dtype} {tuple(self.images.shape)}"
            )
        if self.labels.dtype != torch.int64 or self.labels.shape != (len(self.images),):
            raise ClassicNetsError(
                f"ArrayDataset labels must be int64 of length {len(self.images)}, "
                f"got {self.labels.dtype} {tuple(self.labels.shape)}"
            )

    def __len__(self) -> int:
        return len(self.images)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return (
            f"ArrayDataset({self.name!r}, split={self.split!r}, {len(self)} images {c}x{h}x{w}, "
            f"{len(self.classes)} classes, source={self.source!r})"
        )

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and std of this split's pixels, in [0, 1] units (population std).

        Exact and cheap: a 256-bin histogram per channel, so 60000×28×28 costs ~0.1 s and no float copy.
        """
        if self._stats is None:
            values = torch.arange(256, dtype=torch.float64) / 255.0
            means, stds = [], []
            for c in range(self.in_channels):
                counts = torch.bincount(self.images[:, c].reshape(-1).cpu(), minlength=256).double()
                total = counts.sum().clamp_min(1.0)
                mean = float((counts * values).sum() / total)
                var = float((counts * (values - mean) ** 2).sum() / total)
                means.append(round(mean, 6))
                stds.append(round(var**0.5, 6))
            self._stats = (tuple(means), tuple(stds))
        return self._stats

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels.cpu(), minlength=self.num_classes).tolist()

    def subset(self, indices: torch.Tensor, split: str | None = None) -> ArrayDataset:
        """The samples at `indices` (same classes and provenance; statistics are recomputed)."""
        indices = torch.as_tensor(indices, dtype=torch.int64, device=self.images.device)
        return ArrayDataset(
            images=self.images[indices],
            labels=self.labels[indices.to(self.labels.device)],
            classes=list(self.classes),
            name=self.name,
            split=split or self.split,
            source=self.source,
            checksum=self.checksum,
            notes=list(self.notes),
            skipped=list(self.skipped),
        )

    def split_off(self, fraction: float, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
        """(rest, held_out): a seeded, per-class (stratified) hold-out, e.g. a validation set from train."""
        keep, held = stratified_holdout(self.labels.cpu(), fraction, seed)
        return self.subset(keep), self.subset(held, split="val")


def stratified_holdout(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (keep, held): `fraction` of each class (at least one sample of any class with two or more)
    held out, chosen by a generator seeded with `seed`; both sorted, so the order does not depend on it."""
    if not 0.0 < fraction < 1.0:
        raise ClassicNetsError(f"the hold-out fraction must lie strictly between 0 and 1, got {fraction}")
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in torch.unique(labels).tolist():
        members = torch.nonzero(labels == c).flatten()
        n = len(members)
        take = 0 if n < 2 else min(n - 1, max(1, round(fraction * n)))
        held.append(members[torch.randperm(n, generator=gen)[:take]])
    held_idx = torch.cat(held).sort().values if held else torch.empty(0, dtype=torch.int64)
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[held_idx] = False
    return torch.nonzero(mask).flatten(), held_idx
