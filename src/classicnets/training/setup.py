"""`build(config)`: the assembled parts of a training run, from a config (and a checkpoint to resume).

    run = build(resolve_config(recipe="fast", epochs=1))
    for loss in optimizer_steps(run.step, run.train_loader):  # one epoch of the real training step
        ...

In order: seeds; data (the training split's statistics, the batched device transforms); the net (seeded,
warm-started, moved to the device in its memory layout), its optimizer and grad scaler; the batch plan
(given, measured against a memory budget, or the checkpoint's) and the two loaders; the lr schedule and
the step; the saved state of a resumed run; the compiled / DDP-wrapped views. The trainer, bench and the
benchmarks all start from here, so what they time and what trains are the same parts.

`build` changes no process-wide setting; run it inside `runtime.torch_settings(...)` for the threads
and determinism the config asks for (the trainer does).
"""

from __future__ import annotations

import math
import random
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.checkpoint import checkpoint_sequential

from classicnets import data
from classicnets.data import ArrayDataset, TensorLoader
from classicnets.errors import ClassicNetsError
from classicnets.models import create_model, min_input_size, model_info
from classicnets.models.init import warm_start
from classicnets.models.weights import Weights, in_modules, per_channel, resolve
from classicnets.training import checkpoint, memory
from classicnets.training.config import (
    RECIPES,
    TrainConfig,
    parse_bytes,
    parse_random_resized_crop,
    parse_scale_jitter,
)
from classicnets.training.convgrad import SmallMapConvGrad
from classicnets.training.distributed import Dist
from classicnets.training.runtime import autocast_precision, pick_device
from classicnets.training.schedule import LRSchedule
from classicnets.training.step import ClassificationLoss, TrainStep

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class RunParts:
    """Everything a training run is made of. `model` holds the weights (checkpoints save it);
    `train_model` / `eval_model` are the views that run (compiled and/or DDP-wrapped, else `model`)."""

    config: TrainConfig
    dist: Dist
    device: torch.device
    # data
    train_set: ArrayDataset
    test_set: ArrayDataset
    classes: list[str]
    in_channels: int
    size: int
    mean: list[float]
    std: list[float] | None
    eval_resize: int | None  # the test scale of scale-jittered runs (None: resize to size)
    # the net and how it learns
    model: nn.Module
    model_kwargs: dict[str, Any]
    train_model: nn.Module
    eval_model: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    schedule: LRSchedule
    step: TrainStep
    precision: str  # what runs: --precision, unless this device cannot run it well (runtime.autocast_precision)
    autocast_dtype: torch.dtype | None
    # batches
    train_loader: TensorLoader
    test_loader: TensorLoader
    micro_batch: int
    accum_steps: int
    steps_per_epoch: int
    baseline_rss: int  # the process's RSS before any of this: CPU memory budgets count from here
    messages: list[str] = field(default_factory=list)  # worth telling the user (data notes, warm start...)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def data_record(self) -> dict[str, Any]:
        """What a checkpoint keeps of the data, so eval and predict prepare inputs as training did."""
        return {"name": self.config.data, "classes": self.classes, "in_channels": self.in_channels,
                "input_size": self.size, "mean": self.mean, "std": self.std, "resize": self.eval_resize}


