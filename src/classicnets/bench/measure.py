"""Speed, measured in one run: our training step against the tutorials' and against the machine's limit.

`bench()` times, in one process and on the same threads:

1. **ours, training**: `classicnets.training.build` of the `fast` recipe with the net, size, batch,
   precision and layout asked for (the net, its optimizer, grad scaler, lr schedule, autocast, memory
   format, and the device-resident `TensorLoader` with the recipe's batched crop/flip/normalise), then
   the trainer's own loop, `optimizer_steps`, on real images: forward, backward, clipping, optimizer,
   schedule and the running loss/accuracy sums. Throughput counts the whole step, data included.
2. **ours, evaluation**: the trainer's test pass (`metrics.evaluate_loader` over the test loader).
3. **the machine's limit**: a large square `torch.matmul` timed in fp32 and bf16 (and fp16 on a GPU),
   before and after the rest; the faster of the two readings counts.
   Achieved FLOP/s = images/s x FLOPs per image, where FLOPs per image are 2 x the forward MACs counted
   by `classicnets.inspect.summary` (x 3 for a training step: forward, and backward for inputs and
   weights). MFU = achieved / the matmul peak of the precision used.
4. **the tutorials' way**: the same net without batch norm (d2l's VGG has none), fp32, NCHW, plain SGD,
   fed by a torch DataLoader with 2 workers that turns each image into a PIL image and runs
   torchvision's `Resize(size)` + `ToTensor()` on it, as `torchvision.datasets.FashionMNIST` does.

Both training loops are warmed up, then timed in alternating turns (about --seconds / 5 each), so a
program that starts or stops on the machine meanwhile slows both alike; the ratio ours / tutorials is the
figure to trust on a shared machine, not either throughput alone. The report also gives the ratio of each
pair of turns, and how many threads each side kept busy (process CPU time / wall time).

Peak memory: on a GPU `torch.cuda.max_memory_allocated`; on a CPU the peak resident set (VmHWM) above the
resident set when the run began, read as `classicnets.training.memory` does for `--max-memory`. Training's
is read after the warm-up steps (the first step allocates all a step needs), evaluation's separately.

MFU counts the MACs a plain convolution does; a kernel that does fewer (Winograd, FFT) or a matmul
reading lowered by interference can put it above 100%.
"""

from __future__ import annotations

import dataclasses
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

from classicnets.bench.baseline import TUTORIAL_WORKERS, TutorialLoop
from classicnets.bench.report import cores_busy, machine_info
from classicnets.bench.settings import BenchSettings
from classicnets.bench.timing import (
    Counted,
    Timing,
    faster_threads,
    macs_per_image,
    matmul_peak,
    sync,
    time_in_turns,
    warm_up,
)
from classicnets.errors import ClassicNetsError
from classicnets.metrics import evaluate_loader
from classicnets.models.registry import get_entry
from classicnets.training import memory
from classicnets.training.config import TrainConfig, resolve_config
from classicnets.training.runtime import pick_device, run_settings, torch_settings
from classicnets.training.setup import RunParts, build
from classicnets.training.step import RunningTotals, optimizer_steps

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchResult:
    """All figures of one bench run; `to_dict()` is what `classicnets bench --json` prints."""

    settings: dict[str, Any]
    machine: dict[str, Any]
    params: int
    macs_per_image: int
    train: Timing
    eval: Timing
    eval_batch: int
    peak_memory_bytes: int  # while training
    eval_peak_memory_bytes: int
    memory_measure: str
    matmul_peak_flops: dict[str, float] = field(default_factory=dict)
    tutorial: dict[str, Any] | None = None

    @property
    def train_flops_per_image(self) -> int:
        return 6 * self.macs_per_image

    @property
    def train_flops_per_sec(self) -> float:
        return self.train.images_per_sec * self.train_flops_per_image

    @property
    def eval_flops_per_sec(self) -> float:
        return self.eval.images_per_sec * 2 * self.macs_per_image

    def _mfu(self, flops_per_sec: float, precision: str) -> float | None:
        peak = self.matmul_peak_flops.get(precision)
        return flops_per_sec / peak if peak else None

    @property
    def train_mfu(self) -> float | None:
        return self._mfu(self.train_flops_per_sec, self.settings["precision"])

    @property
    def eval_mfu(self) -> float | None:
        return self._mfu(self.eval_flops_per_sec, self.settings["precision"])

    @property
    def speedup(self) -> float | None:
        """Training images/s, ours over the tutorials'."""
        if not self.tutorial:
            return None
        return self.train.images_per_sec / self.tutorial["train_images_per_sec"]

    def to_dict(self) -> dict[str, Any]:
        tutorial = None
        if self.tutorial:
            flops = self.tutorial["train_images_per_sec"] * 6 * self.tutorial["macs_per_image"]
            tutorial = {**self.tutorial, "train_flops_per_sec": flops, "train_mfu": self._mfu(flops, "fp32")}
        return {
            "settings": dict(self.settings),
            "machine": dict(self.machine),
            "params": self.params,
            "macs_per_image": self.macs_per_image,
            "train_flops_per_image": self.train_flops_per_image,
            "train_images_per_sec": self.train.images_per_sec,
            "train_steps": self.train.steps,
            "train_seconds": self.train.seconds,
            "train_cpu_seconds": self.train.cpu_seconds,
            "eval_images_per_sec": self.eval.images_per_sec,
            "eval_batch": self.eval_batch,
            "eval_batches": self.eval.steps,
            "eval_seconds": self.eval.seconds,
            "eval_cpu_seconds": self.eval.cpu_seconds,
            "train_flops_per_sec": self.train_flops_per_sec,
            "eval_flops_per_sec": self.eval_flops_per_sec,
            "matmul_peak_flops": dict(self.matmul_peak_flops),
            "train_mfu": self.train_mfu,
            "eval_mfu": self.eval_mfu,
            "peak_memory_bytes": self.peak_memory_bytes,
            "eval_peak_memory_bytes": self.eval_peak_memory_bytes,
            "memory_measure": self.memory_measure,
            "tutorial": tutorial,
            "speedup": self.speedup,
        }


