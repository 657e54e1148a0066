"""One flat training config, the named recipes, and how they combine.

Precedence, lowest first: `TrainConfig` defaults < recipe (`RECIPES[name]`) < TOML file < explicit
flags or keywords. Recipes are literal dicts of overrides, so a reader sees in one place what the
tutorials, the VGG paper and our own fast recipe set. The CLI options are generated from the fields
below, so the flags, the TOML keys and the Python keywords are the same names and never drift.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tomllib

from classicnets.errors import ClassicNetsError


def _group(name: str):
    """Field maker for one section of the config (the section titles the options in --help).

    `choices` are the only values the field accepts: a tuple, or a dict of value -> what it means. The
    CLI writes them into --help from here, so help texts never list the values by hand (tests check)."""

    def make(default, help: str, choices: tuple[str, ...] | dict[str, str] | None = None):
        return field(default=default, metadata={"help": help, "choices": choices, "group": name})

    return make


_what, _model, _optim, _data, _speed, _repro, _run = map(
    _group, ("what", "model", "optim", "data", "speed", "repro", "run"))

# The values the nets accept, written here because their modules need torch and the config (and with it
# `train --help`) must not; tests/test_cli_help.py keeps them equal to models.vgg.HEADS and
# models.init.SCHEMES.
HEADS = {"fc": "the paper's three FC layers", "gap": "global average pooling + one linear layer, as NiN"}
INIT_SCHEMES = {
    "kaiming": "torchvision's", "he": "kaiming fan-in for every layer", "xavier": "Glorot uniform, as d2l",
    "normal": "N(0, 0.01), the VGG paper's", "alexnet": "the AlexNet paper's, AlexNet-shaped nets only",
}
FREEZE = {"none": "everything trains", "features": "the convolutional body; the FC layers and class layer train",
          "body": "everything but the class layer(s): a linear probe"}
# --progress: train's modes (`eval --progress` takes the same ones for its test pass).
PROGRESS = {"auto": "bar on a terminal, else lines", "bar": "a tqdm bar",
            "lines": "a step line every quarter epoch", "none": "epoch lines only"}


@dataclass
class TrainConfig:
    """Everything a training run needs, flat and typed.

    A bare `TrainConfig()` holds the base values below (recipe "custom"); `resolve_config` and
    `classicnets.train(**keywords)` start from a recipe ("fast" unless another is named).
    """

    # what to train
    model: str = _what("vgg11", "net name (see `classicnets list`)")
    data: str = _what("fashion-mnist", "data set: fashion-mnist, mnist, cifar10, cifar100 or folder:PATH")
    data_dir: str | None = _what(None, "where the data files are (default: system dirs, then download)")
    recipe: str = _what("custom", "named preset the other values start from")
    name: str | None = _what(None, "run name (default: model-data-recipe-time)")
    run_dir: str | None = _what(None, "run folder (default: runs/<name>)")

    # model shape
    size: int | None = _model(None, "input size the images are resized to (default: the data's own)")
    width: float | None = _model(None, "channel width multiplier (default: the model's, 1.0)")
    dropout: float | None = _model(None, "dropout in the classifier (default: the model's)")
    fc_width: int | None = _model(None, "units of VGG's and AlexNet's hidden FC layers (default: 4096 x --width; "
                                        "the tutorials keep 4096 at width 0.25)")
    head: str | None = _model(None, "classifier head of the VGG nets (default: the model's)", HEADS)
    ceil_mode: bool | None = _model(None, "VGG: max-pools round sizes up (Caffe's rule), so 28x28 passes all five "
                                          "(28-14-7-4-2-1) without a resize to 32 (default: off, as torchvision)")
    init: str | None = _model(None, "weight initialisation (default: the model's)", INIT_SCHEMES)
    warm_start: str | None = _model(None, "checkpoint whose matching layers initialise the net (VGG paper)")
    weights: str | None = _model(None, "start from trained weights: imagenet (torchvision's, through torch's hub "
                                       "cache) or a file: a torchvision state dict, a classicnets checkpoint or "
                                       ".safetensors; other classes get a new class layer")
    freeze: str = _model("none", "layers that keep the weights' values", FREEZE)

    # optimisation
    epochs: int = _optim(10, "passes over the training set")
    batch_size: int = _optim(128, "examples per optimizer step, all devices together; 'auto': fit the memory")
    auto_batch: bool = _optim(False, "largest micro-batch under --max-memory, accumulated to --batch-size")
    max_memory: str | None = _optim(None, "memory budget per process for auto batch, e.g. 4GiB (implies it)")
    accum_steps: int = _optim(1, "micro-batches per optimizer step (gradient accumulation)")
    eval_batch_size: int | None = _optim(None, "batch for the test pass (default: 2x the micro-batch)")
    optimizer: str = _optim("sgd", "optimizer", ("sgd", "adamw"))
    lr: float = _optim(0.05, "learning rate (the peak for onecycle)")
    head_lr_mult: float = _optim(1.0, "the class layer's learning rate relative to --lr (finetune: 10, a new "
                                      "head on a trained body)")
    momentum: float = _optim(0.0, "SGD momentum (AdamW keeps beta1 0.9)")
    nesterov: bool = _optim(False, "Nesterov momentum (SGD)")
    weight_decay: float = _optim(0.0, "weight decay (L2 for SGD, decoupled for AdamW)")
    grad_clip: float | None = _optim(None, "clip the gradient norm to this value")
    label_smoothing: float = _optim(0.0, "label smoothing of the cross-entropy")
    schedule: str = _optim("constant", "learning-rate schedule",
                           ("constant", "onecycle", "plateau", "cosine", "step"))
    warmup_epochs: float = _optim(0.0, "linear warm-up before constant/cosine/step/plateau")
    onecycle_pct: float = _optim(0.25, "fraction of the run onecycle spends rising to --lr")
    onecycle_tail_pct: float = _optim(0.0, "fraction of the run at the end where onecycle's lr falls linearly "
                                           "from --onecycle-tail-lr x --lr to zero, after a cosine down to it "
                                           "(0: cosine all the way down)")
    onecycle_tail_lr: float = _optim(0.02, "onecycle's lr where its tail starts, as a fraction of --lr")
    cycle_momentum: bool = _optim(True, "onecycle also cycles momentum 0.95 -> 0.85 -> 0.95")
    plateau_patience: int = _optim(2, "plateau: epochs without a better test accuracy before a drop")
    max_lr_drops: int = _optim(3, "plateau: at most this many drops (the VGG paper: 3)")
    lr_decay: float = _optim(0.1, "factor of each plateau/step drop")
    lr_step_epochs: int = _optim(30, "step: epochs between drops")

    # augmentation and preprocessing
    crop_padding: int = _data(0, "random crops after padding by this many pixels (0 = off)")
    flip: bool = _data(False, "random horizontal flips")
    scale_jitter: str | None = _data(None, "train scales 'SMIN,SMAX': resize to random S, crop --size (VGG)")
    random_resized_crop: str | None = _data(None, "train crops of a random 'MIN,MAX' fraction of the image's area "
                                                  "and aspect 3/4-4/3, resized to --size (torchvision's ImageNet "
                                                  "training; finetune: 0.08,1)")
    normalize: str = _data("meanstd", "input normalisation", {
        "meanstd": "subtract the mean, divide by the std", "mean": "subtract the mean only, as the VGG paper",
        "none": "pixels in [0, 1], as d2l"})
    test_flip: bool = _data(False, "test pass averages each image's soft-max with its mirror's (VGG paper "
                                   "sec. 3.2; 2x the test time)")
    limit_train: int | None = _data(None, "use only the first N training examples (quick runs, tests)")
    limit_test: int | None = _data(None, "use only the first N test examples")
    skip_bad: bool = _data(False, "image folders: skip unreadable images (and count them) instead of stopping")

    # speed and memory
    precision: str = _speed("fp32", "autocast precision", {
        "fp32": "", "bf16": "runs as fp32 on a CPU without bf16 kernels",
        "fp16": "with a grad scaler; for GPUs (on a CPU it runs, slowly, to test that path)"})
    channels_last: bool = _speed(False, "NHWC memory layout (faster convolutions with bf16 and on GPUs)")
    compile: bool = _speed(False, "torch.compile the model")
    small_map_conv_grad: bool = _speed(True, "on a CPU, the weight gradient of stride-1 convs over maps of at "
                                             "most 4x4 (2x2 in fp32) as one more convolution: 1.3-14x faster "
                                             "there than oneDNN's own (training/convgrad.py)")
    cudnn_benchmark: bool = _speed(True, "let cuDNN pick the fastest kernels (GPU)")
    activation_checkpointing: bool = _speed(False, "recompute activations in backward: less memory, slower")
    keep_memory: bool = _speed(True, "CPU: keep freed memory for the next step, not return it to the OS "
                                     "(no page faults on large activations)")
    threads: int | None = _speed(None, "CPU threads, obeyed exactly (default: all cores, split between local "
                                       "processes; one fewer while another program keeps them busy)")
    device: str = _speed("auto", "auto, cpu, cuda or cuda:N")

    # reproducibility
    seed: int = _repro(0, "seed of init, order, augmentation and dropout")
    deterministic: bool = _repro(False, "deterministic kernels (bitwise repeatable, slower on GPU)")

    # run control and output
    eval_every: int = _run(1, "test every N epochs (and after the last)")
    stop_at_accuracy: float | None = _run(None, "stop once test accuracy reaches this fraction, e.g. 0.93 "
                                                "(time to accuracy)")
    max_minutes: float | None = _run(None, "time budget: stop after the epoch that passes it")
    checkpoint_every: int = _run(0, "also save last.pt every N optimizer steps (0: see --checkpoint-seconds)")
    checkpoint_seconds: float = _run(60.0, "save last.pt at the first step after this many seconds")
    progress: str = _run("auto", "progress display", PROGRESS)
    tensorboard: str = _run("auto", "TensorBoard events", {"auto": "if installed", "on": "", "off": ""})
    plots: bool = _run(True, "draw PNG curves and the confusion matrix at the end")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(TrainConfig)}
_TYPES: dict[str, Any] = typing.get_type_hints(TrainConfig)

# Named presets: literal overrides of the defaults above. Keep each one readable as a table.
RECIPES: dict[str, dict[str, Any]] = {
    # Values as given, no preset.
    "custom": {},
    # The tutorials (d2l ch. 7.2; tutorial 001): VGG-11 with 1/4 of the conv channels and the two 4096-unit
    # FC layers kept (43,093,322 parameters) on Fashion-MNIST
    # resized to 224, plain SGD lr 0.05, batch 128, 10 epochs, Xavier init (without it the net stays
    # at chance), inputs in [0, 1] without normalisation, no augmentation, fp32.
    "d2l": {
        "model": "vgg11", "width": 0.25, "fc_width": 4096, "size": 224, "dropout": 0.5, "init": "xavier",
        "epochs": 10, "batch_size": 128, "optimizer": "sgd", "lr": 0.05, "momentum": 0.0,
        "weight_decay": 0.0, "schedule": "constant", "normalize": "none", "precision": "fp32",
    },
    # Simonyan & Zisserman 2015, sec. 3.1: SGD momentum 0.9, weight decay 5e-4, batch 256, dropout 0.5
    # on the first two FC layers, lr 1e-2 divided by 10 when validation accuracy stops improving (3
    # times in total), weights from N(0, 1e-2) (or a warm start from a trained net A: --warm-start),
    # scale jittering S in [256, 512] with 224 crops and flips, mean subtraction only.
    "paper": {
        "model": "vgg11", "size": 224, "dropout": 0.5, "init": "normal",
        "epochs": 74, "batch_size": 256, "optimizer": "sgd", "lr": 0.01, "momentum": 0.9,
        "weight_decay": 5e-4, "schedule": "plateau", "plateau_patience": 2, "max_lr_drops": 3,
        "lr_decay": 0.1, "scale_jitter": "256,512", "flip": True, "normalize": "mean",
        "precision": "fp32",
    },
    # Ours, for time to accuracy on a CPU: batch norm, a global-average-pooling head (0.58M parameters
    # instead of 1.77M: a faster step, and more accurate in a short run), one-cycle with a tail (the
    # anneal reaches 2% of the peak lr at epoch 6 of 10, then falls linearly to zero: the net is at 93%
    # by epoch 6 and gains 0.2-0.4 points after it), label smoothing, flips (no random crops: in a
    # schedule this short they cost accuracy), the paper's test-time flip, bf16 autocast and
    # channels_last. Tuned on 2 CPU cores (BENCHMARKS.md section 6): 93.0-93.5% at epoch 6, 93.3-93.7%
    # after 10 (six seed runs, mean 93.5%). The GAP head has no dropout; nets with FC layers (--head fc,
    # AlexNet) keep theirs.
    "fast": {
        "model": "vgg11_bn", "width": 0.25, "size": 32, "head": "gap", "init": "kaiming",
        "epochs": 10, "batch_size": 256, "optimizer": "sgd", "lr": 0.4, "momentum": 0.9,
        "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle", "onecycle_pct": 0.25,
        "onecycle_tail_pct": 0.4, "onecycle_tail_lr": 0.02,
        "label_smoothing": 0.1, "crop_padding": 0, "flip": True, "test_flip": True,
        "normalize": "meanstd", "precision": "bf16", "channels_last": True,
    },
    # Fine-tuning from ImageNet weights (torchvision's transfer-learning practice): the weights' own
    # preprocessing (size 224, test images resized to 256 and centre-cropped, their mean/std), random-resized
    # crops and flips, SGD with momentum at lr 1e-3 for the body and 10x for the new class layer, cosine
    # decay, 5 epochs, bf16 autocast and channels_last. --freeze features or body for a probe.
    "finetune": {
        "model": "vgg16", "weights": "imagenet", "dropout": 0.5, "epochs": 5, "batch_size": 32,
        "optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 1e-4, "head_lr_mult": 10.0,
        "schedule": "cosine", "label_smoothing": 0.1, "random_resized_crop": "0.08,1", "flip": True,
        "test_flip": False, "normalize": "meanstd", "precision": "bf16", "channels_last": True,
    },
}
DEFAULT_RECIPE = "fast"

# Fields that may differ when a run is resumed: they change how it is shown or run, not what it computes.
RESUME_MAY_CHANGE = {
    "keep_memory", "progress", "tensorboard", "plots", "threads", "device", "max_minutes", "stop_at_accuracy",
    "checkpoint_every", "checkpoint_seconds", "eval_every", "data_dir", "epochs",
}


# --- parsing values ----------------------------------------------------------------------------------

def base_type(name: str) -> type:
    """The non-None type of a field: `int | None` -> int."""
    tp = _TYPES[name]
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    return args[0] if args else tp


_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")
_KINDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def is_optional(name: str) -> bool:
    return type(None) in typing.get_args(_TYPES[name])


def convert(name: str, value: Any) -> Any:
    """Check and convert one value (from TOML, CLI text or Python) to the field's type."""
    if name not in FIELDS:
        raise ClassicNetsError(_unknown_key_message(name))
    tp = base_type(name)
    if name == "batch_size" and value == "auto":
        return "auto"  # sugar, turned into auto_batch=True by resolve_config
    if value is None or (isinstance(value, str) and value.lower() == "none" and is_optional(name)):
        if is_optional(name):
            return None
        raise ClassicNetsError(f"{name} cannot be none; give {_KINDS[tp]}")
    try:
        if tp is bool:
            if isinstance(value, bool):
                out = value
            elif isinstance(value, str) and value.lower() in _TRUE + _FALSE:
                out = value.lower() in _TRUE
            else:
                raise ValueError
        elif tp is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            out = int(value)
        elif tp is float:
            if isinstance(value, bool):
                raise ValueError
            out = float(value)
            if not math.isfinite(out):
                raise ValueError
        else:
            if not isinstance(value, str):
                raise ValueError
            out = value
    except (TypeError, ValueError):
        raise ClassicNetsError(f"{name} must be {_KINDS[tp]}; got {value!r}") from None
    choices = FIELDS[name].metadata.get("choices")
    if choices and out not in choices:
        raise ClassicNetsError(f"{name} must be one of {', '.join(choices)}; got {out!r}")
    return out


