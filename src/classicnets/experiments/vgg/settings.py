"""What `classicnets reproduce vgg` was asked for: plain settings, free of torch so that the command line
can show their defaults without loading it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from classicnets.experiments.vgg.paper import DEFAULT_CROP_GRID, DEFAULT_GRID_RECIPE


@dataclass
class GridSettings:
    """What the command was asked for. Everything but seeds must match to continue a grid in OUT.

    The defaults finish in about an hour on a 2-core CPU: 3 seeds x 8 runs x 240k image-epochs at about
    5.3 ms of CPU per image-epoch for the 8 runs, plus about 0.12 s of CPU per test image for their 5
    protocols, = about 76 CPU-minutes, 40 minutes on two free cores (jobs=2). Measured (RESULTS.md,
    2026-12-02): 37 minutes, 54 CPU-minutes.
    """

    data: str = "fashion-mnist"
    width: float = 0.125
    size: int = 32
    epochs: int = 4
    limit_train: int | None = None
    limit_test: int | None = 2000
    recipe: str = DEFAULT_GRID_RECIPE
    bn: bool = False
    grid: int = DEFAULT_CROP_GRID  # multi-crop grid per side (the paper: 5)
    train_options: dict[str, Any] = field(default_factory=dict)  # extra trainer fields (--set KEY=VALUE)

    def comparable(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


DEFAULT_JOBS = 2  # runs at once: both cores of a 2-core CPU, one thread each
