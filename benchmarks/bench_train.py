"""Which speed settings pay on this machine: the training step of one net under each combination of
batch norm, precision (fp32 / bf16), memory layout (NCHW / channels_last) and optionally torch.compile.

Each cell is the trainer's own step (as `classicnets bench` times it: fast-recipe setup, device-resident
loader, batched augmentation) for --seconds. The cells run round-robin --repeats times and the median is
kept, so a neighbour's load drifting over the run hits every cell alike. MFU is against the matmul peak
of the cell's precision, measured once at the start.

    .venv/bin/python benchmarks/bench_train.py                       # VGG-11 width 1/4 at 32: ~2-3 min
    .venv/bin/python benchmarks/bench_train.py --size 224 --seconds 8 --repeats 1
    .venv/bin/python benchmarks/bench_train.py --model vgg16 --compile
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch

from classicnets.bench import (
    BenchSettings,
    bench_config,
    cores_busy,
    machine_info,
    macs_per_image,
    matmul_peak,
    prepared,
    time_in_turns,
    train_steps,
    warm_up,
)
from classicnets.training.runtime import pick_device, run_settings, torch_settings


def measure(settings: BenchSettings) -> tuple[float, float, int]:
    """(images/s, threads busy, forward MACs per image) of one cell."""
    with prepared(settings) as run:
        macs = macs_per_image(run.model, (settings.channels, settings.size, settings.size))
        steps = train_steps(run)
        warm_up(steps, settings.warmup, run.device)
        timing = time_in_turns(steps, None, settings, run.device)[0]
    return timing.images_per_sec, timing.cpu_seconds / timing.seconds, macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg11", help="the plain net; its _bn twin is measured too")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--seconds", type=float, default=5.0, help="timed seconds per cell and repeat")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="also the compiled variants (minutes of compiling)")
    p.add_argument("--no-bn", action="store_true", help="only the plain net")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="auto")
    a = p.parse_args()

    models = [a.model] + ([] if a.no_bn or a.model.endswith("_bn") else [a.model + "_bn"])
    compiles = [False, True] if a.compile else [False]
    cells = list(itertools.product(models, ("fp32", "bf16"), (False, True), compiles))
    base = BenchSettings(width=a.width, size=a.size, batch=a.batch, seconds=a.seconds, warmup=a.warmup,
                         threads=a.threads, device=a.device, baseline=False, peak=False)
    config = bench_config(base)
    device = pick_device(config.device)
    with torch_settings(**run_settings(config, device)):  # the threads the cells will use
        info = machine_info(device)
        peaks = {p: matmul_peak(dt, device) for p, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"{info['name']} ({info['device']}, {info['threads']} threads), "
          f"other programs busy on {cores_busy()} cores, "
          f"torch {info['torch']}, {info['date']}")
    print(f"matmul peak: fp32 {peaks['fp32'] / 1e9:.1f} GFLOP/s, bf16 {peaks['bf16'] / 1e9:.1f} GFLOP/s; "
          f"{a.model} width {a.width:g} at {a.size}x{a.size}, batch {a.batch}\n", flush=True)

    rates: dict[tuple, list[float]] = {cell: [] for cell in cells}
    busy: dict[tuple, list[float]] = {cell: [] for cell in cells}
    macs: dict[str, int] = {}
    start = time.perf_counter()
    for repeat in range(a.repeats):
        for cell in cells:
            model, precision, channels_last, compiled = cell
            s = BenchSettings(**{**base.__dict__, "model": model, "precision": precision,
                                 "channels_last": channels_last, "compile": compiled})
            rate, threads_busy, macs[model] = measure(s)
            rates[cell].append(rate)
            busy[cell].append(threads_busy)
            print(f"  repeat {repeat + 1}: {model:10s} {precision} {'NHWC' if channels_last else 'NCHW'}"
                  f"{' compiled' if compiled else ''}: {rate:8.1f} images/s "
                  f"({threads_busy:.1f} threads busy)",
                  flush=True)
    reference = statistics.median(rates[cells[0]])
    minutes = (time.perf_counter() - start) / 60
    print(f"\nmedian of {a.repeats} ({minutes:.1f} min); x = relative to the first row")
    print(f"{'net':10s} {'precision':9s} {'layout':6s} {'compiled':8s} {'images/s':>9s} {'x':>6s} "
          f"{'MFU':>6s}")
    for cell in cells:
        model, precision, channels_last, compiled = cell
        rate = statistics.median(rates[cell])
        mfu = rate * 6 * macs[model] / peaks[precision]
        layout = "NHWC" if channels_last else "NCHW"
        print(f"{model:10s} {precision:9s} {layout:6s} {'yes' if compiled else 'no':8s} "
              f"{rate:9.1f} {rate / reference:6.2f} {100 * mfu:5.1f}%")


if __name__ == "__main__":
    main()
