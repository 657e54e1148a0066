"""The training loop, for one CPU, one GPU or many (DDP through torchrun): epochs, checkpoints, signals.

`train()` resolves the config and runs `Trainer.fit()`, which takes its parts from `setup.build` (data,
net, optimizer, schedule, the one step of `step.py`) inside `runtime.torch_settings`, and then only
loops: an epoch is `optimizer_steps` over the device-resident loader, with the NaN guard, periodic
checkpoints and Ctrl-C handled at step boundaries; after it, the test pass, the record, best.pt, last.pt.

Why a resumed run equals one never stopped: an optimizer step depends only on the weights, the
optimizer/scaler/schedule state, its batch (the loader rebuilds batch b of epoch e, augmentation
included, from (seed, e, b, rank)) and the global RNG that drives dropout. last.pt holds all of them,
written at an optimizer-step boundary (every epoch, every --checkpoint-every steps or
--checkpoint-seconds, and on Ctrl-C/SIGTERM), with the running epoch sums (`Progress`) so the printed
metrics are the same too.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import os
import re
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classicnets.errors import ClassicNetsError
from classicnets.metrics import EvalResult, at_chance, evaluate_loader
from classicnets.plots import plot_run
from classicnets.training import checkpoint, memory, rundir
from classicnets.training.config import (
    TrainConfig,
    parse_bytes,
    resolve_config,
    resume_config,
    to_toml,
    with_overrides,
)
from classicnets.training.distributed import Dist, init_from_env
from classicnets.training.runtime import pick_device, run_settings, torch_settings, wants_cuda
from classicnets.training.setup import RunParts, build
from classicnets.training.sinks import make_sinks
from classicnets.training.step import RunningTotals, optimizer_steps
from classicnets.training.threads import adaptive_threads, watched

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
        path = Path(resume)
        if path.is_dir() and not (path / "last.pt").exists() and (path / "metrics.jsonl").exists():
            raise ClassicNetsError(f"{path} holds no checkpoint: that run stopped before it saved its first one; "
                                   f"start it again (delete {path}'s files, or pick another --run-dir)")
        ckpt = checkpoint.load(path, for_resume=True)
        config = resume_config(ckpt["config"], {**(config or {}), **overrides},
                               path if path.is_dir() else path.parent)
        return Trainer(config, ckpt).fit()
    if isinstance(config, TrainConfig):
        return Trainer(with_overrides(config, overrides)).fit()
    return Trainer(resolve_config({**(config or {}), **overrides})).fit()


@dataclass
class Progress:
    """Where a run stands; saved in last.pt as a dict of these fields, so a resumed run goes on from here."""

    epoch: int = 0  # epochs finished
    step: int = 0  # optimizer steps taken
    loss_sum: float = 0.0  # running sums of the unfinished epoch (summed over ranks when saved)
    correct: float = 0.0
    count: float = 0.0
    train_seconds: float = 0.0  # of the unfinished epoch, training only
    epoch_seconds: float = 0.0  # of the unfinished epoch, all of it
    elapsed: float = 0.0  # of the whole run
    best_test_acc: float | None = None
    best_epoch: int | None = None
    time_to_target: float | None = None  # elapsed when --stop-at-accuracy was first reached
    micro_batch: int = 0
    accum_steps: int = 1
    world_size: int = 1

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> Progress:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in saved.items() if k in names})


class Trainer:
    """The loop around `build(config)`'s parts: epochs, tests, checkpoints, signals and sinks."""

    def __init__(self, config: TrainConfig, resume: dict[str, Any] | None = None):
        self.c = config
        self.resume = resume  # a loaded last.pt to continue
        self.sinks: list = []
        self.stop_signal = 0  # set by SIGINT/SIGTERM: stop at the next step boundary
        self.last_eval: EvalResult | None = None
        self.threads = None  # an AdaptiveThreads when --threads was not given (training.threads)

    # --- the whole run, top to bottom -----------------------------------------------------------

    def fit(self) -> RunResult:
        c = self.c
        dist = init_from_env("cuda" if wants_cuda(c.device) else "cpu")
        try:
            with torch_settings(**run_settings(c, pick_device(c.device, dist), dist)):
                return self._fit(dist)
        finally:
            dist.close()

    def _fit(self, dist: Dist) -> RunResult:
        lock, notes = self._claim_run_dir(dist)
        old_handlers: dict = {}
        try:
            run = self.run = build(self.c, resume=self.resume, dist=dist)
            run.messages[:0] = notes
            if dist.is_main:
                rundir.check_free_space(self.run_dir, rundir.estimated_checkpoint_bytes(run.model, run.optimizer))
            # A GPU syncs on every .item(): check the loss every 20 steps there, every step on a CPU.
            self.check_every = 20 if run.device.type == "cuda" else 1
            self.threads = adaptive_threads(self.c.threads, deterministic=self.c.deterministic,
                                            distributed=dist.active, device=run.device,
                                            say=lambda text: self._emit("message", text))
            self.progress, self.history, self.loader_state = self._starting_point(run)
            self._open_output()
            old_handlers = self._install_signal_handlers()
            memory.release_free_memory()
            memory.reset_peak(run.device)  # the peak reported at the end is training's, not the setup's
            stopped = self._loop()
            return self._finish(stopped)
        except OSError as e:  # a full or read-only disk while writing the run's files: one line
            if e.errno not in rundir.WRITE_ERRNOS:
                raise
            raise ClassicNetsError(f"{rundir.write_error(e, self.run_dir)}; {self._kept()}") from None
        finally:
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)
            for sink in self.sinks:
                sink.close()
            if lock is not None:
                lock.release()

    def _claim_run_dir(self, dist: Dist) -> tuple[rundir.RunDirLock | None, list[str]]:
        """Name the run, lock its dir (rank 0; before anything in it is read or written), refuse a dir that
        holds another run, check it is writable, and remove temp files of an interrupted write."""
        resuming = self.resume is not None
        automatic = self.c.run_dir is None and self.c.name is None
        for attempt in itertools.count():
            self.c = name_run(self.c, dist)
            self.run_dir = Path(self.c.run_dir)
            if not dist.is_main:
                return None, []
            lock = rundir.RunDirLock(self.run_dir)
            try:
                lock.acquire()
                if not resuming:
                    rundir.check_new_run_dir(self.run_dir)
                rundir.check_writable(self.run_dir)
                removed = checkpoint.remove_partial_writes(self.run_dir)
            except rundir.RunDirTaken:
                lock.release()
                if automatic and attempt < 20:  # another run took the generated name first: take the next
                    self.c = dataclasses.replace(self.c, name=None, run_dir=None)
                    continue
                raise
            except BaseException:
                lock.release()
                raise
            notes = [lock.note] if lock.note else []
            notes += [f"removed {p.name}, left by a checkpoint write that was interrupted" for p in removed]
            return lock, notes
        raise AssertionError("unreachable")

    def _kept(self) -> str:
        last = self.run_dir / "last.pt"
        if last.exists():
            return f"the last checkpoint {last} is intact: continue with classicnets train --resume {self.run_dir}"
        return "no checkpoint was saved yet"

    def _starting_point(self, run: RunParts) -> tuple[Progress, list[dict[str, Any]], dict | None]:
        """(progress, history, this rank's loader position): fresh, or as last.pt left them."""
        progress = Progress(micro_batch=run.micro_batch, accum_steps=run.accum_steps,
                            world_size=run.dist.world_size)
        if self.resume is None:
            return progress, [], None
        ck, rank = self.resume, run.dist.rank
        progress = Progress.from_dict({**dataclasses.asdict(progress), **ck["progress"]})
        if rank != 0:  # the running sums were summed over ranks when saved: keep them once
            progress.loss_sum = progress.correct = progress.count = 0.0
        if progress.epoch >= self.c.epochs:
            raise ClassicNetsError(
                f"the run in {self.c.run_dir} already finished its {progress.epoch} epochs; pass --epochs "
                "N to train longer (constant, step or plateau schedules) or start a new run")
        checkpoint.set_rng_state(ck["rng"][rank], run.device)
        return progress, list(ck["metrics"]), ck["loader"][rank]

    def _open_output(self) -> None:
        """Rank 0: config.toml, the sinks, the banner."""
        if not self.run.dist.is_main:
            return
        c, run = self.c, self.run
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "config.toml").write_text(to_toml(c))
        self.sinks = make_sinks(self.run_dir, c.progress, c.tensorboard)
        start = {"name": c.name, "model": c.model, "data": c.data, "recipe": c.recipe,
                 "classes": run.classes, "micro_batch": run.micro_batch, "accum_steps": run.accum_steps,
                 "world_size": run.dist.world_size, "device": str(run.device)}
        self._emit("start", {"banner": self._banner(), "record": start, "history": self.history})
        for text in run.messages:
            self._emit("message", text)

    # --- the loop -------------------------------------------------------------------------------

    def _loop(self) -> str:
        p = self.progress
        self.run_clock = time.monotonic() - p.elapsed
        self.last_save = time.monotonic()
        for epoch in range(p.epoch, self.c.epochs):
            stopped = self._run_epoch(epoch) or self._end_epoch(epoch)
            if stopped:
                return stopped
        return "completed"

    def _run_epoch(self, epoch: int) -> str | None:
        """Train one epoch (or its rest, when resumed mid-epoch); returns a reason to stop, or None."""
        p, run = self.progress, self.run
        run.train_loader.set_epoch(epoch)
        done = p.step - epoch * run.steps_per_epoch  # optimizer steps of this epoch already taken
        if done and self.loader_state is not None:
            run.train_loader.load_state_dict(self.loader_state)
        self.loader_state = None
        self.epoch_clock = time.monotonic() - p.epoch_seconds
        totals = RunningTotals(run.device, p.loss_sum, p.correct, p.count)
        nonfinite = torch.zeros((), dtype=torch.bool, device=run.device)
        run.train_model.train()
        batches = watched(itertools.islice(run.train_loader, (run.steps_per_epoch - done) * run.accum_steps),
                          self.threads)  # None when --threads is given: the count is obeyed
        train_clock = time.monotonic()
        for step_loss in optimizer_steps(run.step, batches, totals):
            p.step += 1
            done += 1
            nonfinite |= ~torch.isfinite(step_loss)
            shown_loss = None
            end_of_epoch = done == run.steps_per_epoch
            if p.step % self.check_every == 0 or end_of_epoch or self._checkpoint_due_by_steps():
                nonfinite_now, stop_now, save_now = self._agree(nonfinite, self._checkpoint_due())
                if nonfinite_now:
                    self._diverged(step_loss)
                shown_loss = float(step_loss)
                if stop_now or (save_now and not end_of_epoch):
                    p.loss_sum, p.correct, p.count = totals.values()
                    p.train_seconds += time.monotonic() - train_clock
                    p.epoch_seconds = time.monotonic() - self.epoch_clock
                    p.elapsed = time.monotonic() - self.run_clock
                    self._save_last(epoch)
                    train_clock = time.monotonic()
                    if stop_now:
                        return "interrupted"
            self._emit("step", done, run.steps_per_epoch, shown_loss)
            _test_signal_hook(p.step)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        p.loss_sum, p.correct, p.count = totals.values()
        p.train_seconds += time.monotonic() - train_clock
        return None

    def _end_epoch(self, epoch: int) -> str | None:
        """Test, record, checkpoint, print; returns a reason to stop, or None."""
        c, p, run = self.c, self.progress, self.run
        sums = self._summed_totals()
        elapsed = time.monotonic() - self.run_clock
        time_up = c.max_minutes is not None and elapsed >= c.max_minutes * 60
        last = epoch + 1 == c.epochs
        test = None
        if (epoch + 1) % c.eval_every == 0 or last or time_up:
            test = self._evaluate()
        record = {
            "epoch": epoch + 1, "step": p.step,
            "train_loss": sums[0] / sums[2], "train_acc": sums[1] / sums[2],
            "test_loss": test.loss if test else None, "test_acc": test.top1 if test else None,
            "test_top5": test.top5 if test else None, "lr": run.schedule.last_lr,
            "epoch_seconds": time.monotonic() - self.epoch_clock, "train_seconds": p.train_seconds,
            "examples_per_sec": sums[2] / max(p.train_seconds, 1e-9),
            "elapsed": time.monotonic() - self.run_clock,
        }
        self.history.append(record)
        messages = [(run.schedule.epoch_end(record["test_acc"]), False)]
        if test is not None and (p.best_test_acc is None or test.top1 > p.best_test_acc):
            p.best_test_acc, p.best_epoch = test.top1, epoch + 1
            self._save_best(epoch)
        reached = test is not None and c.stop_at_accuracy is not None and test.top1 >= c.stop_at_accuracy
        if reached and p.time_to_target is None:
            p.time_to_target = record["elapsed"]
        p.epoch, p.elapsed = epoch + 1, record["elapsed"]
        p.loss_sum = p.correct = p.count = p.train_seconds = p.epoch_seconds = 0.0
        self._save_last(epoch + 1)
        self._emit("epoch", record)
        messages.append((chance_warning(self.c, self.run, epoch, record), True))
        for text, warning in messages:
            if text:
                self._emit("message", text, warning)
        _, stop_now, _ = self._agree(torch.zeros((), dtype=torch.bool, device=run.device), False)
        if stop_now:
            return "interrupted"
        if reached:
            return "accuracy target"
        if time_up and not last:
            return "time budget"
        return None

    # --- pieces of the loop ---------------------------------------------------------------------

    def _summed_totals(self) -> list[float]:
        """(loss sum, correct, count) of the epoch so far, over all ranks."""
        p, run = self.progress, self.run
        sums = torch.tensor([p.loss_sum, p.correct, p.count], dtype=torch.float64, device=run.device)
        return run.dist.sum_(sums).tolist()

    def _evaluate(self) -> EvalResult:
        """Test accuracy, loss and confusion; under DDP each rank tests a shard and the sums are combined."""
        run = self.run
        test_batches = watched(run.test_loader, self.threads)
        self.last_eval = evaluate_loader(run.eval_model, test_batches, run.num_classes,
                                         autocast_dtype=run.autocast_dtype,
                                         reduce=run.dist.sum_ if run.dist.active else None,
                                         flip=self.c.test_flip)
        return self.last_eval

    def _checkpoint_due_by_steps(self) -> bool:
        return self.c.checkpoint_every > 0 and self.progress.step % self.c.checkpoint_every == 0

    def _checkpoint_due(self) -> bool:
        if self.c.checkpoint_every > 0:
            return self._checkpoint_due_by_steps()
        return time.monotonic() - self.last_save >= self.c.checkpoint_seconds

    def _agree(self, nonfinite: torch.Tensor, save: bool) -> tuple[bool, bool, bool]:
        """(loss not finite, stop requested, checkpoint due) on any rank: all ranks act together."""
        flags = torch.tensor([0.0, float(bool(self.stop_signal)), float(save)], device=self.run.device)
        flags[0] = nonfinite.float()
        return tuple(bool(v) for v in self.run.dist.max_(flags).tolist())

    def _diverged(self, step_loss: torch.Tensor) -> None:
        p = self.progress
        what = "nan" if torch.isnan(step_loss).item() else "not finite"
        last = self.run_dir / "last.pt"
        kept = f"the last good checkpoint {last} is kept" if last.exists() else "no checkpoint was saved yet"
        if self.check_every > 1:
            where = f"between steps {p.step - self.check_every + 1} and {p.step}"
        else:
            where = f"at step {p.step}"
        raise ClassicNetsError(
            f"training diverged: the loss became {what} {where} (epoch {p.epoch + 1}, "
            f"lr {self.run.schedule.last_lr:.3g}); {kept}; lower the learning rate, e.g. --lr {self.c.lr / 10:g}")

    # --- checkpoints ----------------------------------------------------------------------------

    def _payload(self, full: bool) -> dict[str, Any]:
        c, run, p = self.c, self.run, self.progress
        payload = {
            "model_name": c.model, "model_kwargs": dict(run.model_kwargs), "model": run.model.state_dict(),
            "data": run.data_record(), "config": c.to_dict(), "epoch": p.epoch, "step": p.step,
            "metrics": list(self.history),
        }
        if full:
            payload.update(optimizer=run.optimizer.state_dict(), scheduler=run.schedule.state_dict(),
                           scaler=run.scaler.state_dict() if run.scaler.is_enabled() else {},
                           progress=dataclasses.asdict(p))
        return payload

    def _save_last(self, epoch: int) -> None:
        """last.pt with everything needed to continue at this exact step. Collective under DDP."""
        run = self.run
        self.progress.epoch = epoch
        sums = self._summed_totals()
        mine = {"rng": checkpoint.rng_state(run.device), "loader": run.train_loader.state_dict()}
        per_rank = run.dist.gather(mine)
        if run.dist.is_main:
            payload = self._payload(full=True)
            payload["progress"].update(loss_sum=sums[0], correct=sums[1], count=sums[2])
            payload["rng"] = [s["rng"] for s in per_rank]
            payload["loader"] = [s["loader"] for s in per_rank]
            self._write(self.run_dir / "last.pt", payload)
        self.last_save = time.monotonic()

    def _save_best(self, epoch: int) -> None:
        """best.pt: the weights with the best test accuracy so far (no training state: for eval)."""
        if self.run.dist.is_main:
            payload = self._payload(full=False)
            payload["epoch"] = epoch + 1
            self._write(self.run_dir / "best.pt", payload)

    def _write(self, path: Path, payload: dict[str, Any]) -> None:
        """checkpoint.save, and on a failed write (full disk...) one line that also says what is kept."""
        try:
            checkpoint.save(path, payload)
        except ClassicNetsError as e:
            last = self.run_dir / "last.pt"
            then = (f"continue with classicnets train --resume {self.run_dir} once it can be written"
                    if last.exists() else "no checkpoint was saved yet")
            raise ClassicNetsError(f"{e}; {then}") from None

    # --- signals, output ------------------------------------------------------------------------

    def _install_signal_handlers(self) -> dict:
        """Ctrl-C / SIGTERM: finish the current step, save last.pt, stop. A second Ctrl-C stops at once."""
        if threading.current_thread() is not threading.main_thread():
            return {}

        def handler(signum, frame):
            if self.stop_signal:
                raise KeyboardInterrupt
            self.stop_signal = signum
            if self.run.dist.is_main:
                self._emit("message", "stopping after this step to save a checkpoint (Ctrl-C again: at once)")

        return {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}

    def _emit(self, event: str, *args) -> None:
        for sink in self.sinks:
            getattr(sink, event)(*args)

    def _banner(self) -> str:
        c, run = self.c, self.run
        params = sum(p.numel() for p in run.model.parameters())
        shape = ", ".join(f"{k} {v}" for k, v in run.model_kwargs.items()
                          if k not in ("num_classes", "in_channels"))
        where = f"{run.dist.world_size} x {run.device.type}" if run.dist.active else str(run.device)
        head = ""
        if self.resume is not None:
            head = f"resuming {self.run_dir} at epoch {self.progress.epoch + 1}, step {self.progress.step}\n"
        batch = f"batch {c.batch_size}" + (f" ({run.micro_batch} x {run.accum_steps} accumulation)"
                                           if run.accum_steps > 1 else "")
        extras = ", ".join(x for x in (run.precision, "channels_last" if c.channels_last else "",
                                       "compiled" if c.compile else "",
                                       "activation checkpointing" if c.activation_checkpointing else "",
                                       "test with flips" if c.test_flip else "") if x)
        return (f"{head}training {c.model} ({shape}; {params / 1e6:.2f}M params) on {c.data}: "
                f"{len(run.train_set)} train / {len(run.test_set)} test images, {run.num_classes} "
                f"classes\nrecipe {c.recipe}: {c.epochs} epochs, {batch}, {c.optimizer} lr {c.lr:g} "
                f"{c.schedule}, {extras}, {where} ({torch.get_num_threads()} threads)\n"
                f"run dir {self.run_dir}")

    def _memory_line(self, peak: int) -> str:
        budget = parse_bytes(self.c.max_memory)
        verdict = "within" if peak <= budget else "OVER"
        return f"memory: training peaked at {memory.format_bytes(peak)}, {verdict} the {memory.format_bytes(budget)} budget"

    def _finish(self, stopped: str) -> RunResult:
        c, p, run = self.c, self.progress, self.run
        final = self.history[-1] if self.history else {}
        ev = self.last_eval
        summary = {
            "name": c.name, "stopped": stopped, "epochs_done": p.epoch, "steps": p.step,
            "seconds": p.elapsed, "best_test_acc": p.best_test_acc, "best_epoch": p.best_epoch,
            "final_test_acc": final.get("test_acc"), "final_test_loss": final.get("test_loss"),
            "final_test_top5": final.get("test_top5"), "time_to_target": p.time_to_target,
            "target": c.stop_at_accuracy, "classes": run.classes,
            "confusion": ev.confusion.tolist() if ev is not None else None,
            "per_class": list(ev.per_class) if ev is not None else None,
            "peak_memory": memory.peak_above(run.device, run.baseline_rss),  # what --max-memory budgets
        }
        if stopped == "interrupted":
            banner = (f"interrupted at step {p.step}: saved {self.run_dir / 'last.pt'}; continue with: "
                      f"classicnets train --resume {self.run_dir}")
        else:
            best = "-"
            if p.best_test_acc is not None:
                best = f"{p.best_test_acc:.4f} (epoch {p.best_epoch})"
            banner = (f"{stopped}: best test acc {best}, {p.epoch} epochs in {p.elapsed / 60:.1f} min; "
                      f"run dir {self.run_dir}")
        self._emit("end", {"banner": banner, "record": summary})
        if c.max_memory:
            self._emit("message", self._memory_line(summary["peak_memory"]))
        threads_line = self.threads.summary() if self.threads is not None else None
        if threads_line:
            self._emit("message", threads_line)
        if c.plots and run.dist.is_main and self.history and stopped != "interrupted":
            written = plot_run(self.run_dir)
            self._emit("message", "plots: " + ", ".join(str(w) for w in written))
        return RunResult(self.run_dir, p.best_test_acc, p.best_epoch, final.get("test_acc"),
                         list(self.history), p.elapsed, stopped, c)


