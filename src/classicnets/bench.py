"""Speed, measured in one run: our training step against the tutorials' and against the machine's limit.

`bench()` times, in one process and on the same threads:

1. **ours, training**: the trainer's own setup for the `fast` recipe with the net, size, batch, precision
   and layout asked for (model built and moved by the trainer, its optimizer, grad scaler, autocast,
   memory format, and its device-resident `TensorLoader` with the recipe's batched crop/flip/normalise),
   then optimizer steps on real images. Throughput counts the whole step, data included.
2. **ours, evaluation**: the trainer's test pass (`evaluate_loader` over the test loader).
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
import math
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from classicnets.errors import ClassicNetsError

PRECISIONS = ("fp32", "bf16", "fp16")
TUTORIAL_WORKERS = 2  # d2l's load_data_fashion_mnist
TUTORIAL_LR = 0.05  # d2l's VGG-11 on Fashion-MNIST (the `d2l` recipe)
MIN_TIMED_STEPS = 3
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class BenchSettings:
    """What to measure. `steps=None` times as many steps as fit in `seconds` (at least 3)."""

    model: str = "vgg11"
    width: float = 0.25
    size: int = 32
    channels: int = 1
    batch: int = 128
    precision: str | None = None  # None: the fast recipe's
    channels_last: bool | None = None  # None: the fast recipe's
    compile: bool = False
    steps: int | None = None
    warmup: int = 2
    seconds: float = 10.0
    baseline: bool = True
    peak: bool = True
    data: str = "fashion-mnist"
    data_dir: str | None = None
    device: str = "auto"
    threads: int | None = None
    matmul_size: int | None = None  # None: 2048 on a CPU, 8192 on a GPU

    def resolved(self) -> BenchSettings:
        from classicnets.training.config import RECIPES

        fast = RECIPES["fast"]
        return dataclasses.replace(
            self,
            precision=self.precision if self.precision is not None else fast["precision"],
            channels_last=self.channels_last if self.channels_last is not None else fast["channels_last"],
        )

    def check(self) -> None:
        from classicnets.models.registry import get_entry

        get_entry(self.model)  # an unknown name fails here, before any data is loaded
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ClassicNetsError(f"precision must be one of {', '.join(PRECISIONS)}; "
                                   f"got {self.precision!r}")
        for name in ("size", "channels", "batch"):
            if getattr(self, name) < 1:
                raise ClassicNetsError(f"{name} must be at least 1; got {getattr(self, name)}")
        if self.channels not in (1, 3):
            raise ClassicNetsError(f"channels must be 1 (grayscale) or 3 (RGB); got {self.channels}")
        if self.steps is not None and self.steps < 1:
            raise ClassicNetsError(f"steps must be at least 1; got {self.steps} "
                                   "(leave it out for a time-based count)")
        if self.warmup < 1:
            raise ClassicNetsError(f"warmup must be at least 1 (the first step allocates memory and picks "
                                   f"kernels); got {self.warmup}")
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ClassicNetsError(f"seconds must be a positive number; got {self.seconds}")
        if not self.width > 0:
            raise ClassicNetsError(f"width must be positive; got {self.width}")


@dataclass
class Timing:
    """One timed run. `cpu_seconds` is this process's CPU time meanwhile (DataLoader workers not included):
    on an idle machine about threads x seconds; much less means the run was starved by other programs."""

    steps: int
    images: int
    seconds: float
    cpu_seconds: float

    @property
    def images_per_sec(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("nan")


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
    s.check()
    s = s.resolved()
    say = progress or (lambda text: None)
    from classicnets.training import memory
    from classicnets.training.trainer import _TorchGlobals

    others_before = cores_busy()  # before we load anything: what other programs use
    saved = _TorchGlobals.capture()
    try:
        trainer = prepare_trainer(s)
        device = trainer.device
        base = trainer.baseline_rss if device.type != "cuda" else 0
        macs = _macs_per_image(trainer.model, (s.channels, s.size, s.size))
        precisions = ["fp32", "bf16"] + (["fp16"] if device.type == "cuda" else [])
        peaks = {}
        if s.peak:  # timed now and again at the end; the better of the two counts (less interference)
            say("timing the matmul peak ...")
            peaks = {p: matmul_peak(_DTYPES[p], device, s.matmul_size) for p in precisions}
        say(f"warming up our training step ({s.precision}{', channels_last' if s.channels_last else ''}"
            f"{', compiled' if s.compile else ''}) ...")
        ours = train_steps(trainer)
        memory.reset_peak(device)
        warm_up(ours, s.warmup, device)  # the first step allocates everything a step needs: the peak
        train_peak = memory.peak(device) - base
        tutorial = None
        if s.baseline:
            say(f"warming up the tutorials' loop ({TUTORIAL_WORKERS} DataLoader workers, PIL Resize + "
                "ToTensor, fp32) ...")
            loop = TutorialLoop(trainer.train_set, s, device)
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
        evaluation = time_eval(trainer, s, device)
        eval_peak = memory.peak(device) - base
        result = BenchResult(
            settings={**dataclasses.asdict(s), "model_kwargs": dict(trainer.model_kwargs)},
            machine={**machine_info(device), "cores_busy_before": others_before},
            params=sum(p.numel() for p in trainer.model.parameters()),
            macs_per_image=macs,
            train=train,
            eval=evaluation,
            eval_batch=trainer.test_loader.order.batch_size,
            peak_memory_bytes=int(train_peak),
            eval_peak_memory_bytes=int(eval_peak),
            memory_measure=("torch.cuda.max_memory_allocated" if device.type == "cuda"
                            else "peak RSS (VmHWM) above the RSS at start"),
            tutorial=tutorial,
        )
        del trainer
        if s.peak:
            say("timing the matmul peak again ...")
            result.matmul_peak_flops = {p: max(peaks[p], matmul_peak(_DTYPES[p], device, s.matmul_size))
                                        for p in precisions}
        return result
    finally:
        saved.restore()


# --- ours: the trainer's pieces -----------------------------------------------------------------------

def prepare_trainer(s: BenchSettings):
    """A Trainer set up as `classicnets train --recipe fast` would be for these settings, writing nothing."""
    from classicnets.training.config import resolve_config
    from classicnets.training.trainer import Trainer

    s = s.resolved()
    config = resolve_config(
        recipe="fast", model=s.model, width=s.width, size=s.size, batch_size=s.batch, precision=s.precision,
        channels_last=s.channels_last, compile=s.compile, data=s.data, data_dir=s.data_dir, device=s.device,
        threads=s.threads, progress="none", tensorboard="off", plots=False, checkpoint_seconds=1e9)
    trainer = Trainer(config)
    trainer._setup_process()
    trainer._setup_data()
    if trainer.in_channels != s.channels:  # e.g. an RGB net fed grayscale images: repeat the plane
        if trainer.in_channels != 1:
            raise ClassicNetsError(f"{s.data} has {trainer.in_channels}-channel images; pass --channels "
                                   f"{trainer.in_channels}")
        trainer.in_channels = s.channels
        trainer.train_transform = dataclasses.replace(trainer.train_transform, channels=s.channels)
        trainer.eval_transform = dataclasses.replace(trainer.eval_transform, channels=s.channels)
    trainer._setup_model()
    trainer._setup_batches()
    trainer.eval_model = torch.compile(trainer.model) if s.compile else trainer.model
    trainer.train_model = trainer.eval_model
    return trainer


def _forever(loader) -> Iterator:
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def train_steps(t) -> Iterator[int]:
    """One optimizer step per `next()`, as the trainer's loop takes it (without accumulation or the
    running metrics); the phases are labelled for `torch.profiler` (benchmarks/profile_step.py)."""
    from torch.profiler import record_function

    t.train_model.train()
    batches = _forever(t.train_loader)
    while True:
        with record_function("step:data"):
            x, y = next(batches)
            x = x.contiguous(memory_format=t.memory_format)
        with record_function("step:forward"), t._autocast():
            loss, _ = t._loss(t.train_model(x), y)
        with record_function("step:backward"):
            t.scaler.scale(loss).backward()
        with record_function("step:optimizer"):
            t.scaler.step(t.optimizer)
            t.scaler.update()
            t.optimizer.zero_grad(set_to_none=True)
        yield len(y)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def warm_up(steps: Iterator[int], n: int, device: torch.device) -> None:
    for _ in range(n):
        next(steps)
    _sync(device)


class _Clock:
    """Timed steps of one side, summed over the turns it gets."""

    def __init__(self, steps: Iterator[int], device: torch.device):
        self.steps, self.device = steps, device
        self.count = self.images = 0
        self.seconds = self.cpu_seconds = 0.0

    def done(self, s: BenchSettings, running: float = 0.0) -> bool:
        """Has this side its steps (`s.steps`), or its seconds and 3 steps (`running`: of the turn so far)?"""
        if s.steps is not None:
            return self.count >= s.steps
        return self.count >= MIN_TIMED_STEPS and self.seconds + running >= s.seconds

    def turn(self, s: BenchSettings, seconds: float | None) -> float:
        """Steps for about `seconds` (one only when None), ending early when done; the turn's images/s."""
        _sync(self.device)
        start, cpu_start = time.perf_counter(), time.process_time()
        images = 0
        while True:
            images += next(self.steps)
            self.count += 1
            elapsed = time.perf_counter() - start
            if seconds is None or elapsed >= seconds or self.done(s, elapsed):
                break
        _sync(self.device)
        elapsed = time.perf_counter() - start
        self.images += images
        self.seconds += elapsed
        self.cpu_seconds += time.process_time() - cpu_start
        return images / elapsed

    def timing(self) -> Timing:
        return Timing(self.count, self.images, self.seconds, self.cpu_seconds)


