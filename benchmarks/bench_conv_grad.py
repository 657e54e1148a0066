"""Conv weight gradients over small maps: oneDNN's own against ours (`training.convgrad`), side by side.

Two measurements in one process: each conv of a net on its real map size alone (the weight gradient
only: oneDNN's `convolution_backward` against the convolution `convgrad.weight_grad` runs, median of
repeats), and a recipe's whole training step with `small_map_conv_grad` on and off, timed in alternating
turns (`classicnets.bench.time_in_turns`, as `classicnets bench` does) so that a neighbour's load hits both
alike.

    .venv/bin/python benchmarks/bench_conv_grad.py                        # the fast recipe, ~1 min
    .venv/bin/python benchmarks/bench_conv_grad.py --set head=fc --set width=1 --seconds 30
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
    time_in_turns,
    train_steps,
    warm_up,
)
from classicnets.errors import ClassicNetsError
from classicnets.training import build, resolve_config, torch_settings
from classicnets.training.convgrad import MAX_PIXELS, weight_grad
from classicnets.training.setup import PRECISIONS


def median_ms(fn, repeats: int = 30) -> float:
    times = []
    for _ in range(repeats + 3):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times[3:])


def conv_inputs(model: nn.Module, shape: tuple[int, ...], memory_format) -> list[tuple[nn.Conv2d, torch.Size]]:
    """Each conv of `model` with the shape of the input it gets, from one forward pass."""
    seen = []
    hooks = [m.register_forward_hook(lambda m, inp, out: seen.append((m, inp[0].shape)))
             for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.no_grad():
        model.eval()(torch.zeros(shape).contiguous(memory_format=memory_format))
    for h in hooks:
        h.remove()
    return seen


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a training setting on top of the fast recipe (as `classicnets train` takes it)")
    p.add_argument("--seconds", type=float, default=20.0, help="timed seconds per side, in 5 turns each")
    p.add_argument("--threads", type=int, default=None, help="default: the trainer's")
    a = p.parse_args()
    if a.seconds <= 0:
        p.error(f"--seconds must be more than 0, got {a.seconds:g}")
    settings = {}
    for item in a.set:
        key, sep, value = item.partition("=")
        if not sep:
            p.error(f"--set wants KEY=VALUE, got {item!r}")
        settings[key.strip()] = value.strip()
    settings.update(progress="none", tensorboard="off", plots=False, limit_train=4096, limit_test=256)
    try:
        configs = [resolve_config(settings, recipe="fast", small_map_conv_grad=on) for on in (False, True)]
        runs = [build(c) for c in configs]
    except ClassicNetsError as e:
        p.error(str(e))
    native, ours = runs
    c, device = ours.config, ours.device
    dtype = PRECISIONS[ours.precision] or torch.float32
    memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
    with torch_settings(threads=a.threads or c.threads or 2):
        info = machine_info(device)
        print(f"{info['name']} ({info['threads']} threads), other programs busy on {cores_busy()} cores, "
              f"torch {info['torch']}, {info['date']}")
        print(f"{c.model} width {c.width} at {ours.size}x{ours.size}, {dtype}, "
              f"{'channels_last' if c.channels_last else 'NCHW'}, batch {ours.micro_batch}; our path takes maps "
              f"of at most {MAX_PIXELS.get(dtype, 0)} pixels in this dtype")
        print("\nweight gradient of each conv alone (ms, median): oneDNN's / as a convolution")
        shape = (ours.micro_batch, ours.in_channels, ours.size, ours.size)
        for conv, x_shape in conv_inputs(ours.model, shape, memory_format):
            if conv.stride != (1, 1) or conv.groups != 1 or conv.dilation != (1, 1):
                continue
            pad = tuple(conv.padding)
            out = (x_shape[0], conv.out_channels, *(n + 2 * q - k + 1 for n, q, k in
                                                    zip(x_shape[2:], pad, conv.kernel_size)))
            x = torch.randn(x_shape, dtype=dtype).contiguous(memory_format=memory_format)
            g = torch.randn(out, dtype=dtype).contiguous(memory_format=memory_format)
            w = conv.weight.detach().to(dtype)
            theirs = median_ms(lambda x=x, g=g, w=w, pad=pad: torch.ops.aten.convolution_backward(
                g, x, w, None, [1, 1], list(pad), [1, 1], False, [0, 0], 1, [False, True, False]))
            mine = median_ms(lambda x=x, g=g, pad=pad: weight_grad(x, g, pad))
            used = x_shape[2] * x_shape[3] <= MAX_PIXELS.get(dtype, 0)
            print(f"  {conv.in_channels:4d} -> {conv.out_channels:4d} on {x_shape[2]:3d}x{x_shape[3]:<3d} "
                  f"{theirs:7.2f} / {mine:7.2f}  ({theirs / mine:5.2f}x){'  <- ours' if used else ''}")

        steps = {name: train_steps(run) for name, run in (("oneDNN's", native), ("ours", ours))}
        for it in steps.values():
            warm_up(it, 3, device)
        ours_timing, native_timing, ratios = time_in_turns(steps["ours"], steps["oneDNN's"],
                                                           BenchSettings(seconds=a.seconds), device)
    print(f"\nwhole training step, {a.seconds:g} s per side in alternating turns:")
    print(format_turns(("ours on small maps", ours_timing), ("oneDNN's weight grads", native_timing), ratios,
                       "ours / oneDNN's"))


if __name__ == "__main__":
    main()