# --- helpers ------------------------------------------------------------------------------------------

def name_run(c: TrainConfig, dist: Dist) -> TrainConfig:
    """The config with its name and run dir filled in (runs/<name> unless given; a generated name is one
    no folder has yet)."""
    if c.run_dir is None:
        name = c.name or dist.broadcast(_default_name(c))
        run_dir = Path("runs") / name
    else:
        run_dir = Path(c.run_dir)
        name = c.name or run_dir.name
    return dataclasses.replace(c, name=name, run_dir=str(run_dir))


def _default_name(c: TrainConfig) -> str:
    data = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(c.data.removeprefix("folder:")).name or c.data)[:80]
    base = f"{c.model}-{data}-{c.recipe}-{time.strftime('%Y%m%d-%H%M%S')}"
    name, n = base, 1
    while (Path("runs") / name).exists():
        n += 1
        name = f"{base}-{n}"
    return name


def _test_signal_hook(step: int) -> None:
    target = os.environ.get(SIGNAL_AT_STEP_ENV)
    if target:
        at, _, name = target.partition(":")
        if int(at) == step:
            os.kill(os.getpid(), getattr(signal, "SIG" + (name or "KILL")))


def chance_warning(c: TrainConfig, run: RunParts, epoch: int, record: dict) -> str | None:
    """Plain VGG from scratch with too high an lr sits at chance with loss ln(classes): say so once, with
    advice that fits the run (its lr, its net, whether it started from trained weights)."""
    k = run.num_classes
    if epoch != 1 or record["test_acc"] is None or not at_chance(record["test_acc"], k):
        return None
    if c.weights:  # the init is the weights': only the learning rates and the data are the user's to change
        fix = (f"with {len(run.train_set)} training images and {run.steps_per_epoch} step(s) per epoch "
               f"it may need more images or epochs; else try --lr {c.lr * 10:g} or a larger --head-lr-mult")
    elif c.model.endswith("_bn"):
        fix = f"try a lower learning rate, e.g. --lr {c.lr / 10:g}"
    else:
        fix = (f"plain VGG stalls at loss ln(classes) when the lr is too high for its init: try --lr "
               f"{min(0.01, c.lr / 10):g}, --init xavier, or the batch-norm variant --model {c.model}_bn")
    return (f"test accuracy {record['test_acc']:.3f} is still at chance (1/{k} = {1 / k:.3f}) after 2 "
            f"epochs and the train loss is {record['train_loss']:.3f} (ln {k} = {math.log(k):.3f}): the "
            f"net is not learning; {fix}")