def build(config: TrainConfig, *, resume: dict[str, Any] | None = None, dist: Dist | None = None,
          in_channels: int | None = None) -> RunParts:
    """Assemble a run; with `resume` (a loaded last.pt) restore its weights, optimizer, schedule and batch
    plan. `dist`: the process group under torchrun (default: one process). `in_channels` feeds a
    grayscale data set to a net of that many channels by repeating the plane (bench's RGB nets)."""
    c = config
    dist = dist or Dist()
    model_info(c.model)  # a misspelt model name fails before any data is loaded or downloaded
    device = pick_device(c.device, dist)
    if c.auto_batch or c.max_memory:
        memory.release_free_memory()
    baseline_rss = memory.process_rss()
    seed_everything(c.seed)
    messages: list[str] = []
    full_train, full_test = load_data(c, messages)  # first: a mistyped folder fails before any download
    # Trained weights are read once; their preprocessing (size, mean/std) shapes the inputs. A resumed run
    # takes its weights from the checkpoint and its preprocessing from its data record.
    start = resolve_weights(c.model, c.weights) if c.weights and resume is None else None
    saved = resume.get("data") if resume is not None else None
    stats = input_stats(c, full_train, weights=start, saved=saved)  # the whole split's, even if --limit-train cuts it
    sets = _first(full_train, c.limit_train), _first(full_test, c.limit_test)
    size, eval_resize = input_sizes(c, sets[0], start, saved)
    data_channels = int(sets[0].images.shape[1])
    channels = _fed_channels(c.data, data_channels, in_channels)
    jitter = parse_scale_jitter(c.scale_jitter)
    repeat = channels if channels != data_channels else None
    train_transform = data.transforms.train_transform(
        size, crop_padding=c.crop_padding, flip=c.flip, scale_jitter=jitter,
        random_resized_crop=parse_random_resized_crop(c.random_resized_crop), mean=stats[0], std=stats[1],
        channels=repeat, channels_last=c.channels_last)
    eval_transform = data.transforms.eval_transform(
        size, resize=eval_resize, mean=stats[0], std=stats[1], channels=repeat, channels_last=c.channels_last)

    classes = list(sets[0].classes)
    model, model_kwargs = make_model(c, len(classes), channels, size, warm=resume is None, messages=messages,
                                     weights=start)
    del start  # the model holds the tensors now; the file's copy can go
    memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
    model = model.to(device, memory_format=memory_format)
    optimizer = make_optimizer(param_groups(model, c), c)
    scaler = torch.amp.GradScaler(device.type, enabled=c.precision == "fp16")
    loss_fn = ClassificationLoss(c.label_smoothing, float(getattr(model, "aux_weight", 0.3)))
    if dist.active:  # dropout masks differ between ranks, like their data
        torch.manual_seed(c.seed + dist.rank)

    precision, note = autocast_precision(c.precision, device)
    messages += [note] if note else []
    autocast_dtype = PRECISIONS[precision]
    # oneDNN's weight gradient over small maps is slow (convgrad.py). Not under torch.compile (it picks its
    # own kernels) or activation checkpointing (whose recomputation in backward would run without the mode).
    forward_mode = (SmallMapConvGrad() if c.small_map_conv_grad and device.type == "cpu" and not c.compile
                    and not c.activation_checkpointing else None)
    micro, accum = plan_batches(c, dist, resume, probe=lambda: TrainStep(
        model, optimizer, loss_fn, autocast_dtype=autocast_dtype, memory_format=memory_format,
        forward_mode=forward_mode),
        shape=(channels, size, size), num_classes=len(classes), device=device, baseline_rss=baseline_rss,
        messages=messages)
    common = {"seed": c.seed, "device": device, "rank": dist.rank, "world_size": dist.world_size}
    train_loader = TensorLoader(sets[0], micro, shuffle=True, drop_last=True, transform=train_transform,
                                **common)
    test_loader = TensorLoader(sets[1], c.eval_batch_size or 2 * micro, shuffle=False, drop_last=False,
                               transform=eval_transform, **common)
    steps_per_epoch = len(train_loader) // accum
    if steps_per_epoch == 0:
        raise ClassicNetsError(
            f"{len(sets[0])} training examples make no full batch of {c.batch_size}: lower "
            f"--batch-size or raise --limit-train")

    schedule = LRSchedule(optimizer, c, steps_per_epoch)
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        schedule.load_state_dict(resume["scheduler"])
        if resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
    eval_model = torch.compile(model) if c.compile else model
    train_model = eval_model
    if dist.active:
        ids = [device.index] if device.type == "cuda" else None
        train_model = DistributedDataParallel(eval_model, device_ids=ids, gradient_as_bucket_view=True)
    step = TrainStep(train_model, optimizer, loss_fn, scaler=scaler, autocast_dtype=autocast_dtype,
                     accum_steps=accum, grad_clip=c.grad_clip, memory_format=memory_format, schedule=schedule,
                     params=model.parameters(), forward_mode=forward_mode)
    return RunParts(
        config=c, dist=dist, device=device, train_set=sets[0], test_set=sets[1], classes=classes,
        in_channels=channels, size=size, mean=stats[0], std=stats[1], eval_resize=eval_resize, model=model,
        model_kwargs=model_kwargs, train_model=train_model, eval_model=eval_model, optimizer=optimizer,
        scaler=scaler, schedule=schedule, step=step, precision=precision, autocast_dtype=autocast_dtype, train_loader=train_loader,
        test_loader=test_loader, micro_batch=micro, accum_steps=accum, steps_per_epoch=steps_per_epoch,
        baseline_rss=baseline_rss, messages=messages)