def _unknown_key_message(name: str) -> str:
    close = difflib.get_close_matches(name, list(FIELDS), n=1)
    hint = f"did you mean {close[0]!r}?" if close else "see `classicnets train --help` for the keys"
    return f"unknown config key {name!r}; {hint}"


def parse_bytes(text: str) -> int:
    """'4GiB' / '512MB' / '1.5G' / '1000000' -> bytes."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(i?)b?\s*", text.lower())
    if not m:
        raise ClassicNetsError(f"memory size {text!r} is not understood; write e.g. 4GiB, 512MiB or 2GB")
    number, prefix, binary = m.groups()
    base = 1024 if binary or not prefix else 1000
    return int(float(number) * base ** " kmgt".index(prefix or " "))


def _range(name: str, text: str, cast: type, form: str) -> tuple:
    """'LO,HI' -> (cast(LO), cast(HI)), or one line saying the form `name` takes."""
    try:
        lo, hi = (cast(v) for v in text.split(","))
    except ValueError:
        raise ClassicNetsError(f"{name} must be {form}; got {text!r}") from None
    return lo, hi


def parse_scale_jitter(text: str | None) -> tuple[int, int] | None:
    if text is None:
        return None
    lo, hi = _range("scale_jitter", text, int, "'SMIN,SMAX', e.g. 256,512")
    if not 0 < lo <= hi:
        raise ClassicNetsError(f"scale_jitter needs 0 < SMIN <= SMAX; got {text!r}")
    return lo, hi


def parse_random_resized_crop(text: str | None) -> tuple[float, float] | None:
    """'0.08,1' -> (0.08, 1.0): the range of the crops' area fraction."""
    if text is None:
        return None
    lo, hi = _range("random_resized_crop", text, float, "'MIN,MAX' area fractions, e.g. 0.08,1")
    if not 0 < lo <= hi <= 1:
        raise ClassicNetsError(f"random_resized_crop needs 0 < MIN <= MAX <= 1; got {text!r}")
    return lo, hi


