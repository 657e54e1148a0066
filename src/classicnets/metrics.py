"""Accuracy, top-k, confusion and the test pass over a loader: the counting that training, evaluation and
the paper experiment share.

This module sits below `training` and `evaluation` (it imports neither), so the trainer's per-epoch test
and the VGG paper's protocols count correct answers the same way, in one place.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# A net is "at chance" while its accuracy is at most this many times 1 / classes: the trainer's warning
# for a net that is not learning, and the paper experiment's rule that such a net proves nothing.
CHANCE_FACTOR = 1.5


@dataclass
class EvalResult:
    """Accuracy of one pass over a loader. Accuracies are fractions in [0, 1]."""

    top1: float
    top5: float  # top-min(5, K): equals top1 when there are fewer than 2 classes
    loss: float  # mean cross-entropy
    confusion: torch.Tensor  # K x K int64 on the CPU; rows = true class, columns = predicted
    per_class: list[float]  # accuracy of each true class (0.0 for a class with no samples)
    count: int


def logits_of(out) -> torch.Tensor:
    """The main logits of a net's output: nets with auxiliary classifiers (GoogLeNet) return a namedtuple
    with `.logits` in training mode."""
    return out.logits if isinstance(out, tuple) and hasattr(out, "logits") else out


def topk_correct(scores: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """How many rows have their true class among the k highest scores (0-dim int64 tensor); k is capped
    at the number of classes."""
    k = min(k, scores.shape[1])
    return (scores.topk(k, dim=1).indices == y[:, None]).any(dim=1).sum()


def confusion_matrix(y: torch.Tensor, pred: torch.Tensor, num_classes: int) -> torch.Tensor:
    """K x K int64 counts; rows = true class, columns = predicted."""
    return torch.bincount(y * num_classes + pred, minlength=num_classes * num_classes).view(
        num_classes, num_classes
    )


def per_class_accuracy(confusion: torch.Tensor) -> list[float]:
    """Accuracy of each true class (0.0 for a class with no samples)."""
    return (confusion.diag().double() / confusion.sum(1).clamp(min=1).double()).tolist()


def at_chance(accuracy: float, num_classes: int) -> bool:
    """Is this accuracy no better than guessing (within CHANCE_FACTOR of 1 / classes)?"""
    return accuracy <= CHANCE_FACTOR / num_classes


def evaluate_loader(
    model: torch.nn.Module,
    loader: Iterable,
    num_classes: int,
    *,
    autocast_dtype: torch.dtype | None = None,
    reduce: Callable[[torch.Tensor], torch.Tensor] | None = None,
    flip: bool = False,
) -> EvalResult:
    """Top-1/top-5 accuracy, mean loss and confusion of `model` over (x, y) batches.

    `flip` also runs each image mirrored and scores the average of the two soft-max posteriors, the VGG
    paper's test-time flip (sec. 3.2); the loss is then the negative log of that average.

    The batches must already be transformed and on the model's device. The model is run in eval mode
    under inference_mode and its previous mode is restored. For data-parallel evaluation pass
    `reduce`, an in-place sum over ranks (e.g. `Dist.sum_`): each rank then tests its own shard and
    every rank gets the totals. Without it nothing is reduced, so a caller that sums itself does not
    count twice.
    """
    was_training = model.training
    model.eval()
    confusion = None
    loss_sum = top5 = None
    try:
        with torch.inference_mode():
            for x, y in loader:
                device_type = x.device.type
                ctx = torch.autocast(device_type, dtype=autocast_dtype) if autocast_dtype else nullcontext()
                with ctx:
                    scores = logits_of(model(x))
                    mirrored = logits_of(model(x.flip(-1))) if flip else None
                scores = scores.float()
                if mirrored is not None:  # log of the mean posterior: argmax, top-5 and NLL all use it
                    scores = ((scores.softmax(1) + mirrored.float().softmax(1)) / 2).log()
                if confusion is None:
                    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64, device=y.device)
                    loss_sum = torch.zeros((), dtype=torch.float64, device=y.device)
                    top5 = torch.zeros((), dtype=torch.int64, device=y.device)
                loss_sum += F.cross_entropy(scores, y, reduction="sum").double()
                top5 += topk_correct(scores, y, 5)
                confusion += confusion_matrix(y, scores.argmax(1), num_classes)
    finally:
        model.train(was_training)
    if confusion is None:  # an empty loader (or an empty shard): zeros that still sum correctly
        confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        loss_sum = torch.zeros((), dtype=torch.float64)
        top5 = torch.zeros((), dtype=torch.int64)
    sums = torch.stack([loss_sum, top5.double(), confusion.diag().sum().double(), confusion.sum().double()])
    if reduce is not None:
        sums = reduce(sums.clone())
        confusion = reduce(confusion.clone())
    loss_total, top5_total, top1_total, count = sums.tolist()
    n = max(count, 1.0)
    confusion = confusion.cpu().clone()  # a normal tensor, not an inference one: callers may sum it in place
    return EvalResult(
        top1=top1_total / n,
        top5=top5_total / n,
        loss=loss_total / n,
        confusion=confusion,
        per_class=per_class_accuracy(confusion),
        count=int(count),
    )
