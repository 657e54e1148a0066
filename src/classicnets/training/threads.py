"""CPU threads that follow a busy neighbour: measure, try the other count, keep the faster.

OpenMP threads wait for each other at every layer. When another program takes one of the cores, one of
our threads runs only part of the time and the others spin waiting for it: measured 2026-12 on 2 cores,
the main job beside one Python busy loop kept 25% of its quiet speed with 2 threads, where 1 thread keeps
nearly all of one core. No single count is right on a shared laptop, so `AdaptiveThreads` measures the
images per second of the running loop in windows of about a second and

- tries one thread less when its threads got less CPU time than wall time (`starved`: another program
  runs on our cores; on a quiet machine spinning OpenMP threads count as busy) or when the rate fell
  below `slowdown` of what this count did before, and one thread more from time to time while below
  the default (the other program may have stopped): a trial runs one window, and the faster count is
  kept;
- rechecks every `recheck_seconds`, doubling the wait while the current count keeps winning;
- says so once, the first time it leaves the default count.

It is used only where a run did not ask for a number of threads (`--threads N` is obeyed exactly, so
that runs stay bitwise repeatable: reductions split over a different number of threads round
differently). `watch(batches)` wraps any loop over batches; `start()` begins a fresh window after a
pause (a test pass, a checkpoint).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

# How much faster another thread count must run to be chosen: below this, a difference is noise, and
# switching back and forth costs more than it wins. bench's pick before timing uses the same bar.
SWITCH_GAIN = 1.15


def images_in(batch: Any) -> int:
    """Images in an (x, y) batch or a tensor of images: the first dimension."""
    x = batch[0] if isinstance(batch, (tuple, list)) else batch
    return int(x.shape[0])


class AdaptiveThreads:
    """Pick the faster of neighbouring thread counts while a loop runs (see the module docstring)."""

    def __init__(self, default: int, *, say: Callable[[str], None] | None = None,
                 clock: Callable[[], float] = time.perf_counter,
                 cpu_clock: Callable[[], float] = time.process_time,
                 set_threads: Callable[[int], None] = torch.set_num_threads,
                 window_seconds: float = 1.0, min_window_steps: int = 3, slowdown: float = 0.6,
                 starved: float = 0.8, gain: float = SWITCH_GAIN, recheck_seconds: float = 20.0, max_recheck_seconds: float = 160.0):
        if default < 1:
            raise ValueError(f"default threads must be at least 1; got {default}")
        self.default = self.current = default
        self.say = say or (lambda text: None)
        self.clock, self.cpu_clock, self.set_threads = clock, cpu_clock, set_threads
        self.window_seconds, self.min_window_steps = window_seconds, min_window_steps
        self.slowdown, self.starved, self.gain = slowdown, starved, gain
        self.recheck_seconds, self.max_recheck_seconds = recheck_seconds, max_recheck_seconds
        self.wait = recheck_seconds
        self.rate: dict[int, float] = {}  # the last window's images/s of each count
        self.usual: dict[int, float] = {}  # what a count did before, to notice a jump
        self.slow_windows = 0
        self.trial: int | None = None  # the count being tried this window
        self.next_check: float | None = None  # clock time before which no trial starts (None: any time)
        self.switches = 0
        self.told = False
        self.start()

    # --- the loop's side ------------------------------------------------------------------------

    def start(self) -> None:
        """Begin a fresh window (after a pause whose time is not the loop's) and skip its first step."""
        self.window_start: float | None = None
        self.images = self.steps = 0

    def step_done(self, images: int) -> None:
        """Count a finished step of `images` images; may change torch's threads for the next one."""
        now = self.clock()
        if self.window_start is None:  # the first step after a start or a switch pays for warming up
            self.window_start, self.window_cpu = now, self.cpu_clock()
            return
        self.images += images
        self.steps += 1
        seconds = now - self.window_start
        if seconds >= self.window_seconds and self.steps >= self.min_window_steps:
            busy = (self.cpu_clock() - self.window_cpu) / seconds / (self.trial or self.current)  # per thread
            self._window_done(self.images / seconds, busy, now)

    def watch(self, batches: Iterable, images_of: Callable[[Any], int] = images_in) -> Iterator:
        """Yield `batches` unchanged; each batch's step is timed from one `next()` to the following one."""
        self.start()
        pending = 0
        for batch in batches:
            if pending:
                self.step_done(pending)
            pending = images_of(batch)
            yield batch
        if pending:
            self.step_done(pending)

    # --- deciding -------------------------------------------------------------------------------

    def _window_done(self, rate: float, busy: float, now: float) -> None:
        count = self.current
        if self.trial is not None:
            self._trial_done(rate, now)
        else:
            self.rate[count] = rate
            usual = self.usual.get(count, rate)
            self.slow_windows = self.slow_windows + 1 if rate < self.slowdown * usual else 0
            if not self.slow_windows:
                self.usual[count] = max(usual, rate)
            due = self.next_check is None or now >= self.next_check
            if due and count < self.default:  # the other program may have stopped
                self._try(count + 1)
            elif due and count > 1 and (busy < self.starved or self.slow_windows >= 2):
                self._try(count - 1)  # another program takes CPU time from our threads
        self.start()

    def _try(self, count: int) -> None:
        self.trial = count
        self.set_threads(count)

    def _trial_done(self, rate: float, now: float) -> None:
        trial, before = self.trial, self.current
        self.trial = None
        self.rate[trial] = rate
        self.slow_windows = 0
        if rate > self.gain * self.rate[before]:
            self.current = trial
            self.usual[trial] = rate
            self.switches += 1
            self.wait = self.recheck_seconds
            self._tell(before, trial)
            further = trial + (trial - before)  # keep going while it pays (several busy programs)
            if 1 <= further <= self.default:
                self._try(further)
            else:
                self.next_check = now + self.wait
        else:
            self.set_threads(before)
            self.usual[before] = self.rate[before]  # the slower rate is the new normal: stop re-trying it
            self.wait = min(2 * self.wait, self.max_recheck_seconds)
            self.next_check = now + self.wait

    def _tell(self, before: int, now_threads: int) -> None:
        if self.told or now_threads >= self.default:
            return
        self.told = True
        self.say(f"threads: {before} thread(s) ran {self.rate[before]:,.0f} images/s, {now_threads} run "
                 f"{self.rate[now_threads]:,.0f} (another program busy on this CPU?): going on with "
                 f"{now_threads}, rechecking from time to time; --threads N fixes the count")

    def summary(self) -> str | None:
        """One line for the end of a run, when the count ever changed."""
        if not self.switches:
            return None
        return (f"threads: changed {self.switches} time(s) while other programs used the CPU; "
                f"{self.current} at the end (default {self.default})")


def adaptive_threads(threads: int | None, *, deterministic: bool = False, distributed: bool = False,
                     device: torch.device | str = "cpu", say: Callable[[str], None] | None = None
                     ) -> AdaptiveThreads | None:
    """An `AdaptiveThreads` for a CPU run that did not ask for a count, else None (the count is obeyed):
    not under --deterministic (same bits every run) nor with several processes (they wait for each other)."""
    if threads is not None or deterministic or distributed or torch.device(device).type != "cpu" \
            or torch.get_num_threads() < 2:
        return None
    return AdaptiveThreads(torch.get_num_threads(), say=say)


def watched(batches: Iterable, governor: AdaptiveThreads | None) -> Iterable:
    """`batches` timed by `governor`, or unchanged when there is none."""
    return batches if governor is None else governor.watch(batches)
