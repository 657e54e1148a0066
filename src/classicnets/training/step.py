"""The one training step, used by the trainer, the auto-batch probe and `classicnets bench`.

    step = TrainStep(model, optimizer, ClassificationLoss(label_smoothing=0.1), autocast_dtype=torch.bfloat16)
    out = step(x, y)          # forward under autocast, backward; out.loss, out.logits (detached)
    loss = step.update()      # gradient clipping, optimizer and scaler step, zeroed grads, lr schedule

As in timm's `ClassificationTask` and torchvision's `train_one_epoch`, every part is passed in: the
training view of the net (compiled and/or DDP-wrapped), the optimizer, the loss, the grad scaler, the
autocast precision, gradient accumulation and clipping, the lr schedule. `optimizer_steps` is the loop
over micro-batches that the trainer runs and bench times, so a benchmark measures the real step.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.profiler import record_function

from classicnets.metrics import logits_of


def autocast(device_type: str, dtype: torch.dtype | None):
    """Mixed precision for a block (`dtype` None: full precision, no autocast)."""
    return nullcontext() if dtype is None else torch.autocast(device_type, dtype=dtype)


@dataclass
class ClassificationLoss:
    """Cross-entropy with label smoothing; nets with auxiliary classifiers (GoogLeNet in training mode)
    add `aux_weight` times each auxiliary head's loss (0.3 in the paper, sec. 5)."""

    label_smoothing: float = 0.0
    aux_weight: float = 0.3

    def __call__(self, out, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, main logits) of a net's output."""
        logits = logits_of(out)
        loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        if logits is not out:
            for aux in out.aux:
                loss = loss + self.aux_weight * F.cross_entropy(aux, y, label_smoothing=self.label_smoothing)
        return loss, logits


@dataclass
class StepOutput:
    """What one micro-batch gave: its mean loss and the main logits, both detached."""

    loss: torch.Tensor
    logits: torch.Tensor


class RunningTotals:
    """An epoch's training loss and accuracy, summed on the device (no sync per step); `values()` reads
    them once. Started from saved sums when a run resumes mid-epoch."""

    def __init__(self, device: torch.device, loss_sum: float = 0.0, correct: float = 0.0, count: float = 0.0):
        self.loss_sum = torch.tensor(loss_sum, device=device, dtype=torch.float64)
        self.correct = torch.tensor(correct, device=device, dtype=torch.float64)
        self.count = torch.tensor(count, device=device, dtype=torch.float64)

    def add(self, out: StepOutput, y: torch.Tensor) -> None:
        with torch.no_grad():
            self.loss_sum += out.loss.double() * y.numel()
            self.correct += (out.logits.argmax(1) == y).sum()
            self.count += y.numel()

    def values(self) -> tuple[float, float, float]:
        """(loss sum, correct, count) as Python floats."""
        return self.loss_sum.item(), self.correct.item(), self.count.item()


class TrainStep:
    """Forward and backward of one micro-batch per call; `update()` ends an optimizer step.

    `model` is the view to train (compiled and/or DDP-wrapped); `params` the parameters to clip (default:
    the model's). `forward_mode` (a torch function mode) is entered around each forward pass. The loss is
    divided by `accum_steps`, so `accum_steps` calls before one `update()` give
    the gradient of one batch of that many micro-batches. `scaler` scales fp16 losses (None: no scaling).
    `schedule` (anything with a `step()`) is stepped after each optimizer step.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, loss_fn: ClassificationLoss, *,
                 scaler: torch.amp.GradScaler | None = None, autocast_dtype: torch.dtype | None = None,
                 accum_steps: int = 1, grad_clip: float | None = None,
                 memory_format: torch.memory_format = torch.contiguous_format, schedule=None,
                 params: Iterable[nn.Parameter] | None = None, forward_mode: TorchFunctionMode | None = None):
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        self.forward_mode = forward_mode  # e.g. convgrad.SmallMapConvGrad(): entered around each forward
        self.scaler = scaler if scaler is not None else torch.amp.GradScaler("cpu", enabled=False)
        self.autocast_dtype, self.accum_steps, self.grad_clip = autocast_dtype, accum_steps, grad_clip
        self.memory_format, self.schedule = memory_format, schedule
        self.params = list(params) if params is not None else list(model.parameters())
        self._step_loss: torch.Tensor | None = None  # mean loss of the optimizer step being accumulated

    def __call__(self, x: torch.Tensor, y: torch.Tensor, *, sync: bool = True) -> StepOutput:
        """Forward and backward of one micro-batch. `sync=False` skips DDP's gradient all-reduce (for all
        but the last micro-batch of an accumulated step)."""
        x = x.contiguous(memory_format=self.memory_format)
        no_sync = getattr(self.model, "no_sync", None)
        with nullcontext() if sync or no_sync is None else no_sync():
            with record_function("step:forward"), autocast(x.device.type, self.autocast_dtype), \
                    self.forward_mode or nullcontext():
                loss, logits = self.loss_fn(self.model(x), y)
            with record_function("step:backward"):
                self.scaler.scale(loss / self.accum_steps).backward()
        loss = loss.detach()
        if self._step_loss is None:
            self._step_loss = torch.zeros((), device=loss.device)
        self._step_loss += loss.float() / self.accum_steps
        return StepOutput(loss, logits.detach())

    def update(self) -> torch.Tensor:
        """Clip, step the optimizer (through the scaler), zero the gradients, step the schedule; returns
        the mean loss of the step's micro-batches (a device tensor: reading it syncs)."""
        with record_function("step:optimizer"):
            if self.grad_clip is not None:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.params, self.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            if self.schedule is not None:
                self.schedule.step()
        loss, self._step_loss = self._step_loss, None
        return loss


def optimizer_steps(step: TrainStep, batches: Iterable, totals: RunningTotals | None = None
                    ) -> Iterator[torch.Tensor]:
    """Feed (x, y) micro-batches to `step`, `step.accum_steps` per optimizer step, adding each to `totals`;
    yields after every optimizer step with its mean loss. The trainer's epoch and bench both run this."""
    micro_batches = iter(batches)
    index = 0
    while True:
        with record_function("step:data"):
            batch = next(micro_batches, None)
        if batch is None:
            return
        x, y = batch
        index += 1
        last_micro = index % step.accum_steps == 0
        out = step(x, y, sync=last_micro)
        if totals is not None:
            totals.add(out, y)
        if last_micro:
            yield step.update()