TURNS = 5  # a time-based measurement alternates the two sides about this many times


def time_in_turns(ours: Iterator[int], theirs: Iterator[int] | None, s: BenchSettings,
                  device: torch.device) -> tuple[Timing, Timing | None, list[float]]:
    """Time `ours` and `theirs` (both warmed up) in alternating turns, so that another program starting or
    stopping meanwhile slows both alike; returns both timings and ours/theirs images/s of each turn pair.
    With `s.steps`, turns are single steps; else about `s.seconds / TURNS` each, until each side has
    `s.seconds` and 3 steps. `theirs=None` times ours alone."""
    a = _Clock(ours, device)
    b = _Clock(theirs, device) if theirs is not None else None
    turn = None if s.steps is not None else s.seconds / TURNS
    ratios = []
    while not (a.done(s) and (b is None or b.done(s))):
        ra = a.turn(s, turn) if not a.done(s) else None
        rb = b.turn(s, turn) if b is not None and not b.done(s) else None
        if ra and rb:
            ratios.append(ra / rb)
    return a.timing(), (b.timing() if b is not None else None), ratios


def time_eval(t, s: BenchSettings, device: torch.device) -> Timing:
    """The trainer's test pass (`evaluate_loader`) over a warm-up run of batches, then the timed run."""
    from classicnets.evaluation import evaluate_loader

    batches = _forever(t.test_loader)
    if s.warmup:
        evaluate_loader(t.eval_model, itertools.islice(batches, s.warmup), t.num_classes,
                        autocast_dtype=t.autocast_dtype)
    counted = _Counted(batches, s)
    _sync(device)
    start, cpu_start = time.perf_counter(), time.process_time()
    evaluate_loader(t.eval_model, counted, t.num_classes, autocast_dtype=t.autocast_dtype)
    _sync(device)
    return Timing(counted.steps, counted.images, time.perf_counter() - start, time.process_time() - cpu_start)