# --- combining layers --------------------------------------------------------------------------------

def load_toml(path: str | Path) -> dict[str, Any]:
    """The settings of a --config file; anything wrong with the file is one ClassicNetsError naming it."""
    path = Path(path)
    if path.is_dir():
        raise ClassicNetsError(f"config file {path} is a folder: pass a TOML file (--print-config writes one)")
    if path.exists() and not path.is_file():
        raise ClassicNetsError(f"config file {path} is not a regular file (a device or pipe): pass a TOML file")
    if path.is_file() and path.stat().st_size > MAX_CONFIG_BYTES:
        raise ClassicNetsError(f"config file {path} is {path.stat().st_size:,} bytes, far more than a config "
                               f"({MAX_CONFIG_BYTES:,} at most): pass a TOML file (--print-config writes one)")
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise ClassicNetsError(f"config file {path} does not exist") from None
    except OSError as e:
        reason = os.strerror(e.errno).lower() if e.errno else type(e).__name__
        raise ClassicNetsError(f"cannot read config file {path} ({reason}): check the path") from None
    except UnicodeDecodeError as e:
        raise ClassicNetsError(f"config file {path} is not text (byte {e.start} is not UTF-8): pass a TOML "
                               "file (--print-config writes one)") from None
    except tomllib.TOMLDecodeError as e:
        raise ClassicNetsError(f"config file {path} is not valid TOML: {' '.join(str(e).split())}") from None
    except RecursionError:
        raise ClassicNetsError(f"config file {path} nests too deeply to read; write flat keys "
                               "(--print-config writes one)") from None
    if "train" in raw and isinstance(raw["train"], dict) and len(raw) == 1:
        raw = raw["train"]  # a [train] table is accepted too
    for key, value in raw.items():
        if isinstance(value, dict):
            raise ClassicNetsError(f"config file {path}: [{key}] tables are not used; write flat keys")
        if key not in FIELDS:
            raise ClassicNetsError(f"config file {path}: {_unknown_key_message(key)}")
    try:
        return {k: convert(k, v) for k, v in raw.items()}
    except ClassicNetsError as e:
        raise ClassicNetsError(f"config file {path}: {e}") from None


