"""Speed, measured in one run: our training step against the tutorials' and against the machine's limit.

`bench()` (in `measure`) builds the fast recipe's run with `classicnets.training.build` and times the
trainer's own loop over it beside the tutorials' loop (`baseline`), in alternating turns (`timing`), and
against a matmul peak measured on the spot; `format_report` (in `report`) prints the table. `settings`
holds `BenchSettings`, free of torch for the command line's --help.

    >>> from classicnets.bench import bench, format_report
    >>> print(format_report(bench(model="vgg11", size=32, seconds=5)))   # doctest: +SKIP
"""

import importlib

from classicnets.bench.settings import PRECISIONS, BenchSettings

# The names below import torch: loaded on first use, so `classicnets bench --help` does not wait for it.
_LAZY = {
    "TUTORIAL_LR": "baseline", "TUTORIAL_WORKERS": "baseline", "PILImages": "baseline",
    "TutorialLoop": "baseline", "tutorial_model_name": "baseline",
    "DTYPES": "measure", "BenchResult": "measure", "bench": "measure", "bench_config": "measure",
    "prepared": "measure", "time_eval": "measure", "train_steps": "measure",
    "cores_busy": "report", "format_report": "report", "format_turns": "report", "machine_info": "report",
    "Timing": "timing", "faster_threads": "timing", "macs_per_image": "timing", "matmul_peak": "timing", "sync": "timing",
    "time_in_turns": "timing", "warm_up": "timing",
}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"classicnets.bench.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'classicnets.bench' has no attribute {name!r}")


__all__ = [
    "DTYPES", "PRECISIONS", "TUTORIAL_LR", "TUTORIAL_WORKERS", "BenchResult", "BenchSettings", "PILImages",
    "Timing", "TutorialLoop", "bench", "bench_config", "cores_busy", "faster_threads", "format_report", "format_turns",
    "machine_info",
    "macs_per_image", "matmul_peak", "prepared", "sync", "time_eval", "time_in_turns", "train_steps",
    "tutorial_model_name", "warm_up",
]
