"""What `classicnets bench` measures: plain settings, free of torch so that the command line can show
their defaults without loading it."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from classicnets.errors import ClassicNetsError
from classicnets.training.config import RECIPES

PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass
class BenchSettings:
    """What to measure. `steps=None` times as many steps as fit in `seconds` (at least 3)."""

    model: str = "vgg11"
    width: float = 0.25
    fc_width: int | None = None  # hidden FC units of VGG/AlexNet (None: 4096 x width); 4096 = the tutorials' net
    size: int = 32
    channels: int = 1
    batch: int = 128
    precision: str | None = None  # None: the fast recipe's
    channels_last: bool | None = None  # None: the fast recipe's
    compile: bool = False
    steps: int | None = None
    warmup: int = 2
    seconds: float = 10.0
    baseline: bool = True
    peak: bool = True
    data: str = "fashion-mnist"
    data_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    matmul_size: int | None = None  # None: 2048 on a CPU, 8192 on a GPU

    def resolved(self) -> BenchSettings:
        fast = RECIPES["fast"]
        return dataclasses.replace(
            self,
            precision=self.precision if self.precision is not None else fast["precision"],
            channels_last=self.channels_last if self.channels_last is not None else fast["channels_last"],
        )

    def check(self) -> None:
        """Values a bench cannot run with, each refused in one line (the model name: `bench()`)."""
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ClassicNetsError(f"precision must be one of {', '.join(PRECISIONS)}; "
                                   f"got {self.precision!r}")
        for name in ("size", "channels", "batch"):
            if getattr(self, name) < 1:
                raise ClassicNetsError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise ClassicNetsError(f"channels must be 1 (grayscale) or 3 (RGB); got {self.channels}")
        if self.steps is not None and self.steps < 1:
            raise ClassicNetsError(f"steps must be at least 1; got {self.steps} "
                                   "(leave it out for a time-based count)")
        if self.warmup < 1:
            raise ClassicNetsError(f"warmup must be at least 1 (the first step allocates memory and picks "
                                   f"kernels); got {self.warmup}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ClassicNetsError(f"seconds must be a positive number; got {self.seconds}")
        if not self.width > 0:
            raise ClassicNetsError(f"width must be positive; got {self.width}")