def resolve_config(overrides: dict[str, Any] | None = None, *, config_file: str | Path | None = None,
                   **keywords: Any) -> TrainConfig:
    """Defaults < recipe < TOML file < overrides/keywords; returns a validated TrainConfig.

    `batch_size="auto"` at any layer keeps the batch size of the layers below and sets auto_batch.
    """
    explicit = {k: convert(k, v) for k, v in {**(overrides or {}), **keywords}.items()}
    from_file = load_toml(config_file) if config_file else {}
    recipe = explicit.get("recipe") or from_file.get("recipe") or DEFAULT_RECIPE
    if recipe not in RECIPES:
        raise ClassicNetsError(f"unknown recipe {recipe!r}; choose one of {', '.join(RECIPES)}")
    values = TrainConfig().to_dict()
    for layer in (RECIPES[recipe], from_file, explicit):
        merge(values, layer)
    values["recipe"] = recipe
    config = TrainConfig(**values)
    validate(config)
    return config


def merge(values: dict[str, Any], layer: dict[str, Any]) -> dict[str, Any]:
    """Apply one layer of overrides in place; batch_size="auto" keeps the size below and sets auto_batch."""
    for key, value in layer.items():
        if key == "batch_size" and value == "auto":
            values["auto_batch"] = True
        else:
            values[key] = value
    return values


