"""Where a training step's time goes: `torch.profiler` over the steps `classicnets bench` times.

The step is the trainer's own (`classicnets.training.build` of the fast recipe, then `optimizer_steps`, as
`classicnets bench` times it); its phases are labelled step:data / step:forward / step:backward / step:optimizer. Printed: time per phase, time per
kind of operator (convolution, batch norm, ReLU, pooling, linear, optimizer, data transforms, other),
and the top operators by self time.

    .venv/bin/python benchmarks/profile_step.py --model vgg11_bn --size 32 --precision bf16 --channels-last
    .venv/bin/python benchmarks/profile_step.py --size 224 --steps 3 --trace /tmp/step.json  # chrome://tracing
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch
from torch.profiler import ProfilerActivity, profile

from classicnets.bench import BenchSettings, prepared, train_steps

PHASES = ("step:data", "step:forward", "step:backward", "step:optimizer")
# Operator kinds by name (first match wins); the backward kernels carry their forward's name.
KINDS = [
    ("convolution", r"conv|mkldnn_convolution|onednn"),
    ("batch norm", r"batch_norm"),
    ("ReLU", r"relu|threshold"),
    ("pooling", r"pool"),
    ("linear", r"addmm|\bmm\b|aten::mm|linear|matmul"),
    ("dropout", r"dropout|bernoulli"),
    ("loss", r"cross_entropy|log_softmax|nll_loss"),
    ("optimizer", r"_foreach|sgd|adam|_fused"),
    ("data transforms",
     r"upsample|interpolate|index_select|constant_pad|pad|flip|where|randint|rand\b|_to_copy"),
    ("memory/layout", r"copy_|contiguous|empty|zero_|fill_|clone|as_strided|view|reshape"),
]


def kind_of(name: str) -> str:
    for kind, pattern in KINDS:
        if re.search(pattern, name):
            return kind
    return "other"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="vgg11")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=False)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--steps", type=int, default=10, help="profiled steps (after --warmup untimed ones)")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--top", type=int, default=15, help="operators listed by self time")
    p.add_argument("--trace", metavar="FILE", help="also write a Chrome trace")
    a = p.parse_args()

    s = BenchSettings(model=a.model, width=a.width, size=a.size, batch=a.batch, precision=a.precision,
                      channels_last=a.channels_last, compile=a.compile, threads=a.threads)
    s.check()
    with prepared(s) as run:
        steps = train_steps(run)
        for _ in range(a.warmup):
            next(steps)
        with profile(activities=[ProfilerActivity.CPU]
                     + ([ProfilerActivity.CUDA] if run.device.type == "cuda" else [])) as prof:
            for _ in range(a.steps):
                next(steps)
        threads = torch.get_num_threads()

    events = prof.key_averages()
    total_ms = sum(e.cpu_time_total for e in events if e.key in PHASES) / 1e3
    print(f"{a.model} width {a.width:g}, {a.size}x{a.size}, batch {a.batch}, {a.precision}"
          f"{', channels_last' if a.channels_last else ''}{', compiled' if a.compile else ''}, "
          f"{threads} threads: {total_ms / a.steps:.1f} ms per step, "
          f"{a.batch * a.steps / (total_ms / 1e3):.0f} images/s under the profiler")
    print("\nphase            ms/step   share")
    for e in sorted((e for e in events if e.key in PHASES), key=lambda e: PHASES.index(e.key)):
        ms = e.cpu_time_total / 1e3 / a.steps
        print(f"{e.key.removeprefix('step:'):14s} {ms:9.1f} {100 * ms * a.steps / total_ms:6.1f}%")

    by_kind: dict[str, float] = defaultdict(float)
    ops = [e for e in events if e.key.startswith("aten::") or e.key.startswith("mkldnn") or "::" in e.key]
    for e in ops:
        by_kind[kind_of(e.key)] += e.self_cpu_time_total
    self_total = sum(by_kind.values()) or 1.0
    print("\noperator kind    ms/step   share of operator self time")
    for kind, us in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"{kind:16s} {us / 1e3 / a.steps:7.1f} {100 * us / self_total:6.1f}%")

    print(f"\ntop {a.top} operators by self CPU time")
    print(events.table(sort_by="self_cpu_time_total", row_limit=a.top, max_name_column_width=48))
    if a.trace:
        prof.export_chrome_trace(a.trace)
        print(f"trace written to {a.trace}")


if __name__ == "__main__":
    main()