class _Counted:
    """Hands out batches until `steps` are given, or (steps None) until `seconds` passed and 3 were given."""

    def __init__(self, batches: Iterator, s: BenchSettings):
        self.batches, self.s = batches, s
        self.steps = self.images = 0

    def __iter__(self) -> Iterator:
        start = time.perf_counter()
        for x, y in self.batches:
            if self.s.steps is not None:
                if self.steps >= self.s.steps:
                    return
            elif self.steps >= MIN_TIMED_STEPS and time.perf_counter() - start >= self.s.seconds:
                return
            self.steps += 1
            self.images += len(y)
            yield x, y


def _macs_per_image(model: torch.nn.Module, shape: tuple[int, int, int]) -> int:
    """Forward multiply-accumulates of one image, counted by `classicnets.inspect.summary`."""
    from classicnets.inspect import summary

    return int(summary(model, shape).total_macs)


# --- the machine's limit ------------------------------------------------------------------------------

def matmul_peak(dtype: torch.dtype, device: torch.device, n: int | None = None,
                seconds: float = 1.0) -> float:
    """FLOP/s of an n x n by n x n torch.matmul on `device` with the current threads (n: 2048 on a CPU,
    8192 on a GPU): the fastest of the products timed over about `seconds` after a warm-up one (groups
    of 10 on a GPU), so a moment's interference from another program lowers it less."""
    n = n or (8192 if device.type == "cuda" else 2048)
    group = 10 if device.type == "cuda" else 1
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    out = torch.empty(n, n, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)
    _sync(device)
    best, start, timed = 0.0, time.perf_counter(), 0
    while timed < 3 or time.perf_counter() - start < seconds:
        tick = time.perf_counter()
        for _ in range(group):
            torch.matmul(a, b, out=out)
        _sync(device)
        best = max(best, 2 * n**3 * group / (time.perf_counter() - tick))
        timed += 1
    return best


