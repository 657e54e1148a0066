"""Training: one config dataclass, named recipes, and one trainer for CPU, GPU and many devices.

    >>> import classicnets
    >>> result = classicnets.train(recipe="d2l", epochs=1, limit_train=512)  # doctest: +SKIP
    >>> result.run_dir, result.best_test_acc                                  # doctest: +SKIP
"""

from classicnets.training.config import RECIPES, TrainConfig, resolve_config


def __getattr__(name):
    # The trainer imports torch; the config (and so `classicnets train --help`) does not need it.
    if name in ("train", "RunResult"):
        from classicnets.training import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module 'classicnets.training' has no attribute {name!r}")


__all__ = ["RECIPES", "RunResult", "TrainConfig", "resolve_config", "train"]
