"""Our CPU dropout (`classicnets.models.layers.Dropout`) against torch's `nn.Dropout`, side by side.

Two measurements in one process: the layer alone (forward + backward on the fast recipe's classifier
activations, 256 x 1024 bf16), and the fast recipe's whole training step (VGG-11-BN width 1/4, 32x32,
bf16, channels_last) with the net's dropout layers swapped for torch's, timed against our own in
alternating turns (`classicnets.bench.time_in_turns`, as `classicnets bench` does) so that a neighbour's
load hits both alike.

    .venv/bin/python benchmarks/bench_dropout.py               # ~1 min
    .venv/bin/python benchmarks/bench_dropout.py --batch 128 --seconds 30
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from classicnets.bench import (
    BenchSettings,
    cores_busy,
    format_turns,
    machine_info,
    prepared,
    time_in_turns,
    train_steps,
    warm_up,
)
from classicnets.models.layers import Dropout


def layer_ms(layer: nn.Module, x: torch.Tensor, repeats: int = 50) -> float:
    """Median ms of forward + backward."""
    times = []
    for _ in range(repeats + 3):
        xi = x.detach().requires_grad_()
        start = time.perf_counter()
        layer(xi).sum().backward()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[3:])


def with_torch_dropout(model: nn.Module) -> int:
    """Swap every classicnets Dropout in `model` for torch's own; returns how many."""
    swapped = 0
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, Dropout):
                setattr(module, name, nn.Dropout(child.p, child.inplace))
                swapped += 1
    return swapped


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=256, help="training batch (the fast recipe's: 256)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per side, in 5 turns each")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()

    s = BenchSettings(model="vgg11_bn", size=32, batch=a.batch, threads=a.threads, seconds=a.seconds,
                      warmup=3, baseline=False, peak=False)
    with prepared(s) as torch_side, prepared(s) as our_side:
        assert with_torch_dropout(torch_side.model) == 2
        info = machine_info(our_side.device)
        print(f"{info['name']} ({info['threads']} threads), other programs busy on {cores_busy()} cores, "
              f"torch {info['torch']}, {info['date']}")

        x = torch.randn(a.batch, 1024, dtype=torch.bfloat16)
        for name, layer in (("torch nn.Dropout", nn.Dropout(0.5)), ("classicnets Dropout", Dropout(0.5))):
            print(f"layer alone, {a.batch}x1024 bf16, p=0.5, forward+backward: {name:20s} "
                  f"{layer_ms(layer, x):6.2f} ms")

        theirs, ours = train_steps(torch_side), train_steps(our_side)
        device = our_side.device
        warm_up(theirs, s.warmup, device)
        warm_up(ours, s.warmup, device)
        ours_timing, theirs_timing, ratios = time_in_turns(ours, theirs, s, device)
    print(f"\nfast recipe's training step, vgg11_bn w1/4 32x32 bf16 channels_last, batch {a.batch}, "
          f"{a.seconds:g} s per side in alternating turns:")
    print(format_turns(("classicnets Dropout", ours_timing), ("torch nn.Dropout", theirs_timing), ratios,
                       "ours / torch's"))

if __name__ == "__main__":
    main()
