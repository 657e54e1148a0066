"""The training loop, for one CPU, one GPU or many (DDP through torchrun).

`train()` resolves the config and runs `Trainer.fit()`. The loop itself (`_run_epoch`) is one screen:
fetch a device-resident batch, forward under autocast, backward (accumulating micro-batches), step,
check. Everything around it (auto batch, checkpoints, resume, signals, NaN guard, sinks) is a few
explicit lines each, in the order it happens.

Why a resumed run equals one never stopped: an optimizer step depends only on the weights, the
optimizer/scaler/schedule state, its batch (the loader rebuilds batch b of epoch e, augmentation
included, from (seed, e, b, rank)) and the global RNG that drives dropout. last.pt holds all of them,
written at an optimizer-step boundary (every epoch, every --checkpoint-every steps or
--checkpoint-seconds, and on Ctrl-C/SIGTERM), with the running epoch sums so the printed metrics are
the same too.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import random
import re
import signal
import threading
import time
from collections import OrderedDict
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.training import checkpoint, memory
from classicnets.training.config import (
    FIELDS,
    TrainConfig,
    convert,
    merge,
    parse_bytes,
    parse_scale_jitter,
    resolve_config,
    resume_conflicts,
    to_toml,
    validate,
)
from classicnets.training.distributed import Dist, init_from_env
from classicnets.training.schedule import LRSchedule
from classicnets.training.sinks import make_sinks

# Test hook: "N" sends this process SIGKILL right after optimizer step N (and any checkpoint at that
# step), "N:INT" sends SIGINT (Ctrl-C) instead.
SIGNAL_AT_STEP_ENV = "CLASSICNETS_TEST_SIGNAL_AT_STEP"


@dataclass
class RunResult:
    """What `train()` returns; accuracies are fractions, `history` has one record per epoch."""

    run_dir: Path
    best_test_acc: float | None
    best_epoch: int | None
    final_test_acc: float | None
    history: list[dict[str, Any]]
    seconds: float
    stopped: str  # completed | accuracy target | time budget | interrupted
    config: TrainConfig


def train(config: TrainConfig | dict | None = None, *, resume: str | os.PathLike | None = None,
          **overrides: Any) -> RunResult:
    """Train a net; returns where the run lives and how it went.

        classicnets.train()                                  # the fast recipe on Fashion-MNIST
        classicnets.train(recipe="d2l", epochs=3)            # the tutorials' experiment
        classicnets.train(resume="runs/vgg11_bn-fashion-mnist-fast-...")

    A dict or keywords start from a recipe ("fast" unless `recipe` names another); a TrainConfig is
    taken as it is. With `resume`, the run's saved config is used and only settings that do not change
    what it computes (progress, threads, device, time budget...) may be overridden.
    """
    if resume is not None:
        if isinstance(config, TrainConfig):
            raise ClassicNetsError("resume a run with train(resume=RUN_DIR) and keyword overrides only: "
                                   "its config is saved in the run")
        explicit = {**(config or {}), **overrides}
        path = Path(resume)
        ckpt = checkpoint.load(path)
        saved = {k: v for k, v in ckpt["config"].items() if k in FIELDS}
        explicit = {k: convert(k, v) for k, v in explicit.items()}
        resume_conflicts(saved, explicit)
        values = merge({**TrainConfig().to_dict(), **saved}, explicit)
        values["run_dir"] = str(path if path.is_dir() else path.parent)
        cfg = TrainConfig(**values)
        validate(cfg)
        return Trainer(cfg, ckpt).fit()
    if isinstance(config, TrainConfig):
        cfg = TrainConfig(**merge(config.to_dict(), {k: convert(k, v) for k, v in overrides.items()}))
        validate(cfg)
    else:
        cfg = resolve_config({**(config or {}), **overrides})
    return Trainer(cfg).fit()


class Trainer:
    def __init__(self, config: TrainConfig, resume: dict[str, Any] | None = None):
        self.c = config
        self.resume = resume
        self.sinks: list = []
        self.stop_signal = 0  # set by SIGINT/SIGTERM: stop at the next step boundary
        self.dist = Dist()
        self.messages: list[str] = []  # said once the console is set up
        self.kept_memory = False

    # --- the whole run, top to bottom -----------------------------------------------------------

    def fit(self) -> RunResult:
        saved_globals = _TorchGlobals.capture()
        old_handlers: dict = {}
        try:
            self._setup_process()
            self._setup_run_dir()
            self._setup_data()
            self._setup_model()
            self._setup_batches()
            self._setup_state()
            self._wrap_model()
            self._setup_output()
            old_handlers = self._install_signal_handlers()
            memory.release_free_memory()
            memory.reset_peak(self.device)  # the peak reported at the end is training's, not the setup's
            stopped = self._loop()
            return self._finish(stopped)
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            for sink in self.sinks:
                sink.close()
            self.dist.close()
            saved_globals.restore()
            if self.kept_memory:
                memory.keep_freed_memory(False)

    # --- setup ----------------------------------------------------------------------------------

    def _setup_process(self) -> None:
        from classicnets.models import model_info

        c = self.c
        model_info(c.model)  # a misspelt model name fails before any data is loaded or downloaded
        self.dist = init_from_env("cuda" if _wants_cuda(c.device) else "cpu")
        self.device = _pick_device(c.device, self.dist)
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        torch.set_num_threads(c.threads or max(1, cores // self.dist.local_world_size))
        if c.precision == "fp16" and self.device.type != "cuda":
            raise ClassicNetsError("precision fp16 needs a GPU (its grad scaler is CUDA-only); "
                                   "use --precision bf16")
        if c.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = c.cudnn_benchmark and not c.deterministic
        torch.backends.cudnn.deterministic = c.deterministic
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[c.precision]
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        # A GPU syncs on every .item(): check the loss every 20 steps there, every step on a CPU.
        self.check_every = 20 if self.device.type == "cuda" else 1
        if c.auto_batch or c.max_memory:
            memory.release_free_memory()
        self.baseline_rss = memory.process_rss()  # CPU memory budgets count from here
        self.kept_memory = self.device.type == "cpu" and c.keep_memory and memory.keep_freed_memory()
        random.seed(c.seed)
        _seed_numpy(c.seed)
        torch.manual_seed(c.seed)

    def _setup_run_dir(self) -> None:
        """runs/<name> unless given; refuse to write into another run's folder unless resuming it."""
        c = self.c
        if c.run_dir is None:
            name = c.name or self.dist.broadcast(_default_name(c))
            run_dir = Path("runs") / name
        else:
            run_dir = Path(c.run_dir)
            name = c.name or run_dir.name
        if self.resume is None and (run_dir / "last.pt").exists():
            raise ClassicNetsError(f"{run_dir} already holds a run: resume it with --resume {run_dir} "
                                   "or pick another --name")
        self.c = dataclasses.replace(c, name=name, run_dir=str(run_dir))
        self.run_dir = run_dir

    def _setup_data(self) -> None:
        from classicnets import data

        c = self.c
        test_split = "val" if c.data.startswith("folder:") else "test"
        folder = {"skip_bad": c.skip_bad, "seed": c.seed} if c.data.startswith("folder:") else {}
        train_set = data.load(c.data, "train", root=c.data_dir, **folder)
        test_set = data.load(c.data, test_split, root=c.data_dir, **folder)
        self.messages += [f"data {split.split}: {note}" for split in (train_set, test_set) for note in split.notes]
        mean, std = train_set.stats()  # statistics of the whole training split, also when limited
        self.train_set = _first(train_set, c.limit_train)
        self.test_set = _first(test_set, c.limit_test)
        self.classes = list(train_set.classes)
        self.num_classes = len(self.classes)
        self.in_channels = int(train_set.images.shape[1])
        self.size = c.size or int(train_set.images.shape[-1])
        if c.normalize == "none":  # the tutorials feed ToTensor's [0, 1] as it is
            mean, std = [0.0] * self.in_channels, [1.0] * self.in_channels
        elif c.normalize == "mean":  # the VGG paper subtracts the mean only
            std = None
        self.mean, self.std = [float(v) for v in mean], (None if std is None else [float(v) for v in std])
        jitter = parse_scale_jitter(c.scale_jitter)
        # With scale jittering the paper tests at Q = (Smin + Smax) / 2, centre-cropped to the input size.
        self.eval_resize = (jitter[0] + jitter[1]) // 2 if jitter else None
        self.train_transform = data.transforms.train_transform(
            self.size, crop_padding=c.crop_padding, flip=c.flip, scale_jitter=jitter, mean=self.mean,
            std=self.std, channels_last=c.channels_last)
        self.eval_transform = data.transforms.eval_transform(
            self.size, resize=self.eval_resize, mean=self.mean, std=self.std, channels_last=c.channels_last)

    def _setup_model(self) -> None:
        from classicnets.models import create_model, model_info

        c = self.c
        smallest = model_info(c.model)["min_input_size"]
        if self.size < smallest:
            given = f"--size {self.size} is" if c.size else f"{c.data} images are {self.size}x{self.size},"
            raise ClassicNetsError(
                f"{c.model} needs inputs of at least {smallest}x{smallest} but {given} too small: "
                f"pass --size {smallest} or larger (the tutorials resize to 224)")
        self.model_kwargs = {"num_classes": self.num_classes, "in_channels": self.in_channels,
                             "input_size": self.size}
        for key in ("width", "dropout", "head", "init"):
            if getattr(c, key) is not None:
                self.model_kwargs[key] = getattr(c, key)
        torch.manual_seed(c.seed)  # the same initial weights on every rank and in every rerun
        model = create_model(c.model, **self.model_kwargs)
        if c.warm_start and self.resume is None:
            from classicnets.models.init import warm_start

            copied = warm_start(model, checkpoint.build_model(checkpoint.load(c.warm_start)))
            self.messages.append(f"warm start: {len(copied)} tensors copied from {c.warm_start}")
        if c.activation_checkpointing:
            _checkpoint_features(model)
        self.model = model.to(self.device, memory_format=self.memory_format)
        self.optimizer = _make_optimizer(list(self.model.parameters()), c)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.aux_weight = float(getattr(model, "aux_weight", 0.3))
        if self.dist.active:  # dropout masks differ between ranks, like their data
            torch.manual_seed(c.seed + self.dist.rank)

    def _setup_batches(self) -> None:
        """Micro-batch per rank and accumulation steps: given, measured against a budget, or resumed."""
        from classicnets.data import TensorLoader

        c, world = self.c, self.dist.world_size
        if c.batch_size % world:
            raise ClassicNetsError(f"batch_size {c.batch_size} does not split over {world} processes; "
                                   f"pass a multiple of {world}")
        per_rank = c.batch_size // world
        if self.resume is not None:
            progress = self.resume["progress"]
            if progress["world_size"] != world:
                raise ClassicNetsError(
                    f"the run was trained with {progress['world_size']} processes; resume it with "
                    f"torchrun --nproc_per_node {progress['world_size']} (or without torchrun if 1)")
            micro, accum = progress["micro_batch"], progress["accum_steps"]
        elif c.auto_batch or c.max_memory:
            micro = self._auto_micro_batch(per_rank)
            accum = per_rank // micro
        else:
            if per_rank % c.accum_steps:
                raise ClassicNetsError(f"batch_size {c.batch_size} is not divisible into {c.accum_steps} "
                                       f"accumulation steps{' per process' if world > 1 else ''}")
            micro, accum = per_rank // c.accum_steps, c.accum_steps
        self.micro_batch, self.accum_steps = micro, accum
        common = {"seed": c.seed, "device": self.device, "rank": self.dist.rank, "world_size": world}
        self.train_loader = TensorLoader(self.train_set, micro, shuffle=True, drop_last=True,
                                         transform=self.train_transform, **common)
        self.test_loader = TensorLoader(self.test_set, c.eval_batch_size or 2 * micro, shuffle=False,
                                        drop_last=False, transform=self.eval_transform, **common)
        self.steps_per_epoch = len(self.train_loader) // accum
        if self.steps_per_epoch == 0:
            raise ClassicNetsError(
                f"{len(self.train_set)} training examples make no full batch of {c.batch_size}: lower "
                f"--batch-size or raise --limit-train")

    def _auto_micro_batch(self, per_rank: int) -> int:
        """Try micro-batches on random inputs with a no-op optimizer step; keep the largest that fits."""
        c = self.c
        budget = parse_bytes(c.max_memory) if c.max_memory else memory.default_budget(self.device)
        params = list(self.model.parameters())
        buffers = {name: b.clone() for name, b in self.model.named_buffers()}
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        for group in self.optimizer.param_groups:
            group["lr"] = 0.0

        def try_step(m: int) -> None:
            x = torch.randn(m, self.in_channels, self.size, self.size, device=self.device)
            y = torch.randint(0, self.num_classes, (m,), device=self.device)
            with self._autocast():
                loss, _ = self._loss(self.model(x.contiguous(memory_format=self.memory_format)), y)
            loss.backward()
            for p in params:  # zero gradients and lr 0: the step allocates its state but changes nothing
                if p.grad is not None:
                    p.grad.zero_()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)

        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            self.model.train()
            micro, peaks = memory.find_micro_batch(try_step, per_rank, budget, self.device, self.baseline_rss)
        for group, lr in zip(self.optimizer.param_groups, lrs):
            group["lr"] = lr
        self.optimizer.state.clear()
        with torch.no_grad():
            for name, b in self.model.named_buffers():
                b.copy_(buffers[name])
        if self.dist.active:  # every rank must use the same plan: take the smallest
            micro = int(self.dist.max_(torch.tensor([-micro], device=self.device)).neg().item())
        self.messages.append(
            f"auto batch: micro-batch {micro} (peak {memory.format_bytes(peaks[micro])} of "
            f"{memory.format_bytes(budget)}) x {per_rank // micro} accumulation steps"
            f"{f' x {self.dist.world_size} processes' if self.dist.active else ''} = batch {c.batch_size}")
        return micro

    def _setup_state(self) -> None:
        """Fresh counters, or everything a resumable checkpoint holds."""
        c = self.c
        self.schedule = LRSchedule(self.optimizer, c, self.steps_per_epoch)
        self.history: list[dict[str, Any]] = []
        self.progress = {"epoch": 0, "step": 0, "loss_sum": 0.0, "correct": 0.0, "count": 0.0,
                         "train_seconds": 0.0, "epoch_seconds": 0.0, "elapsed": 0.0, "best_test_acc": None,
                         "best_epoch": None, "time_to_target": None, "micro_batch": self.micro_batch,
                         "accum_steps": self.accum_steps, "world_size": self.dist.world_size}
        self.last_eval = None
        self.loader_state = None
        if self.resume is None:
            return
        ck, rank = self.resume, self.dist.rank
        self.model.load_state_dict(ck["model"])
        self.optimizer.load_state_dict(ck["optimizer"])
        self.schedule.load_state_dict(ck["scheduler"])
        if ck.get("scaler"):
            self.scaler.load_state_dict(ck["scaler"])
        self.history = list(ck["metrics"])
        self.progress.update(ck["progress"])
        if rank != 0:  # the running sums were summed over ranks when saved: keep them once
            self.progress.update(loss_sum=0.0, correct=0.0, count=0.0)
        if self.progress["epoch"] >= c.epochs:
            raise ClassicNetsError(
                f"the run in {c.run_dir} already finished its {self.progress['epoch']} epochs; pass --epochs "
                "N to train longer (constant, step or plateau schedules) or start a new run")
        _set_rng_state(ck["rng"][rank], self.device)
        self.loader_state = ck["loader"][rank]

    def _wrap_model(self) -> None:
        """Compiled and/or DDP-wrapped views of the same parameters; checkpoints always use self.model."""
        self.eval_model = torch.compile(self.model) if self.c.compile else self.model
        self.train_model = self.eval_model
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            self.train_model = DDP(self.eval_model, device_ids=ids, gradient_as_bucket_view=True)

    def _setup_output(self) -> None:
        """Rank 0: config.toml, the sinks, the banner."""
        if not self.dist.is_main:
            return
        c = self.c
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_text(to_toml(c))
        self.sinks = make_sinks(self.run_dir, c.progress, c.tensorboard)
        start = {"name": c.name, "model": c.model, "data": c.data, "recipe": c.recipe,
                 "classes": self.classes, "micro_batch": self.micro_batch, "accum_steps": self.accum_steps,
                 "world_size": self.dist.world_size, "device": str(self.device)}
        self._emit("start", {"banner": self._banner(), "record": start, "history": self.history})
        for text in self.messages:
            self._emit("message", text)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> str:
        c, p = self.c, self.progress
        self.run_clock = time.monotonic() - p["elapsed"]
        self.last_save = time.monotonic()
        for epoch in range(p["epoch"], c.epochs):
            stopped = self._run_epoch(epoch)
            if stopped:
                return stopped
            stopped = self._end_epoch(epoch)
            if stopped:
                return stopped
        return "completed"

    def _run_epoch(self, epoch: int) -> str | None:
        """Train one epoch (or its rest, when resumed mid-epoch); returns a reason to stop, or None."""
        c, p = self.c, self.progress
        self.train_loader.set_epoch(epoch)
        done = p["step"] - epoch * self.steps_per_epoch  # optimizer steps of this epoch already taken
        if done and self.loader_state is not None:
            self.train_loader.load_state_dict(self.loader_state)
        self.loader_state = None
        self.epoch_clock = time.monotonic() - p["epoch_seconds"]
        loss_sum = torch.tensor(p["loss_sum"], device=self.device, dtype=torch.float64)
        correct = torch.tensor(p["correct"], device=self.device, dtype=torch.float64)
        count = torch.tensor(p["count"], device=self.device, dtype=torch.float64)
        nonfinite = torch.zeros((), dtype=torch.bool, device=self.device)
        step_loss = torch.zeros((), device=self.device)
        self.train_model.train()
        batches = itertools.islice(self.train_loader, (self.steps_per_epoch - done) * self.accum_steps)
        train_clock = time.monotonic()
        for micro_index, (x, y) in enumerate(batches):
            last_micro = (micro_index + 1) % self.accum_steps == 0
            x = x.contiguous(memory_format=self.memory_format)
            # DDP: all-reduce gradients only on the last micro-batch of a step.
            sync = nullcontext() if last_micro or not self.dist.active else self.train_model.no_sync()
            with sync:
                with self._autocast():
                    loss, logits = self._loss(self.train_model(x), y)
                self.scaler.scale(loss / self.accum_steps).backward()
            with torch.no_grad():
                loss_sum += loss.detach().double() * y.numel()
                correct += (logits.argmax(1) == y).sum()
                count += y.numel()
                step_loss += loss.detach().float() / self.accum_steps
            if not last_micro:
                continue
            if c.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.model.parameters(), c.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.schedule.step()
            p["step"] += 1
            done += 1
            nonfinite |= ~torch.isfinite(step_loss)
            shown_loss = None
            end_of_epoch = done == self.steps_per_epoch
            if p["step"] % self.check_every == 0 or end_of_epoch or self._checkpoint_due_by_steps():
                nonfinite_now, stop_now, save_now = self._agree(nonfinite, self._checkpoint_due())
                if nonfinite_now:
                    self._diverged(step_loss)
                shown_loss = float(step_loss)
                if stop_now or (save_now and not end_of_epoch):
                    p.update(loss_sum=loss_sum.item(), correct=correct.item(), count=count.item(),
                             train_seconds=p["train_seconds"] + time.monotonic() - train_clock,
                             epoch_seconds=time.monotonic() - self.epoch_clock,
                             elapsed=time.monotonic() - self.run_clock)
                    self._save_last(epoch)
                    train_clock = time.monotonic()
                    if stop_now:
                        return "interrupted"
            step_loss.zero_()
            self._emit("step", done, self.steps_per_epoch, shown_loss)
            _test_signal_hook(p["step"])
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        p.update(loss_sum=loss_sum.item(), correct=correct.item(), count=count.item(),
                 train_seconds=p["train_seconds"] + time.monotonic() - train_clock)
        return None

    def _end_epoch(self, epoch: int) -> str | None:
        """Test, record, checkpoint, print; returns a reason to stop, or None."""
        c, p = self.c, self.progress
        sums = self.dist.sum_(torch.tensor([p["loss_sum"], p["correct"], p["count"]], dtype=torch.float64,
                                           device=self.device)).tolist()
        elapsed = time.monotonic() - self.run_clock
        time_up = c.max_minutes is not None and elapsed >= c.max_minutes * 60
        last = epoch + 1 == c.epochs
        test = None
        if (epoch + 1) % c.eval_every == 0 or last or time_up:
            test = self._evaluate()
        record = {
            "epoch": epoch + 1, "step": p["step"],
            "train_loss": sums[0] / sums[2], "train_acc": sums[1] / sums[2],
            "test_loss": test.loss if test else None, "test_acc": test.top1 if test else None,
            "test_top5": test.top5 if test else None, "lr": self.schedule.last_lr,
            "epoch_seconds": time.monotonic() - self.epoch_clock, "train_seconds": p["train_seconds"],
            "examples_per_sec": sums[2] / max(p["train_seconds"], 1e-9),
            "elapsed": time.monotonic() - self.run_clock,
        }
        self.history.append(record)
        messages = [(self.schedule.epoch_end(record["test_acc"]), False)]
        if test is not None and (p["best_test_acc"] is None or test.top1 > p["best_test_acc"]):
            p.update(best_test_acc=test.top1, best_epoch=epoch + 1)
            self._save_best(epoch)
        reached = test is not None and c.stop_at_accuracy is not None and test.top1 >= c.stop_at_accuracy
        if reached and p["time_to_target"] is None:
            p["time_to_target"] = record["elapsed"]
        p.update(epoch=epoch + 1, loss_sum=0.0, correct=0.0, count=0.0, train_seconds=0.0, epoch_seconds=0.0,
                 elapsed=record["elapsed"])
        self._save_last(epoch + 1)
        self._emit("epoch", record)
        messages.append((self._chance_warning(epoch, record), True))
        for text, warning in messages:
            if text:
                self._emit("message", text, warning)
        _, stop_now, _ = self._agree(torch.zeros((), dtype=torch.bool, device=self.device), False)
        if stop_now:
            return "interrupted"
        if reached:
            return "accuracy target"
        if time_up and not last:
            return "time budget"
        return None

    # --- pieces of the loop ---------------------------------------------------------------------

    def _autocast(self):
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _loss(self, out, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cross-entropy; nets with auxiliary classifiers (GoogLeNet) add aux_weight x theirs."""
        smoothing = self.c.label_smoothing
        if isinstance(out, tuple) and hasattr(out, "logits"):
            loss = F.cross_entropy(out.logits, y, label_smoothing=smoothing)
            for aux in out.aux:
                loss = loss + self.aux_weight * F.cross_entropy(aux, y, label_smoothing=smoothing)
            return loss, out.logits
        return F.cross_entropy(out, y, label_smoothing=smoothing), out

    def _evaluate(self):
        """Test accuracy, loss and confusion; under DDP each rank tests a shard and the sums are combined."""
        from classicnets.evaluation import evaluate_loader

        self.last_eval = evaluate_loader(self.eval_model, self.test_loader, self.num_classes,
                                         autocast_dtype=self.autocast_dtype,
                                         reduce=self.dist.sum_ if self.dist.active else None,
                                         flip=self.c.test_flip)
        return self.last_eval

    def _checkpoint_due_by_steps(self) -> bool:
        return self.c.checkpoint_every > 0 and self.progress["step"] % self.c.checkpoint_every == 0

    def _checkpoint_due(self) -> bool:
        if self.c.checkpoint_every > 0:
            return self._checkpoint_due_by_steps()
        return time.monotonic() - self.last_save >= self.c.checkpoint_seconds

    def _agree(self, nonfinite: torch.Tensor, save: bool) -> tuple[bool, bool, bool]:
        """(loss not finite, stop requested, checkpoint due) on any rank: all ranks act together."""
        flags = torch.tensor([0.0, float(bool(self.stop_signal)), float(save)], device=self.device)
        flags[0] = nonfinite.float()
        return tuple(bool(v) for v in self.dist.max_(flags).tolist())

    def _diverged(self, step_loss: torch.Tensor) -> None:
        p = self.progress
        what = "nan" if torch.isnan(step_loss).item() else "not finite"
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was saved yet"
        if self.check_every > 1:
            where = f"between steps {p['step'] - self.check_every + 1} and {p['step']}"
        else:
            where = f"at step {p['step']}"
        raise ClassicNetsError(
            f"training diverged: the loss became {what} {where} (epoch {p['epoch'] + 1}, "
            f"lr {self.schedule.last_lr:.3g}); {kept}; lower the learning rate, e.g. --lr {self.c.lr / 10:g}")

    def _chance_warning(self, epoch: int, record: dict) -> str | None:
        """Plain VGG from scratch with too high an lr sits at chance with loss ln(classes): say so once."""
        k, c = self.num_classes, self.c
        if epoch != 1 or record["test_acc"] is None or record["test_acc"] > 1.5 / k:
            return None
        if c.model.endswith("_bn"):
            fix = f"try a lower learning rate, e.g. --lr {c.lr / 10:g}"
        else:
            fix = (f"plain VGG stalls at loss ln(classes) when the lr is too high for its init: try --lr "
                   f"{min(0.01, c.lr / 10):g}, --init xavier, or the batch-norm variant --model {c.model}_bn")
        return (f"test accuracy {record['test_acc']:.3f} is still at chance (1/{k} = {1 / k:.3f}) after 2 "
                f"epochs and the train loss is {record['train_loss']:.3f} (ln {k} = {math.log(k):.3f}): the "
                f"net is not learning; {fix}")

    # --- checkpoints ----------------------------------------------------------------------------

    def _payload(self, full: bool) -> dict[str, Any]:
        c = self.c
        payload = {
            "model_name": c.model, "model_kwargs": dict(self.model_kwargs), "model": self.model.state_dict(),
            "data": {"name": c.data, "classes": self.classes, "in_channels": self.in_channels,
                     "input_size": self.size, "mean": self.mean, "std": self.std, "resize": self.eval_resize},
            "config": c.to_dict(), "epoch": self.progress["epoch"], "step": self.progress["step"],
            "metrics": list(self.history),
        }
        if full:
            payload.update(optimizer=self.optimizer.state_dict(), scheduler=self.schedule.state_dict(),
                           scaler=self.scaler.state_dict() if self.scaler.is_enabled() else {},
                           progress=dict(self.progress))
        return payload

    def _save_last(self, epoch: int) -> None:
        """last.pt with everything needed to continue at this exact step. Collective under DDP."""
        p = self.progress
        p["epoch"] = epoch
        sums = self.dist.sum_(torch.tensor([p["loss_sum"], p["correct"], p["count"]], dtype=torch.float64,
                                           device=self.device)).tolist()
        mine = {"rng": _rng_state(self.device), "loader": self.train_loader.state_dict()}
        per_rank = self.dist.gather(mine)
        if self.dist.is_main:
            payload = self._payload(full=True)
            payload["progress"].update(loss_sum=sums[0], correct=sums[1], count=sums[2])
            payload["rng"] = [s["rng"] for s in per_rank]
            payload["loader"] = [s["loader"] for s in per_rank]
            checkpoint.save(self.run_dir / "last.pt", payload)
        self.last_save = time.monotonic()

    def _save_best(self, epoch: int) -> None:
        """best.pt: the weights with the best test accuracy so far (no training state: for eval)."""
        if self.dist.is_main:
            payload = self._payload(full=False)
            payload["epoch"] = epoch + 1
            checkpoint.save(self.run_dir / "best.pt", payload)

    # --- signals, output ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C / SIGTERM: finish the current step, save last.pt, stop. A second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.dist.is_main:
                self._emit("message", "stopping after this step to save a checkpoint (Ctrl-C again: at once)")

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _emit(self, event: str, *args) -> None:
        for sink in self.sinks:
            getattr(sink, event)(*args)

    def _banner(self) -> str:
        c = self.c
        params = sum(p.numel() for p in self.model.parameters())
        shape = ", ".join(f"{k} {v}" for k, v in self.model_kwargs.items()
                          if k not in ("num_classes", "in_channels"))
        where = f"{self.dist.world_size} x {self.device.type}" if self.dist.active else str(self.device)
        head = ""
        if self.resume is not None:
            p = self.progress
            head = f"resuming {self.run_dir} at epoch {p['epoch'] + 1}, step {p['step']}\n"
        batch = f"batch {c.batch_size}" + (f" ({self.micro_batch} x {self.accum_steps} accumulation)"
                                           if self.accum_steps > 1 else "")
        extras = ", ".join(x for x in (c.precision, "channels_last" if c.channels_last else "",
                                       "compiled" if c.compile else "",
                                       "activation checkpointing" if c.activation_checkpointing else "",
                                       "test with flips" if c.test_flip else "") if x)
        return (f"{head}training {c.model} ({shape}; {params / 1e6:.2f}M params) on {c.data}: "
                f"{len(self.train_set)} train / {len(self.test_set)} test images, {self.num_classes} "
                f"classes\nrecipe {c.recipe}: {c.epochs} epochs, {batch}, {c.optimizer} lr {c.lr:g} "
                f"{c.schedule}, {extras}, {where} ({torch.get_num_threads()} threads)\n"
                f"run dir {self.run_dir}")

    def _memory_line(self, peak: int) -> str:
        budget = parse_bytes(self.c.max_memory)
        verdict = "within" if peak <= budget else "OVER"
        return f"memory: training peaked at {memory.format_bytes(peak)}, {verdict} the {memory.format_bytes(budget)} budget"

    def _finish(self, stopped: str) -> RunResult:
        c, p = self.c, self.progress
        final = self.history[-1] if self.history else {}
        ev = self.last_eval
        summary = {
            "name": c.name, "stopped": stopped, "epochs_done": p["epoch"], "steps": p["step"],
            "seconds": p["elapsed"], "best_test_acc": p["best_test_acc"], "best_epoch": p["best_epoch"],
            "final_test_acc": final.get("test_acc"), "final_test_loss": final.get("test_loss"),
            "final_test_top5": final.get("test_top5"), "time_to_target": p["time_to_target"],
            "target": c.stop_at_accuracy, "classes": self.classes,
            "confusion": ev.confusion.tolist() if ev is not None else None,
            "per_class": list(ev.per_class) if ev is not None else None,
            "peak_memory": memory.peak_above(self.device, self.baseline_rss),  # what --max-memory budgets
        }
        if stopped == "interrupted":
            banner = (f"interrupted at step {p['step']}: saved {self.run_dir / 'last.pt'}; continue with: "
                      f"classicnets train --resume {self.run_dir}")
        else:
            best = "-"
            if p["best_test_acc"] is not None:
                best = f"{p['best_test_acc']:.4f} (epoch {p['best_epoch']})"
            banner = (f"{stopped}: best test acc {best}, {p['epoch']} epochs in {p['elapsed'] / 60:.1f} min; "
                      f"run dir {self.run_dir}")
        self._emit("end", {"banner": banner, "record": summary})
        if c.max_memory:
            self._emit("message", self._memory_line(summary["peak_memory"]))
        if c.plots and self.dist.is_main and self.history and stopped != "interrupted":
            from classicnets.plots import plot_run

            written = plot_run(self.run_dir)
            self._emit("message", "plots: " + ", ".join(str(w) for w in written))
        return RunResult(self.run_dir, p["best_test_acc"], p["best_epoch"], final.get("test_acc"),
                         list(self.history), p["elapsed"], stopped, c)


# --- helpers ------------------------------------------------------------------------------------------

def _wants_cuda(device: str) -> bool:
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def _pick_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ClassicNetsError(f"device {name} requested but no CUDA GPU is available; use --device cpu")
        if dist.active:
            return torch.device("cuda", dist.local_rank)
        device = torch.device(name)
        return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())
    return torch.device(name)


def _first(dataset, n: int | None):
    """The first n examples (quick runs and tests)."""
    if n is None or n >= len(dataset.labels):
        return dataset
    return dataset.subset(torch.arange(n))


def _default_name(c: TrainConfig) -> str:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(c.data.removeprefix("folder:")).name or c.data)
    base = f"{c.model}-{data}-{c.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (Path("runs") / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _make_optimizer(params: list[nn.Parameter], c: TrainConfig) -> torch.optim.Optimizer:
    """SGD or AdamW, fused where this torch and device support it, else foreach."""
    if c.optimizer == "sgd":
        cls, kwargs = torch.optim.SGD, {"momentum": c.momentum, "nesterov": c.nesterov}
    else:
        cls, kwargs = torch.optim.AdamW, {"betas": (0.9, 0.999)}
    for impl in ({"fused": True}, {"foreach": True}, {}):
        try:
            return cls(params, lr=c.lr, weight_decay=c.weight_decay, **kwargs, **impl)
        except (RuntimeError, TypeError, ValueError):
            continue
    raise AssertionError("unreachable: the plain optimizer always builds")


class _CheckpointedSequential(nn.Sequential):
    """The same children (so the same state_dict keys) as the Sequential it replaces; in training its
    forward keeps only segment boundaries and recomputes the rest during backward. Batch-norm running
    statistics see each batch twice (once more in the recomputation)."""

    def forward(self, x):
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        from torch.utils.checkpoint import checkpoint_sequential

        segments = max(1, round(math.sqrt(len(self))))
        return checkpoint_sequential(self, segments, x, use_reentrant=False)


def _checkpoint_features(model: nn.Module) -> None:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ClassicNetsError(f"activation checkpointing needs a net with an nn.Sequential `features`; "
                               f"{type(model).__name__} has none: drop --activation-checkpointing")
    for module in features.modules():  # an in-place op on a segment's saved input breaks its recomputation
        if getattr(module, "inplace", False):
            module.inplace = False
    model.features = _CheckpointedSequential(OrderedDict(features.named_children()))


def _seed_numpy(seed: int) -> None:
    try:
        import numpy as np
    except ImportError:
        return
    np.random.seed(seed)


def _rng_state(device: torch.device) -> dict[str, Any]:
    """RNG states as tensors and plain lists, so checkpoints load with weights_only=True."""
    version, internal, gauss = random.getstate()
    state: dict[str, Any] = {"torch": torch.get_rng_state(),
                             "python": {"version": version, "internal": list(internal), "gauss": gauss}}
    try:
        import numpy as np

        kind, keys, pos, has_gauss, cached = np.random.get_state()
        state["numpy"] = {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "cached": float(cached)}
    except ImportError:
        pass
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    py = state["python"]
    random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
    if "numpy" in state:
        import numpy as np

        n = state["numpy"]
        keys = n["keys"].numpy().astype(np.uint32)
        np.random.set_state((n["kind"], keys, n["pos"], n["has_gauss"], n["cached"]))
    if "cuda" in state and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def _test_signal_hook(step: int) -> None:
    target = os.environ.get(SIGNAL_AT_STEP_ENV)
    if target:
        at, _, name = target.partition(":")
        if int(at) == step:
            os.kill(os.getpid(), getattr(signal, "SIG" + (name or "KILL")))


@dataclass
class _TorchGlobals:
    """Process-wide torch settings a run changes, restored afterwards (a notebook keeps its own)."""

    threads: int
    deterministic: bool
    warn_only: bool
    cudnn_benchmark: bool
    cudnn_deterministic: bool

    @classmethod
    def capture(cls) -> _TorchGlobals:
        return cls(torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                   torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark,
                   torch.backends.cudnn.deterministic)

    def restore(self) -> None:
        torch.set_num_threads(self.threads)
        torch.use_deterministic_algorithms(self.deterministic, warn_only=self.warn_only)
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