# --- the tutorials' way -------------------------------------------------------------------------------

class PILImages(torch.utils.data.Dataset):
    """uint8 images handed out one at a time as PIL images through a torchvision transform, as
    `torchvision.datasets.FashionMNIST` (and so d2l's `load_data_fashion_mnist`) does."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, transform: Callable, channels: int):
        self.images, self.labels, self.transform, self.channels = images, labels, transform, channels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int):
        from PIL import Image

        pixels = self.images[i]
        array = pixels[0].numpy() if pixels.shape[0] == 1 else pixels.permute(1, 2, 0).numpy()
        image = Image.fromarray(array)
        if self.channels == 3 and image.mode != "RGB":
            image = image.convert("RGB")
        return self.transform(image), int(self.labels[i])


def tutorial_model_name(name: str) -> str:
    """The net the tutorials train: ours without batch norm where that variant exists (d2l's VGG has none)."""
    from classicnets.models import list_models

    plain = name.removesuffix("_bn")
    return plain if plain != name and plain in list_models() else name


class TutorialLoop:
    """The tutorials' training loop (d2l `train_ch6`) on the same threads and device, as an endless
    iterator of steps (`steps`), warmed up and with its peak memory measured on construction."""

    def __init__(self, train_set, s: BenchSettings, device: torch.device):
        from torchvision import transforms

        from classicnets.models import create_model
        from classicnets.training import memory

        self.name, self.device = tutorial_model_name(s.model), device
        torch.manual_seed(0)
        self.net = create_model(self.name, num_classes=len(train_set.classes), in_channels=s.channels,
                                input_size=s.size, width=s.width, init="xavier").to(device)
        self.macs = _macs_per_image(self.net, (s.channels, s.size, s.size))
        per_image = transforms.Compose([transforms.Resize(s.size), transforms.ToTensor()])
        dataset = PILImages(train_set.images, train_set.labels, per_image, s.channels)
        self.loader = torch.utils.data.DataLoader(dataset, batch_size=s.batch, shuffle=True,
                                                  num_workers=TUTORIAL_WORKERS)
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=TUTORIAL_LR)
        memory.reset_peak(device)
        base = memory.process_rss() if device.type != "cuda" else 0
        self.steps = self._steps()
        warm_up(self.steps, s.warmup, device)
        self.peak_memory = memory.peak(device) - base

    def _steps(self) -> Iterator[int]:
        loss_fn = torch.nn.CrossEntropyLoss()
        self.net.train()
        while True:
            for x, y in self.loader:
                x, y = x.to(self.device), y.to(self.device)
                y_hat = self.net(x)
                loss = loss_fn(y_hat, y)
                self.optimizer.zero_grad()
                loss.backward()
                self.optimizer.step()
                with torch.no_grad():  # d2l's Accumulator: the loss and accuracy as Python floats, every step
                    _ = loss.item() * len(y), float((y_hat.argmax(1) == y).sum())
                yield len(y)

    def close(self) -> None:
        self.steps.close()  # shuts the DataLoader's workers down

    def summary(self) -> dict[str, Any]:
        return {"model": self.name, "precision": "fp32", "channels_last": False, "workers": TUTORIAL_WORKERS,
                "lr": TUTORIAL_LR, "macs_per_image": self.macs, "peak_memory_bytes": int(self.peak_memory)}


def _timing_dict(t: Timing) -> dict[str, Any]:
    return {"train_images_per_sec": t.images_per_sec, "train_steps": t.steps, "train_seconds": t.seconds,
            "train_cpu_seconds": t.cpu_seconds}


# --- reporting ----------------------------------------------------------------------------------------

