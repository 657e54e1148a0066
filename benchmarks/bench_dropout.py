"""Our CPU dropout (`classicnets.models.layers.Dropout`) against torch's `nn.Dropout`, side by side.

Two measurements in one process: the layer alone (forward + backward on the fast recipe's classifier
activations, 256 x 1024 bf16), and the fast recipe's whole training step (VGG-11-BN width 1/4, 32x32,
bf16, channels_last) with the net's dropout layers swapped for torch's, timed in alternating turns with
our own so that a neighbour's load hits both alike.

    .venv/bin/python benchmarks/bench_dropout.py               # ~1 min
    .venv/bin/python benchmarks/bench_dropout.py --batch 128 --turns 8
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from classicnets.bench import BenchSettings, cores_busy, machine_info, prepare_trainer, train_steps
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
    p.add_argument("--turns", type=int, default=6, help="alternating turns per side")
    p.add_argument("--steps", type=int, default=20, help="steps per turn")
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()

    s = BenchSettings(model="vgg11_bn", size=32, batch=a.batch, threads=a.threads, baseline=False, peak=False)
    sides = {"torch nn.Dropout": prepare_trainer(s), "classicnets Dropout": prepare_trainer(s)}
    assert with_torch_dropout(sides["torch nn.Dropout"].model) == 2
    info = machine_info(sides["classicnets Dropout"].device)
    print(f"{info['name']} ({info['threads']} threads), other programs busy on {cores_busy()} cores, "
          f"torch {info['torch']}, {info['date']}")

    x = torch.randn(a.batch, 1024, dtype=torch.bfloat16)
    for name, layer in (("torch nn.Dropout", nn.Dropout(0.5)), ("classicnets Dropout", Dropout(0.5))):
        print(f"layer alone, {a.batch}x1024 bf16, p=0.5, forward+backward: {name:20s} {layer_ms(layer, x):6.2f} ms")

    steps = {name: train_steps(t) for name, t in sides.items()}
    for it in steps.values():
        for _ in range(3):
            next(it)
    rates: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(a.turns):
        for name, it in steps.items():
            start, images = time.perf_counter(), 0
            for _ in range(a.steps):
                images += next(it)
            rates[name].append(images / (time.perf_counter() - start))
    print(f"\nfast recipe's training step, vgg11_bn w1/4 32x32 bf16 channels_last, batch {a.batch}, "
          f"{a.turns} turns of {a.steps} steps:")
    for name, r in rates.items():
        print(f"  {name:20s} median {statistics.median(r):7.0f} images/s  (turns: {', '.join(f'{v:.0f}' for v in r)})")
    ours, theirs = rates["classicnets Dropout"], rates["torch nn.Dropout"]
    per_turn = sorted(o / t for o, t in zip(ours, theirs))
    print(f"  ours / torch's: median turn {statistics.median(per_turn):.3f}x "
          f"(min {per_turn[0]:.3f}, max {per_turn[-1]:.3f})")


if __name__ == "__main__":
    main()