# Numeric options' ranges: (key, lowest, highest, lowest allowed, highest allowed); None values are unset.
RANGES = (
    ("seed", 0, 2**32 - 1, True, True),  # what torch, numpy and Python's generators take
    ("width", 0, 64, False, True),
    ("dropout", 0, 1, True, False),
    ("label_smoothing", 0, 1, True, False),
    ("momentum", 0, 1, True, False),
    ("weight_decay", 0, math.inf, True, True),
    ("grad_clip", 0, math.inf, False, True),
    ("onecycle_pct", 0, 1, False, False),
    ("onecycle_tail_pct", 0, 1, True, False),
    ("onecycle_tail_lr", 0, 1, False, True),
    ("warmup_epochs", 0, math.inf, True, True),
    ("lr_decay", 0, 1, False, True),
    ("lr_step_epochs", 1, math.inf, True, True),
    ("plateau_patience", 1, math.inf, True, True),
    ("max_lr_drops", 0, math.inf, True, True),
    ("crop_padding", 0, math.inf, True, True),
    ("fc_width", 1, 1 << 20, True, True),
    ("head_lr_mult", 0, math.inf, False, True),
    ("stop_at_accuracy", 0, 1, False, True),
    ("max_minutes", 0, math.inf, False, True),
    ("checkpoint_every", 0, math.inf, True, True),
    ("checkpoint_seconds", 0, math.inf, True, True),
)
NAME_MAX = 255  # bytes in one file name on the usual file systems
MAX_CONFIG_BYTES = 2**20  # a config is a few dozen lines