# --- the parts, one function each -------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's global generators (dropout draws from torch's)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_data(c: TrainConfig, messages: list[str]) -> tuple[ArrayDataset, ArrayDataset]:
    """(train, test) as uint8 tensors; an image folder is tested on its held-out split (`data.test_split`)."""
    folder = {"skip_bad": c.skip_bad, "seed": c.seed} if data.is_folder(c.data) else {}
    train_set = data.load(c.data, "train", root=c.data_dir, **folder)
    test_set = data.load(c.data, data.test_split(c.data), root=c.data_dir, **folder)
    messages += [f"data {split.split}: {note}" for split in (train_set, test_set) for note in split.notes]
    return train_set, test_set


def resolve_weights(model: str, weights: str) -> Weights:
    """The trained weights a run starts from (`models.weights.resolve`: fetched, read and checked)."""
    return resolve(model, model_info(model)["torchvision"], weights)


def input_stats(c: TrainConfig, train_set: ArrayDataset, *, weights: Weights | None = None,
                saved: dict[str, Any] | None = None) -> tuple[list[float], list[float] | None]:
    """(mean, std) the inputs are normalised with: the training split's, or the trained weights' own (per
    data channel: a gray data set gets the mean of their RGB values), or a resumed run's; the mean only
    (the VGG paper: std None), or none at all (the tutorials feed ToTensor's [0, 1])."""
    channels = int(train_set.images.shape[1])
    if saved and isinstance(saved.get("mean"), list):
        return list(saved["mean"]), (None if saved.get("std") is None else list(saved["std"]))
    mean, std = train_set.stats()
    if weights is not None and "mean" in weights.cfg and "std" in weights.cfg:
        mean, std = (per_channel(weights.cfg[k], channels) for k in ("mean", "std"))
    if c.normalize == "none":
        mean, std = [0.0] * channels, [1.0] * channels
    elif c.normalize == "mean":
        std = None
    return [float(v) for v in mean], (None if std is None else [float(v) for v in std])


def input_sizes(c: TrainConfig, train_set: ArrayDataset, weights: Weights | None,
                saved: dict[str, Any] | None) -> tuple[int, int | None]:
    """(input size, test scale): --size, else a resumed run's, the trained weights' (224 for ImageNet's) or
    the images' own. The test scale is the short side test images are rescaled to before the centre crop
    (None: straight to the input size): the paper's Q = (Smin + Smax) / 2 with scale jittering, the weights'
    resize-to-crop ratio (256 for 224) with trained weights."""
    trained = weights.cfg if weights is not None else {}
    if saved and isinstance(saved.get("input_size"), int):
        return c.size or int(saved["input_size"]), saved.get("resize")
    size = c.size or (trained["input_size"][1] if "input_size" in trained else int(train_set.images.shape[-1]))
    jitter = parse_scale_jitter(c.scale_jitter)
    if jitter:
        return size, (jitter[0] + jitter[1]) // 2
    if trained.get("resize") and "input_size" in trained and trained["resize"] != trained["input_size"][1]:
        return size, round(size * trained["resize"] / trained["input_size"][1])
    return size, None


