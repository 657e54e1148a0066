"""Adaptive threads (training.threads): on a simulated CPU whose speed per thread count changes when
another program starts or stops, the governor keeps the faster count, rechecks, says so once; and the
trainer and `classicnets eval` run their batches through it only when --threads was not given."""

from __future__ import annotations

from typing import ClassVar

import pytest
import torch

import classicnets
from classicnets.training import threads as threads_module
from classicnets.training.threads import AdaptiveThreads, adaptive_threads, images_in


class SimulatedCpu:
    """Images/s and the busy fraction of each thread for a thread count, quiet or beside a busy program;
    a step of 256 images advances a fake wall clock and a fake process CPU clock accordingly."""

    QUIET: ClassVar = {2: (2000.0, 1.0), 1: (1100.0, 1.0)}  # (images/s, CPU time per thread / wall time)
    LOADED: ClassVar = {2: (500.0, 0.67), 1: (1050.0, 1.0)}  # two threads wait for each other; one keeps a core

    def __init__(self, loaded_between=(), quiet_busy: float = 1.0):
        self.wall = self.cpu = 0.0
        self.threads = 2
        self.loaded_between = list(loaded_between)
        self.quiet_busy = quiet_busy
        self.images = 0
        self.set_calls: list[int] = []
        self.said: list[str] = []

    def loaded(self) -> bool:
        return any(a <= self.wall < b for a, b in self.loaded_between)

    def set_threads(self, n: int) -> None:
        self.set_calls.append(n)
        self.threads = n

    def step(self, images: int = 256) -> None:
        rate, busy = (self.LOADED if self.loaded() else self.QUIET)[self.threads]
        if not self.loaded():
            busy = self.quiet_busy
        seconds = images / rate
        self.wall += seconds
        self.cpu += seconds * busy * self.threads
        self.images += images

    def governor(self, **kw) -> AdaptiveThreads:
        return AdaptiveThreads(2, say=self.said.append, clock=lambda: self.wall, cpu_clock=lambda: self.cpu,
                               set_threads=self.set_threads, **kw)

    def run(self, governor: AdaptiveThreads, until: float) -> None:
        while self.wall < until:
            self.step()
            governor.step_done(256)


def test_quiet_machine_keeps_the_default_and_tries_nothing():
    cpu = SimulatedCpu()
    g = cpu.governor()
    cpu.run(g, 300)
    assert cpu.set_calls == [] and g.current == 2 and cpu.said == [] and g.summary() is None


def test_busy_from_the_start_switches_to_one_thread_within_seconds_and_says_so_once():
    cpu = SimulatedCpu(loaded_between=[(0, 1e9)])
    g = cpu.governor()
    cpu.run(g, 5)
    assert g.current == 1 and cpu.threads == 1
    cpu.run(g, 600)  # rechecks of 2 threads lose: back to 1 each time, and nothing more is said
    assert cpu.threads == 1 and len(cpu.said) == 1
    assert "2 thread(s) ran 500 images/s, 1 run 1,050" in cpu.said[0] and "--threads N" in cpu.said[0]
    # the rechecks of 2 threads back off (20, 40, 80, 160, 160 s ...): few windows spent at the slow count
    assert 2 <= cpu.set_calls.count(2) <= 6
    assert cpu.images / cpu.wall > 0.9 * SimulatedCpu.LOADED[1][0]


def test_follows_a_neighbour_that_starts_and_stops():
    cpu = SimulatedCpu(loaded_between=[(60, 120)])
    g = cpu.governor()
    cpu.run(g, 59)
    assert cpu.threads == 2
    cpu.run(g, 65)  # starved windows: one thread tried and kept within a few seconds
    assert cpu.threads == 1
    cpu.run(g, 120 + 25)  # the neighbour left: the next recheck (20 s after the switch or its backoff) goes back
    cpu.run(g, 120 + 45)
    assert cpu.threads == 2 and g.current == 2
    assert g.switches == 2 and len(cpu.said) == 1 and "changed 2 time(s)" in g.summary()


def test_a_slowdown_without_starved_threads_also_triggers_a_trial():
    """A rate that falls to under `slowdown` of what the count did, twice, is tried even when the CPU clock
    looks busy (e.g. the neighbour and our spinning threads keep it full)."""
    cpu = SimulatedCpu(loaded_between=[(30, 1e9)])
    cpu.LOADED = {2: (500.0, 1.0), 1: (1050.0, 1.0)}
    g = cpu.governor()
    cpu.run(g, 40)
    assert cpu.threads == 1


def test_a_trial_that_loses_goes_back_and_backs_off():
    """Threads that look starved on a quiet machine (a loop that leaves them idle) cost at most a few
    one-second trials: 2 threads stay, the waits double up to the cap."""
    cpu = SimulatedCpu(quiet_busy=0.5)
    g = cpu.governor()
    cpu.run(g, 600)
    assert cpu.threads == 2 and g.current == 2
    assert 3 <= cpu.set_calls.count(1) <= 7  # trials at ~0, 20, 60, 140, 300, 460 s
    assert cpu.said == []


def test_watch_yields_the_batches_unchanged_and_times_every_step():
    seen = []

    class Recording(AdaptiveThreads):
        def step_done(self, images):
            seen.append(images)

    batches = [(torch.zeros(n, 1, 2, 2), torch.zeros(n)) for n in (4, 4, 3)]
    g = Recording(2, set_threads=lambda n: None)
    assert list(g.watch(batches)) == batches
    assert seen == [4, 4, 3]
    assert images_in(torch.zeros(5, 3)) == 5


def test_only_a_cpu_run_that_did_not_ask_for_threads_adapts():
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert isinstance(adaptive_threads(None), AdaptiveThreads)
        assert adaptive_threads(2) is None  # --threads N is obeyed exactly
        assert adaptive_threads(None, deterministic=True) is None
        assert adaptive_threads(None, distributed=True) is None
        assert adaptive_threads(None, device="cuda") is None
        torch.set_num_threads(1)
        assert adaptive_threads(None) is None  # nothing to choose from
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError):
        AdaptiveThreads(0)


@pytest.mark.realdata
def test_the_trainer_times_its_training_and_test_batches_only_without_threads(tmp_path, monkeypatch):
    from tests.test_train import TINY

    made = []

    def recording(threads, **kw):
        governor = threads_module.adaptive_threads(threads, **kw)
        if governor is not None:
            counted = governor.counted = []
            original = governor.step_done
            governor.step_done = lambda images: (counted.append(images), original(images))[-1]
            made.append(governor)
        return governor

    monkeypatch.setattr("classicnets.training.trainer.adaptive_threads", recording)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)  # as on a 2-core machine
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    classicnets.train({**TINY, "threads": None, "epochs": 1, "run_dir": str(tmp_path / "a")})
    assert len(made) == 1
    assert sum(made[0].counted) == TINY["limit_train"] + TINY["limit_test"]
    classicnets.train({**TINY, "threads": 1, "epochs": 1, "run_dir": str(tmp_path / "b")})
    assert len(made) == 1  # an explicit count: no governor
