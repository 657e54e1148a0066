"""Timing a step fairly on a shared machine: alternating turns, warm-up, the matmul peak, MACs per image.

`s` below is anything with `steps` (int or None) and `seconds` (float), e.g. a `BenchSettings`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from classicnets.inspect import summary
from classicnets.training.threads import SWITCH_GAIN

MIN_TIMED_STEPS = 3
TURNS = 5  # a time-based measurement alternates the two sides about this many times


@dataclass
class Timing:
    """One timed run. `cpu_seconds` is this process's CPU time meanwhile (DataLoader workers not included):
    on an idle machine about threads x seconds; much less means the run was starved by other programs."""

    steps: int
    images: int
    seconds: float
    cpu_seconds: float

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")



def sync(device: torch.device) -> None:
    """Wait for the GPU's queued work, so a clock reading covers it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(steps: Iterator[int], n: int, device: torch.device) -> None:
    for _ in range(n):
        next(steps)
    sync(device)


class StepClock:
    """Timed steps of one side, summed over the turns it gets."""

    def __init__(self, steps: Iterator[int], device: torch.device):
        self.steps, self.device = steps, device
        self.count = self.images = 0
        self.seconds = self.cpu_seconds = 0.0

    def done(self, s, running: float = 0.0) -> bool:
        """Has this side its steps (`s.steps`), or its seconds and 3 steps (`running`: of the turn so far)?"""
        if s.steps is not None:
            return self.count >= s.steps
        return self.count >= MIN_TIMED_STEPS and self.seconds + running >= s.seconds

    def turn(self, s, seconds: float | None) -> float:
        """Steps for about `seconds` (one only when None), ending early when done; the turn's images/s."""
        sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        images = 0
        while True:
            images += next(self.steps)
            self.count += 1
            elapsed = time.perf_counter() - start
            if seconds is None or elapsed >= seconds or self.done(s, elapsed):
                break
        sync(self.device)
        elapsed = time.perf_counter() - start
        self.images += images
        self.seconds += elapsed
        self.cpu_seconds += time.process_time() - cpu_start
        return images / elapsed

    def timing(self) -> Timing:
        return Timing(self.count, self.images, self.seconds, self.cpu_seconds)


def time_in_turns(ours: Iterator[int], theirs: Iterator[int] | None, s,
                  device: torch.device) -> tuple[Timing, Timing | None, list[float]]:
    """Time `ours` and `theirs` (both warmed up) in alternating turns, so that another program starting or
    stopping meanwhile slows both alike; returns both timings and ours/theirs images/s of each turn pair.
    With `s.steps`, turns are single steps; else about `s.seconds / TURNS` each, until each side has
    `s.seconds` and 3 steps. `theirs=None` times ours alone."""
    a = StepClock(ours, device)
    b = StepClock(theirs, device) if theirs is not None else None
    turn = None if s.steps is not None else s.seconds / TURNS
    ratios = []
    while not (a.done(s) and (b is None or b.done(s))):
        ra = a.turn(s, turn) if not a.done(s) else None
        rb = b.turn(s, turn) if b is not None and not b.done(s) else None
        if ra and rb:
            ratios.append(ra / rb)
    return a.timing(), (b.timing() if b is not None else None), ratios


def faster_threads(steps: Iterator[int], device: torch.device, counts: list[int], seconds: float = 1.0,
                   gain: float = SWITCH_GAIN) -> tuple[int, dict[int, float]]:
    """Time `steps` for about `seconds` (3 steps at least) at each thread count, first one first; leave torch
    at the one to use and return it with each count's images/s. A later count must be `gain` times faster
    than the first to be picked: beside a busy program one thread fewer is 2-4x faster, on a quiet machine
    slower (`training.threads` explains why)."""
    rates = {}
    for n in counts:
        torch.set_num_threads(n)
        next(steps)  # the first step at a new count pays for the switch
        sync(device)
        start, images, count = time.perf_counter(), 0, 0
        while count < MIN_TIMED_STEPS or time.perf_counter() - start < seconds:
            images += next(steps)
            count += 1
        sync(device)
        rates[n] = images / (time.perf_counter() - start)
    first = counts[0]
    best = max(counts, key=lambda n: rates[n] / (1.0 if n == first else gain))
    torch.set_num_threads(best)
    return best, rates


class Counted:
    """Hands out batches until `s.steps` are given, or (steps None) until `s.seconds` passed and 3 were."""

    def __init__(self, batches: Iterator, s):
        self.batches, self.s = batches, s
        self.steps = self.images = 0

    def __iter__(self) -> Iterator:
        start = time.perf_counter()
        for x, y in self.batches:
            if self.s.steps is not None:
                if self.steps >= self.s.steps:
                    return
            elif self.steps >= MIN_TIMED_STEPS and time.perf_counter() - start >= self.s.seconds:
                return
            self.steps += 1
            self.images += len(y)
            yield x, y


def macs_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    """Forward multiply-accumulates of one image, counted by `classicnets.inspect.summary`."""
    return int(summary(model, shape).total_macs)


def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None,
                seconds: float = 1.0) -> float:
    """FLOP/s of an n x n by n x n torch.matmul on `device` with the current threads (n: 2048 on a CPU,
    8192 on a GPU): the fastest of the products timed over about `seconds` after a warm-up one (groups
    of 10 on a GPU), so a moment's interference from another program lowers it less."""
    n = n or (8192 if device.type == "cuda" else 2048)
    group = 10 if device.type == "cuda" else 1
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)
    sync(device)
    best, start, timed = 0.0, time.perf_counter(), 0
    while timed < 3 or time.perf_counter() - start < seconds:
        tick = time.perf_counter()
        for _ in range(group):
            torch.matmul(a, b, out=out)
        sync(device)
        best = max(best, 2 * n**3 * group / (time.perf_counter() - tick))
        timed += 1
    return best