def make_model(c: TrainConfig, num_classes: int, in_channels: int, size: int, *, warm: bool = True,
               messages: list[str] | None = None, weights: Weights | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """The net and the keywords that rebuild it, seeded so every rank and rerun starts from the same
    weights; started from trained `weights` (which layers came from them goes to `messages`) or
    warm-started from --warm-start (VGG paper) when `warm`; the --freeze part frozen."""
    kwargs: dict[str, Any] = {"num_classes": num_classes, "in_channels": in_channels, "input_size": size}
    for key in ("width", "fc_width", "dropout", "head", "init", "ceil_mode"):
        if getattr(c, key) is not None:
            kwargs[key] = getattr(c, key)
    # A recipe's net option another net lacks (d2l's fc_width for NiN) does not apply; given by hand, it is refused.
    options, recipe = model_info(c.model)["options"], RECIPES[c.recipe]
    kwargs = {k: v for k, v in kwargs.items() if k in options or recipe.get(k, object()) != v}
    smallest = min_input_size(c.model, **{k: v for k, v in kwargs.items() if k != "input_size"})
    if size < smallest:
        given = f"--size {size} is" if c.size else f"{c.data} images are {size}x{size},"
        fix = ", or --ceil-mode (its max-pools then round sizes up)" if "ceil_mode" in options else ""
        raise ClassicNetsError(
            f"{c.model} needs inputs of at least {smallest}x{smallest} but {given} too small: "
            f"pass --size {smallest} or larger (the tutorials resize to 224){fix}")
    check_model_fits(c.model, kwargs)
    torch.manual_seed(c.seed)
    model = create_model(c.model, weights=weights, **kwargs)
    notes = [] if messages is None else messages
    if weights is not None:
        notes.append(model.weights_report.line())
    if c.warm_start and warm:
        copied = warm_start(model, checkpoint.build_model(checkpoint.load(c.warm_start)))
        notes.append(f"warm start: {len(copied)} tensors copied from {c.warm_start}")
    if c.freeze != "none":
        trainable = freeze(model, c.freeze)
        notes.append(f"freeze {c.freeze}: {trainable:,} of {sum(p.numel() for p in model.parameters()):,} "
                     "weights train")
    if c.activation_checkpointing:
        checkpoint_features(model)
    return model, kwargs


def check_model_fits(name: str, kwargs: dict[str, Any]) -> None:
    """Count the net's weights on the meta device (no memory) and refuse one whose weights, gradients and
    optimizer state cannot fit this machine, before any allocation (say, --width 1e9)."""
    shown = ", ".join(f"{k} {v}" for k, v in kwargs.items() if k in ("width", "input_size", "num_classes"))
    try:
        with torch.device("meta"):
            shape_only = create_model(name, **kwargs)
    except (RuntimeError, OverflowError) as e:  # sizes past what a tensor can hold
        raise ClassicNetsError(f"{name} ({shown}) is too large to build ({str(e).splitlines()[0][:80]}); "
                               "lower --width") from None
    count = sum(p.numel() for p in shape_only.parameters())
    need = 4 * 4 * count  # fp32 weights, gradients and up to two optimizer buffers
    total = memory.total_memory()
    if total and need > total:
        raise ClassicNetsError(
            f"{name} ({shown}) has {count:,} weights: training it needs about {memory.format_bytes(need)}, more "
            f"than this machine's {memory.format_bytes(total)}; lower --width (or --size for an FC head)")


def freeze(model: nn.Module, part: str) -> int:
    """Stop gradients to `part` of the net ("features": all but the head, i.e. VGG's conv body; "body": all but
    the class layer(s), a linear probe); frozen batch norm keeps its running statistics (ClassicNet.train).
    Returns the number of weights that still train."""
    keep = model.head_names() if part == "features" else model.class_layer_names()
    for name, param in model.named_parameters():
        param.requires_grad_(in_modules(name, keep))
    model.train(model.training)
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def param_groups(model: nn.Module, c: TrainConfig) -> list[nn.Parameter] | list[dict[str, Any]]:
    """The weights that train; with --head-lr-mult, the class layer(s) in their own group whose lr the
    schedule scales by `lr_scale` (a new head on a trained body learns faster than the body moves)."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if c.head_lr_mult == 1.0:
        return trainable
    heads = model.class_layer_names() if hasattr(model, "class_layer_names") else []
    in_head = {id(p) for name, p in model.named_parameters() if in_modules(name, heads)}
    groups = [{"params": [p for p in trainable if id(p) not in in_head], "lr_scale": 1.0},
              {"params": [p for p in trainable if id(p) in in_head], "lr": c.lr * c.head_lr_mult,
               "lr_scale": c.head_lr_mult}]
    return [g for g in groups if g["params"]]


def make_optimizer(params: list[nn.Parameter] | list[dict[str, Any]], c: TrainConfig) -> torch.optim.Optimizer:
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


def plan_batches(c: TrainConfig, dist: Dist, resume: dict[str, Any] | None, *, probe, shape: tuple[int, ...],
                 num_classes: int, device: torch.device, baseline_rss: int,
                 messages: list[str]) -> tuple[int, int]:
    """(micro-batch per rank, accumulation steps): the checkpoint's, measured against a memory budget
    (`probe()` makes the TrainStep to try), or split from --batch-size and --accum-steps."""
    world = dist.world_size
    if c.batch_size % world:
        raise ClassicNetsError(f"batch_size {c.batch_size} does not split over {world} processes; "
                               f"pass a multiple of {world}")
    per_rank = c.batch_size // world
    if resume is not None:
        progress = resume["progress"]
        if progress["world_size"] != world:
            raise ClassicNetsError(
                f"the run was trained with {progress['world_size']} processes; resume it with "
                f"torchrun --nproc_per_node {progress['world_size']} (or without torchrun if 1)")
        return progress["micro_batch"], progress["accum_steps"]
    if c.auto_batch or c.max_memory:
        budget = parse_bytes(c.max_memory) if c.max_memory else memory.default_budget(device)
        micro, peaks = probe_micro_batch(probe(), per_rank, shape, num_classes, budget, device, baseline_rss)
        if dist.active:  # every rank must use the same plan: take the smallest
            micro = int(dist.max_(torch.tensor([-micro], device=device)).neg().item())
        messages.append(
            f"auto batch: micro-batch {micro} (peak {memory.format_bytes(peaks[micro])} of "
            f"{memory.format_bytes(budget)}) x {per_rank // micro} accumulation steps"
            f"{f' x {world} processes' if dist.active else ''} = batch {c.batch_size}")
        return micro, per_rank // micro
    if per_rank % c.accum_steps:
        raise ClassicNetsError(f"batch_size {c.batch_size} is not divisible into {c.accum_steps} "
                               f"accumulation steps{' per process' if world > 1 else ''}")
    return per_rank // c.accum_steps, c.accum_steps


def probe_micro_batch(step: TrainStep, per_rank: int, shape: tuple[int, ...], num_classes: int, budget: int,
                      device: torch.device, baseline_rss: int) -> tuple[int, dict[int, int]]:
    """Run the real step on random inputs, with zeroed gradients and lr 0 so that the optimizer allocates
    its state but changes nothing; keep the largest micro-batch that fits (`memory.find_micro_batch`).
    The weights, buffers, optimizer and global RNG are as before afterwards."""
    model, optimizer = step.model, step.optimizer
    buffers = {name: b.clone() for name, b in model.named_buffers()}
    lrs = [g["lr"] for g in optimizer.param_groups]
    for group in optimizer.param_groups:
        group["lr"] = 0.0

    def try_step(m: int) -> None:
        x = torch.randn(m, *shape, device=device)
        y = torch.randint(0, num_classes, (m,), device=device)
        step(x, y)
        for p in step.params:
            if p.grad is not None:
                p.grad.zero_()
        step.update()

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        model.train()
        found = memory.find_micro_batch(try_step, per_rank, budget, device, baseline_rss)
    for group, lr in zip(optimizer.param_groups, lrs, strict=True):
        group["lr"] = lr
    optimizer.state.clear()
    with torch.no_grad():
        for name, b in model.named_buffers():
            b.copy_(buffers[name])
    return found


class CheckpointedSequential(nn.Sequential):
    """The same children (so the same state_dict keys) as the Sequential it replaces; in training its
    forward keeps only segment boundaries and recomputes the rest during backward. Batch-norm running
    statistics see each batch twice (once more in the recomputation)."""

    def forward(self, x):
        if not (self.training and torch.is_grad_enabled()):
            return super().forward(x)
        segments = max(1, round(math.sqrt(len(self))))
        return checkpoint_sequential(self, segments, x, use_reentrant=False)


def checkpoint_features(model: nn.Module) -> None:
    """Activation checkpointing of a net's `features` (less memory, one more forward in backward)."""
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ClassicNetsError(f"activation checkpointing needs a net with an nn.Sequential `features`; "
                               f"{type(model).__name__} has none: drop --activation-checkpointing")
    for module in features.modules():  # an in-place op on a segment's saved input breaks its recomputation
        if getattr(module, "inplace", False):
            module.inplace = False
    model.features = CheckpointedSequential(OrderedDict(features.named_children()))


def _first(dataset: ArrayDataset, n: int | None) -> ArrayDataset:
    """The first n examples (quick runs and tests)."""
    if n is None or n >= len(dataset.labels):
        return dataset
    return dataset.subset(torch.arange(n))


def _fed_channels(data_name: str, data_channels: int, wanted: int | None) -> int:
    if wanted is None or wanted == data_channels:
        return data_channels
    if data_channels != 1:
        raise ClassicNetsError(f"{data_name} has {data_channels}-channel images; pass --channels "
                               f"{data_channels}")
    return wanted