def machine_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average": _load_average(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def cores_busy(seconds: float = 0.5) -> float | None:
    """How many cores other programs keep busy: /proc/stat sampled over `seconds` while we sleep
    (Linux; None elsewhere). Unlike the load average it is not an average over the last minute."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    cores = os.cpu_count() or 1
    return round(cores * (total - idle) / total, 2)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _rate(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if unit and x >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:,.1f}{' ' + unit if unit else ''}"


def _timed(d: dict, steps_key: str, prefix: str) -> str:
    """'40 steps in 10.2 s (1.9 threads busy)': busy = process CPU time / wall time."""
    seconds, cpu = d[f"{prefix}_seconds"], d[f"{prefix}_cpu_seconds"]
    return f"{d[steps_key]} steps in {seconds:.1f} s ({cpu / seconds:.1f} threads busy)"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_report(result: BenchResult) -> str:
    """The human-readable table `classicnets bench` prints."""
    from classicnets.training.memory import format_bytes

    d = result.to_dict()
    s, m, tut = d["settings"], d["machine"], d["tutorial"] or {}
    how = ", ".join((s["precision"], "channels_last" if s["channels_last"] else "NCHW",
                     "compiled" if s["compile"] else "eager"))
    size = f"{s['channels']}x{s['size']}x{s['size']}"
    lines = [
        (f"{s['model']} width {s['width']:g} at {size}: {d['params'] / 1e6:.2f}M params, "
         f"{d['macs_per_image'] / 1e6:.1f} MMACs/image forward; batch {s['batch']} (eval {d['eval_batch']}), "
         f"{s['data']}"),
        f"{m['name']} ({m['device']}, {m['threads']} threads), torch {m['torch']}, {m['date']}",
        f"timed: train {_timed(d, 'train_steps', 'train')}, eval {_timed(d, 'eval_batches', 'eval')}"
        + (f", tutorials' train {_timed(tut, 'train_steps', 'train')}" if tut else ""),
    ]
    others = m.get("cores_busy_before")
    if others is not None and others >= 0.25:
        lines.append(f"note: other programs kept {others:g} of {m['cores']} cores busy when the bench "
                     "started, so the absolute figures may be low; the side-by-side ratio holds up better")
    busy = d["train_cpu_seconds"] / d["train_seconds"]
    if m["device"] == "cpu" and busy < 0.75 * m["threads"]:
        why = ("" if m["threads"] == 1 else ", and threads that wait for each other slow down far more "
               "than the share they lose; --threads 1 shows one core's speed")
        lines.append(f"warning: our training kept only {busy:.1f} of {m['threads']} threads busy: other "
                     f"programs took the cores{why}; rerun on a quiet machine for absolute figures")
    lines.append("")
    rows = [
        ("", f"ours ({how})", f"tutorials' way ({tut['model']}, fp32, NCHW)" if tut else "tutorials' way",
         "ours / tutorials"),
        ("train images/s", _rate(d["train_images_per_sec"]), _rate(tut.get("train_images_per_sec")),
         f"{d['speedup']:.2f}x" if d["speedup"] else "-"),
        ("eval images/s", _rate(d["eval_images_per_sec"]), "-", ""),
        ("train FLOP/s", _rate(d["train_flops_per_sec"], "FLOP/s"),
         _rate(tut.get("train_flops_per_sec"), "FLOP/s"), ""),
        ("train MFU", _pct(d["train_mfu"]), _pct(tut.get("train_mfu")), ""),
        ("eval MFU", _pct(d["eval_mfu"]), "-", ""),
        ("train peak memory", format_bytes(d["peak_memory_bytes"]),
         format_bytes(tut["peak_memory_bytes"]) if tut else "-", ""),
        ("eval peak memory", format_bytes(d["eval_peak_memory_bytes"]), "-", ""),
    ]
    if not tut:  # ours alone: no empty columns
        rows = [row[:2] for row in rows]
    widths = [max(len(row[i]) for row in rows) + (0 if i == 0 else 3) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append(row[0].ljust(widths[0]) + "".join(cells))
    if d["matmul_peak_flops"]:
        peaks = ", ".join(f"{p} {_rate(v, 'FLOP/s')}" for p, v in d["matmul_peak_flops"].items())
        lines += ["", f"matmul peak (MFU = achieved / peak of the precision used): {peaks}"]
    turns = tut.get("speedup_per_turn") or []
    if len(turns) > 1:
        spread = (f"min {min(turns):.2f}x, median {statistics.median(turns):.2f}x, "
                  f"max {max(turns):.2f}x")
        lines += ["", f"ours / tutorials per turn ({len(turns)} turns, taken alternately): {spread}"]
    workers = "; the tutorials': main process only, not its workers" if tut and m["device"] == "cpu" else ""
    lines.append(f"memory: {d['memory_measure']}{workers}")
    return "\n".join(lines)