def bench(settings: BenchSettings | None = None, *, progress: Callable[[str], None] | None = None,
          **keywords: Any) -> BenchResult:
    """Measure one configuration; see the module docstring. Keywords are `BenchSettings` fields.

        classicnets.bench.bench(model="vgg11", size=224, precision="bf16").to_dict()
    """
    s = dataclasses.replace(settings or BenchSettings(), **keywords)
    get_entry(s.model)  # an unknown name fails here, before any data is loaded
    if s.precision == "fp16" and pick_device(s.device).type != "cuda":
        raise ClassicNetsError("bench --precision fp16 needs a GPU: a CPU has no fp16 kernels to time (training "
                               "accepts fp16 there only to test the GPU path); use --precision bf16 or fp32")
    s.check()
    s = s.resolved()
    say = progress or (lambda text: None)
    others_before = cores_busy()  # before we load anything: what other programs use
    with prepared(s) as run:
        device = run.device
        if run.precision != s.precision:  # build runs what this device runs well (runtime.autocast_precision)
            say(f"precision {s.precision} runs as {run.precision} here: this CPU has no {s.precision} kernels "
                "(training.runtime.autocast_precision)")
            s = dataclasses.replace(s, precision=run.precision)
        base = run.baseline_rss if device.type != "cuda" else 0
        macs = macs_per_image(run.model, (s.channels, s.size, s.size))
        precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
        peaks = {}
        if s.peak:  # timed now and again at the end; the better of the two counts (less interference)
            say("timing the matmul peak ...")
            peaks = {p: matmul_peak(DTYPES[p], device, s.matmul_size) for p in precisions}
        say(f"warming up our training step ({s.precision}{', channels_last' if s.channels_last else ''}"
            f"{', compiled' if s.compile else ''}) ...")
        ours = train_steps(run)
        memory.reset_peak(device)
        warm_up(ours, s.warmup, device)  # the first step allocates everything a step needs: the peak
        train_peak = memory.peak(device) - base
        threads_tried = None
        if s.threads is None and device.type == "cpu" and torch.get_num_threads() > 1:
            n = torch.get_num_threads()  # another program busy on a core makes n threads wait for each other
            chosen, threads_tried = faster_threads(ours, device, [n, n - 1])
            if chosen != n:
                say(f"threads: {n} ran {threads_tried[n]:,.0f} images/s, {chosen} ran {threads_tried[chosen]:,.0f} "
                    f"(another program busy on this CPU?): timing both sides with {chosen}; --threads N "
                    "fixes the count")
        tutorial = None
        if s.baseline:
            say(f"warming up the tutorials' loop ({TUTORIAL_WORKERS} DataLoader workers, PIL Resize + "
                "ToTensor, fp32) ...")
            loop = TutorialLoop(run.train_set, s, device)
            try:
                say("timing both training steps, in turns ...")
                train, theirs, pair_ratios = time_in_turns(ours, loop.steps, s, device)
            finally:
                loop.close()
            tutorial = {**loop.summary(), **_timing_dict(theirs), "speedup_per_turn": pair_ratios}
        else:
            say("timing our training step ...")
            train = time_in_turns(ours, None, s, device)[0]
        ours.close()
        say("timing our evaluation ...")
        memory.reset_peak(device)
        evaluation = time_eval(run, s, device)
        eval_peak = memory.peak(device) - base
        result = BenchResult(
            settings={**dataclasses.asdict(s), "model_kwargs": dict(run.model_kwargs)},
            machine={**machine_info(device), "cores_busy_before": others_before, "threads_tried": threads_tried},
            params=sum(p.numel() for p in run.model.parameters()),
            macs_per_image=macs,
            train=train,
            eval=evaluation,
            eval_batch=run.test_loader.order.batch_size,
            peak_memory_bytes=int(train_peak),
            eval_peak_memory_bytes=int(eval_peak),
            memory_measure=("torch.cuda.max_memory_allocated" if device.type == "cuda"
                            else "peak RSS (VmHWM) above the RSS at start"),
            tutorial=tutorial,
        )
        del run
        if s.peak:
            say("timing the matmul peak again ...")
            result.matmul_peak_flops = {p: max(peaks[p], matmul_peak(DTYPES[p], device, s.matmul_size))
                                        for p in precisions}
        return result


