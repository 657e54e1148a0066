"""Learning-rate schedules as plain functions of the optimizer step.

Written out instead of using torch.optim.lr_scheduler so that one small, explicit state (the step and
the plateau bookkeeping) is all a checkpoint needs, and every schedule composes with warm-up the same
way. The lr for optimizer step `t` is `config.lr * factor(t)`; it is set on the param groups before
the step is taken.
"""

from __future__ import annotations

import math

import torch

from classicnets.training.config import TrainConfig

# One-cycle constants as in Smith & Topin 2018 and torch's OneCycleLR: start at peak/25, end at
# start/1e4; momentum moves opposite to the lr between 0.95 and 0.85.
ONECYCLE_DIV, ONECYCLE_FINAL_DIV = 25.0, 1e4
MOMENTUM_HIGH, MOMENTUM_LOW = 0.95, 0.85


def _cos_between(start: float, end: float, progress: float) -> float:
    """Cosine interpolation: `start` at progress 0, `end` at 1."""
    return end + (start - end) * (1 + math.cos(math.pi * min(max(progress, 0.0), 1.0))) / 2


class LRSchedule:
    """Sets lr (and, for onecycle, momentum) on every param group before each optimizer step."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int):
        self.optimizer = optimizer
        self.c = config
        self.steps_per_epoch = steps_per_epoch
        self.total_steps = max(1, config.epochs * steps_per_epoch)
        self.step_count = 0  # optimizer steps taken so far
        self.scale = 1.0  # plateau drops multiply this
        self.best = -1.0
        self.bad_epochs = 0
        self.drops = 0
        self.apply()

    def factor(self, t: int) -> float:
        c = self.c
        if c.schedule == "onecycle":
            rise = max(1, round(c.onecycle_pct * self.total_steps))
            if t < rise:
                return _cos_between(1 / ONECYCLE_DIV, 1.0, t / rise)
            tail = round(c.onecycle_tail_pct * self.total_steps)
            if not tail:
                final = 1 / (ONECYCLE_DIV * ONECYCLE_FINAL_DIV)
                return _cos_between(1.0, final, (t - rise) / max(1, self.total_steps - rise))
            knee = max(rise + 1, self.total_steps - tail)  # the anneal gets at least one step
            if t < knee:
                return _cos_between(1.0, c.onecycle_tail_lr, (t - rise) / (knee - rise))
            return c.onecycle_tail_lr * max(0, self.total_steps - t) / max(1, self.total_steps - knee)
        warmup_steps = c.warmup_epochs * self.steps_per_epoch
        warm = min(1.0, (t + 1) / warmup_steps) if warmup_steps > 0 else 1.0
        if c.schedule == "cosine":
            shape = _cos_between(1.0, 0.0, t / self.total_steps)
        elif c.schedule == "step":
            shape = c.lr_decay ** (t // (c.lr_step_epochs * self.steps_per_epoch))
        else:  # constant, plateau
            shape = 1.0
        return warm * shape * self.scale

    def momentum(self, t: int) -> float | None:
        """Onecycle's momentum for step t, or None to leave the optimizer's own."""
        if self.c.schedule != "onecycle" or not self.c.cycle_momentum:
            return None
        rise = max(1, round(self.c.onecycle_pct * self.total_steps))
        if t < rise:
            return _cos_between(MOMENTUM_HIGH, MOMENTUM_LOW, t / rise)
        return _cos_between(MOMENTUM_LOW, MOMENTUM_HIGH, (t - rise) / max(1, self.total_steps - rise))

    @property
    def lr(self) -> float:
        """The lr of the next optimizer step."""
        return self.c.lr * self.factor(self.step_count)

    @property
    def last_lr(self) -> float:
        """The lr the last optimizer step used (the next one's before any step)."""
        return self.c.lr * self.factor(max(self.step_count - 1, 0))

    def apply(self) -> None:
        lr, momentum = self.lr, self.momentum(self.step_count)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0)  # --head-lr-mult's group (training.setup.param_groups)
            if momentum is not None:
                if "betas" in group:
                    group["betas"] = (momentum, group["betas"][1])
                elif group.get("momentum", 0) > 0:
                    group["momentum"] = momentum

    def step(self) -> None:
        """Call after each optimizer step."""
        self.step_count += 1
        self.apply()

    def epoch_end(self, test_accuracy: float | None) -> str | None:
        """Plateau bookkeeping; returns a message when the lr was dropped."""
        if self.c.schedule != "plateau" or test_accuracy is None:
            return None
        if test_accuracy > self.best + 1e-4:
            self.best, self.bad_epochs = test_accuracy, 0
            return None
        self.bad_epochs += 1
        if self.bad_epochs < self.c.plateau_patience or self.drops >= self.c.max_lr_drops:
            return None
        self.scale *= self.c.lr_decay
        self.drops += 1
        self.bad_epochs = 0
        self.apply()
        return (f"test accuracy has not improved for {self.c.plateau_patience} epochs: lr "
                f"x{self.c.lr_decay:g} -> {self.lr:.3g} (drop {self.drops} of at most {self.c.max_lr_drops})")

    def state_dict(self) -> dict:
        return {"step": self.step_count, "scale": self.scale, "best": self.best,
                "bad_epochs": self.bad_epochs, "drops": self.drops}

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step"])
        self.scale = float(state["scale"])
        self.best = float(state["best"])
        self.bad_epochs = int(state["bad_epochs"])
        self.drops = int(state["drops"])
        self.apply()