def _interval(low: float, high: float, low_ok: bool, high_ok: bool) -> str:
    if high == math.inf:
        return f"at least {low}" if low_ok else f"more than {low}"
    return f"in {'[' if low_ok else '('}{low}, {high}{']' if high_ok else ')'}"


def check_run_name(name: str | None, run_dir: str | None) -> None:
    """A run name is one file name; a run dir a path whose every part is a possible file name."""
    if name is not None:
        if not name.strip() or name in (".", "..") or "/" in name or any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
            raise ClassicNetsError(f"name must be a folder name without '/' or control characters, e.g. vgg11-run1; "
                                   f"got {name!r}")
        if len(os.fsencode(name)) > NAME_MAX:
            raise ClassicNetsError(f"name is {len(os.fsencode(name))} bytes long, over the {NAME_MAX} a file name "
                                   "may have: pass a shorter --name")
    if run_dir is not None:
        if not run_dir.strip() or any(ord(ch) < 32 or ord(ch) == 127 for ch in run_dir):
            raise ClassicNetsError(f"run_dir must be a folder path, e.g. runs/first; got {run_dir!r}")
        longest = max((len(os.fsencode(part)) for part in Path(run_dir).parts), default=0)
        if longest > NAME_MAX:
            raise ClassicNetsError(f"run_dir has a part of {longest} bytes, over the {NAME_MAX} a file name may "
                                   "have: pass a shorter --run-dir")