# --- ours: the trainer's parts and its loop ---------------------------------------------------------------

def bench_config(s: BenchSettings) -> TrainConfig:
    """What `classicnets train --recipe fast` would run for these settings, writing nothing. The net keeps
    its own head (VGG's FC layers, not the recipe's GAP head), so that both sides of the comparison train
    the same net."""
    s = s.resolved()
    return resolve_config(
        recipe="fast", model=s.model, width=s.width, fc_width=s.fc_width, head=None, size=s.size,
        batch_size=s.batch,
        precision=s.precision,
        channels_last=s.channels_last, compile=s.compile, data=s.data, data_dir=s.data_dir, device=s.device,
        threads=s.threads, progress="none", tensorboard="off", plots=False, checkpoint_seconds=1e9)


@contextmanager
def prepared(s: BenchSettings) -> Iterator[RunParts]:
    """The parts of that run (`training.build`), inside the torch settings the trainer would use
    (threads, determinism, kept memory), which are restored on exit."""
    config = bench_config(s)
    with torch_settings(**run_settings(config, pick_device(config.device))):
        yield build(config, in_channels=s.channels)


def train_steps(run: RunParts) -> Iterator[int]:
    """One optimizer step of the trainer's own loop (`optimizer_steps`) per `next()`, epoch after epoch;
    yields the images it took. Its phases are labelled for `torch.profiler` (step:data, step:forward,
    step:backward, step:optimizer; benchmarks/profile_step.py)."""
    totals = RunningTotals(run.device)
    run.train_model.train()
    images = run.micro_batch * run.accum_steps
    for epoch in itertools.count():
        run.train_loader.set_epoch(epoch)
        for _ in optimizer_steps(run.step, run.train_loader, totals):
            yield images


def time_eval(run: RunParts, s: BenchSettings, device: torch.device) -> Timing:
    """The trainer's test pass (`evaluate_loader`) over a warm-up run of batches, then the timed run."""
    batches = _forever(run.test_loader)
    if s.warmup:
        evaluate_loader(run.eval_model, itertools.islice(batches, s.warmup), run.num_classes,
                        autocast_dtype=run.autocast_dtype)
    counted = Counted(batches, s)
    sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    evaluate_loader(run.eval_model, counted, run.num_classes, autocast_dtype=run.autocast_dtype)
    sync(device)
    return Timing(counted.steps, counted.images, time.perf_counter() - start, time.process_time() - cpu_start)


def _forever(loader) -> Iterator:
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def _timing_dict(t: Timing) -> dict[str, Any]:
    return {"train_images_per_sec": t.images_per_sec, "train_steps": t.steps, "train_seconds": t.seconds,
            "train_cpu_seconds": t.cpu_seconds}

