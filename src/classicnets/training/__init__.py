"""Training: one config dataclass and named recipes, `build(config)` for the parts of a run, the one
training step, and the trainer's loop for CPU, GPU and many devices.

    >>> import classicnets
    >>> result = classicnets.train(recipe="d2l", epochs=1, limit_train=512)  # doctest: +SKIP
    >>> result.run_dir, result.best_test_acc                                  # doctest: +SKIP

    >>> from classicnets.training import build, optimizer_steps, resolve_config, torch_settings
    >>> with torch_settings(threads=2):                                         # doctest: +SKIP
    ...     run = build(resolve_config(epochs=1))
    ...     for loss in optimizer_steps(run.step, run.train_loader): ...
"""

import importlib

from classicnets.training.config import RECIPES, TrainConfig, resolve_config

# The names below import torch; they are loaded on first use so that the config (and with it
# `classicnets train --help`) does not pay for that.
_LAZY = {
    "train": "trainer", "RunResult": "trainer", "Trainer": "trainer",
    "build": "setup", "RunParts": "setup",
    "TrainStep": "step", "ClassificationLoss": "step", "optimizer_steps": "step",
    "torch_settings": "runtime",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"classicnets.training.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'classicnets.training' has no attribute {name!r}")


__all__ = ["RECIPES", "ClassificationLoss", "RunParts", "RunResult", "TrainConfig", "TrainStep", "Trainer", "build",
           "optimizer_steps", "resolve_config", "torch_settings", "train"]