def validate(c: TrainConfig) -> None:
    """Range checks that need no data or model; one clear message each."""
    for key, value in c.to_dict().items():
        convert(key, value)  # types and choices, also for configs built by hand
    positive = ["epochs", "batch_size", "accum_steps", "eval_every", "lr"]
    for key in positive:
        if getattr(c, key) <= 0:
            raise ClassicNetsError(f"{key} must be positive; got {getattr(c, key)}")
    for key in ("size", "eval_batch_size", "limit_train", "limit_test", "threads"):
        if getattr(c, key) is not None and getattr(c, key) <= 0:
            raise ClassicNetsError(f"{key} must be positive; got {getattr(c, key)}")
    for key, low, high, low_ok, high_ok in RANGES:
        value = getattr(c, key)
        if value is not None and not ((low <= value if low_ok else low < value)
                                      and (value <= high if high_ok else value < high)):
            raise ClassicNetsError(f"{key} must be {_interval(low, high, low_ok, high_ok)}; got {value}")
    check_run_name(c.name, c.run_dir)
    if c.nesterov and (c.optimizer != "sgd" or c.momentum <= 0):
        raise ClassicNetsError("nesterov needs --optimizer sgd with --momentum > 0")
    if c.onecycle_pct + c.onecycle_tail_pct >= 1:
        raise ClassicNetsError(f"onecycle_pct + onecycle_tail_pct must be below 1 (the rise and the tail leave "
                               f"no anneal between them); got {c.onecycle_pct:g} + {c.onecycle_tail_pct:g}")
    if c.test_flip and not c.flip:
        # measured: a net never shown mirrors fell from 93.3% to 89.0% when scored with them (BENCHMARKS.md)
        raise ClassicNetsError("test_flip averages each test image with its mirror, which a net trained "
                               "without --flip has never seen: pass --no-test-flip too (or keep --flip)")
    if c.max_memory is not None:
        parse_bytes(c.max_memory)
    parse_scale_jitter(c.scale_jitter)
    if parse_random_resized_crop(c.random_resized_crop) and (c.scale_jitter or c.crop_padding):
        raise ClassicNetsError("random_resized_crop picks the crops itself: drop --scale-jitter and --crop-padding "
                               "(or --random-resized-crop none)")
    if c.freeze != "none" and not (c.weights or c.warm_start):
        raise ClassicNetsError(f"freeze {c.freeze} keeps trained values, but this run starts from random weights: "
                               "pass --weights imagenet (or a file), or drop --freeze")
    if c.weights and c.warm_start:
        raise ClassicNetsError("weights and warm_start both initialise the net: pass one of them")
    if c.device != "auto" and not re.fullmatch(r"cpu|cuda(:\d+)?|mps", c.device):
        raise ClassicNetsError(f"device must be auto, cpu, cuda or cuda:N; got {c.device!r}")


def with_overrides(config: TrainConfig, overrides: dict[str, Any]) -> TrainConfig:
    """A config taken as it is, with some values changed (checked like flags)."""
    values = merge(config.to_dict(), {k: convert(k, v) for k, v in overrides.items()})
    new = TrainConfig(**values)
    validate(new)
    return new


def resume_config(saved: dict[str, Any], overrides: dict[str, Any], run_dir: str | Path) -> TrainConfig:
    """The config of a run being resumed: the values saved in its checkpoint, changed only where
    `overrides` change how it runs, not what it computes (RESUME_MAY_CHANGE); anything else is refused."""
    saved = {k: v for k, v in saved.items() if k in FIELDS}
    explicit = {k: convert(k, v) for k, v in overrides.items()}
    resume_conflicts(saved, explicit)
    values = merge({**TrainConfig().to_dict(), **saved}, explicit)
    values["run_dir"] = str(run_dir)
    config = TrainConfig(**values)
    validate(config)
    return config


def resume_conflicts(saved: dict[str, Any], explicit: dict[str, Any]) -> None:
    """Refuse to resume with settings that change what the run computes."""
    for key, value in explicit.items():
        if key in saved and saved[key] != value and key not in RESUME_MAY_CHANGE:
            raise ClassicNetsError(
                f"cannot resume with {key}={value!r}: the run was trained with {key}={saved[key]!r}; "
                "drop the flag or start a new run (--name)"
            )
    shaped_by_length = saved["schedule"] in ("onecycle", "cosine")
    if shaped_by_length and explicit.get("epochs", saved["epochs"]) != saved["epochs"]:
        raise ClassicNetsError(
            f"cannot change epochs when resuming a {saved['schedule']} schedule: its shape depends on the "
            "total; start a new run instead"
        )


# --- writing -----------------------------------------------------------------------------------------

def to_toml(config: TrainConfig) -> str:
    """Flat TOML of the resolved config; None is written as "none" so it round-trips."""
    lines = ["# classicnets training config (resolved); reuse with: classicnets train --config FILE"]
    for key, value in config.to_dict().items():
        if value is None:
            value = "none"
        if isinstance(value, bool):
            text = "true" if value else "false"
        elif isinstance(value, (int, float)):
            text = repr(value)
        else:
            text = json.dumps(value)  # a JSON string is a valid TOML basic string
        lines.append(f"{key} = {text}")
    return "\n".join(lines) + "\n"
