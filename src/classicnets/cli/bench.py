"""`classicnets bench`: training and eval throughput, MFU, peak memory, the tutorials' loop side by side."""

from __future__ import annotations

import argparse
import json
import sys


def register(subparsers) -> None:
    from classicnets.bench.settings import PRECISIONS, BenchSettings
    from classicnets.training.config import RECIPES

    d, fast = BenchSettings(), RECIPES["fast"]
    on_off = argparse.BooleanOptionalAction
    p = subparsers.add_parser(
        "bench", help="measure training/eval speed, MFU and memory against the tutorials' loop",
        description="Time our training step (the fast recipe's setup with the net, size, batch, precision "
                    "and layout given), our evaluation, the machine's matmul peak and the tutorials' loop "
                    "(PIL Resize + ToTensor in a 2-worker DataLoader, fp32, NCHW, plain SGD, the net without "
                    "batch norm) in one run, and print the ratios. About 1-2 minutes at --size 32 on 2 CPU "
                    "cores.")
    add = p.add_argument
    add("--model", default=d.model, metavar="NAME", help=f"net name (default: {d.model})")
    add("--width", type=float, default=d.width, metavar="X", help=f"channel width (default: {d.width})")
    add("--fc-width", type=int, default=None, metavar="N",
        help="units of VGG's/AlexNet's hidden FC layers, both sides (default: 4096 x width; 4096 is the "
             "tutorials' VGG-11)")
    add("--size", type=int, default=d.size, metavar="N", help=f"input size NxN (default: {d.size})")
    add("--channels", type=int, default=d.channels, choices=(1, 3),
        help=f"input channels; grayscale data is repeated for 3 (default: {d.channels})")
    add("--batch", type=int, default=d.batch, metavar="N", help=f"training batch (default: {d.batch})")
    add("--precision", choices=PRECISIONS, default=None,
        help=f"autocast precision of our step (default: {fast['precision']}, the fast recipe's)")
    add("--channels-last", action=on_off, default=None,
        help=f"NHWC layout for our step (default: {'on' if fast['channels_last'] else 'off'}, "
             "the fast recipe's)")
    add("--compile", action=on_off, default=d.compile, help="torch.compile our model (default: off)")
    add("--steps", type=int, default=None, metavar="N",
        help="timed steps per measurement (default: as many as fit in --seconds, at least 3)")
    add("--warmup", type=int, default=d.warmup, metavar="N",
        help=f"untimed steps before each measurement (default: {d.warmup})")
    add("--seconds", type=float, default=d.seconds, metavar="S",
        help=f"time per measurement when --steps is not given (default: {d.seconds:g})")
    add("--baseline", action=on_off, default=d.baseline, help="also time the tutorials' loop (default: on)")
    add("--peak", action=on_off, default=d.peak, help="also time the matmul peak, for MFU (default: on)")
    add("--data", default=d.data, metavar="NAME", help=f"data set (default: {d.data})")
    add("--data-dir", default=None, metavar="DIR", help="where the data files are")
    add("--device", default=d.device, metavar="DEVICE", help="auto, cpu, cuda or cuda:N (default: auto)")
    add("--threads", type=int, default=None, metavar="N", help="CPU threads (default: all cores)")
    add("--json", action="store_true", help="print the figures as one JSON object")
    p.set_defaults(func=_bench)


def _bench(args) -> int:
    from classicnets.bench import BenchSettings, bench, format_report

    settings = BenchSettings(
        model=args.model, width=args.width, fc_width=args.fc_width, size=args.size, channels=args.channels, batch=args.batch,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile, steps=args.steps,
        warmup=args.warmup, seconds=args.seconds, baseline=args.baseline, peak=args.peak, data=args.data,
        data_dir=args.data_dir, device=args.device, threads=args.threads)

    def progress(text: str) -> None:
        print(text, file=sys.stderr, flush=True)

    result = bench(settings, progress=None if args.json else progress)
    print(json.dumps(result.to_dict(), indent=2) if args.json else format_report(result))
    return 0
