"""Weights: strict loading, torchvision's ImageNet weights through torch's hub cache, and loading weights
into a net of another shape with a report of which layers came from them.

    net = create_model("vgg16", weights="imagenet", num_classes=10)   # body from ImageNet, new class layer

What torchvision publishes is read off its own weights enums (`torchvision.models.get_model_weights`):
URL, SHA-256 prefix, categories, preprocessing and accuracy are never copied here. A download goes
through `torch.hub.download_url_to_file`, which checks the hash and renames a finished file into torch's
hub cache (`$TORCH_HOME/hub/checkpoints`), so a cut download leaves nothing behind. A cached file is not
hashed again on every load (torch does not either); it is read with `weights_only=True` and checked
tensor by tensor against the net, so a damaged or foreign file is one line that says what to do.

Shape rules of `load_into` (what a user of timm or torchvision expects):
  * the class layer(s) (`class_layer_names`): a different number of classes keeps everything else and
    starts them afresh; weights without values there (NaN, torchvision's VGG-16 "features" file) likewise;
  * the first conv with other input channels: timm's rule, kernels summed over the weights' RGB for 1
    channel, else repeated and scaled by 3 / channels;
  * anything else that differs (width, an input size that changes the FC layers, another net) is refused
    in one line with the fix; parts the net was built without (GoogLeNet's aux heads) are skipped, named.
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import urllib.error
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import torch
import torchvision.models
from torch import nn
from torchvision.models import WeightsEnum

from classicnets.errors import ClassicNetsError
from classicnets.files import Expected, first_line, load_safetensors, read_torch_file

# Our short names for torchvision's enum members ("imagenet" is the enum's DEFAULT, as timm's "pretrained").
TAGS = {"imagenet": "DEFAULT"}
# Set to 1 to never download: a missing file is then the one-line error right away (CI, air-gapped hosts).
OFFLINE_ENV = "CLASSICNETS_OFFLINE"
# torch.hub's rule: a file name like vgg16-397923af.pth carries the first hex digits of its SHA-256.
HASH_IN_NAME = re.compile(r"-([a-f0-9]+)\.")
# "VGG16_Weights.IMAGENET1K_V1": an enum member by its full name (not a file with suffix ".IMAGENET1K_V1").
ENUM_MEMBER_NAME = re.compile(r"\w+_Weights\.\w+")
# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# torchvision's GoogLeNet with its ImageNet weights sets transform_input=True: it maps ImageNet-normalised
# input x to x * std / 0.5 + (mean - 0.5) / 0.5, i.e. (pixel - 0.5) / 0.5. Our googlenet_bn has no such
# step, so those weights come with mean = std = 0.5 instead: the same numbers reach the first conv.
TRANSFORM_INPUT = {"googlenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}
WEIGHTS_FILE = Expected(
    what="weights file",
    instead="pass a torchvision state dict (.pth), a classicnets checkpoint (.pt) or a .safetensors file",
    renew="delete it and fetch or copy it again",
    unsafe="only load state dicts and classicnets checkpoints")


def unwrap_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict without the prefixes DistributedDataParallel ("module.") and torch.compile
    ("_orig_mod.") add to every key, so it loads into the plain net."""
    state = dict(state_dict)
    for prefix in WRAPPER_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state_dict strictly; on any mismatch raise ClassicNetsError naming the first bad key.

    Keys saved from a DDP- or torch.compile-wrapped model ("module." / "_orig_mod." prefixes) are
    unwrapped first. Returns the model. (`load_into` is the lenient form that starts new layers.)
    """
    state = unwrap_state_dict(state_dict)
    name = getattr(model, "name", type(model).__name__)
    fix = "build the model with the options it was trained with (num_classes, in_channels, width, input_size)"
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            hint = "build it with aux_logits=False" if key.startswith("aux") else fix
            raise ClassicNetsError(f"the weights lack {key!r}, which {name} has: {hint}")
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise ClassicNetsError(
                f"the weights' {key!r} has shape {tuple(state[key].shape)} but {name}'s has "
                f"{tuple(tensor.shape)}: {fix}"
            )
    for key in state:
        if key not in expected:
            hint = "build it with aux_logits=True" if key.startswith("aux") else fix
            raise ClassicNetsError(f"the weights have {key!r}, which {name} lacks: {hint}")
    model.load_state_dict(state, strict=True)
    return model


# --- torchvision's published weights ----------------------------------------------------------------------

@dataclass(frozen=True)
class TorchvisionWeights:
    """One member of a torchvision weights enum, as our net `model` uses it."""

    model: str  # our net's name
    torchvision: str  # torchvision's builder with the same state_dict
    enum: WeightsEnum

    @property
    def name(self) -> str:  # "VGG16_Weights.IMAGENET1K_V1"
        return f"{type(self.enum).__name__}.{self.enum.name}"

    @property
    def url(self) -> str:
        return self.enum.url

    @property
    def file_name(self) -> str:
        return os.path.basename(self.enum.url)

    @property
    def hash_prefix(self) -> str | None:
        found = HASH_IN_NAME.search(self.file_name)
        return found.group(1) if found else None

    def cfg(self) -> dict[str, Any]:
        """What the weights say about feeding the net: preprocessing, categories, accuracy (timm's keys)."""
        preset = self.enum.transforms()
        crop, resize = int(preset.crop_size[0]), int(preset.resize_size[0])
        mean, std = tuple(preset.mean), tuple(preset.std)
        mean, std = TRANSFORM_INPUT.get(self.torchvision, (mean, std))
        metrics = self.enum.meta.get("_metrics", {}).get("ImageNet-1K", {})
        return {"weights": self.name, "weights_url": self.url, "input_size": (3, crop, crop), "resize": resize,
                "crop_pct": crop / resize, "mean": mean, "std": std,
                "interpolation": preset.interpolation.value,
                "categories": list(self.enum.meta.get("categories") or []),  # None: VGG-16 "features"
                "imagenet_top1": metrics.get("acc@1"), "imagenet_top5": metrics.get("acc@5")}


def published(model: str, torchvision_name: str | None) -> dict[str, WeightsEnum]:
    """torchvision's weights for our net `model` (its twin `torchvision_name`), by member name."""
    if torchvision_name is None:
        return {}
    return {member.name: member for member in torchvision.models.get_model_weights(torchvision_name)}


def is_weights_name(weights: object) -> bool:
    """True for what names published weights ("imagenet", "IMAGENET1K_V1", "VGG16_Weights.IMAGENET1K_V1", an
    enum member), False for what names a file (a path with a folder or a suffix, or an existing file)."""
    if isinstance(weights, WeightsEnum):
        return True
    if not isinstance(weights, str):
        return False
    if ENUM_MEMBER_NAME.fullmatch(weights) and not Path(weights).exists():
        return True
    return not (os.sep in weights or "/" in weights or Path(weights).suffix or Path(weights).exists())


def torchvision_weights(model: str, torchvision_name: str | None, weights: object) -> TorchvisionWeights:
    """The published weights `weights` names for our net, or one line listing what there is."""
    members = published(model, torchvision_name)
    if not members:
        raise ClassicNetsError(
            f"{model} has no published ImageNet weights (torchvision publishes them for the VGG nets A, B, D, E "
            "with and without BN, alexnet and googlenet_bn): train it from scratch, or pass a weights file")
    if isinstance(weights, WeightsEnum):
        key = weights.name
        if weights not in members.values():
            raise ClassicNetsError(f"{weights} are not {model}'s weights: pass one of "
                                   f"{', '.join(f'{type(m).__name__}.{m.name}' for m in members.values())}")
    else:
        key = TAGS.get(weights.lower(), weights).split(".")[-1]
    enum_class = type(next(iter(members.values())))
    if isinstance(weights, str) and "." in weights and weights.split(".")[0] != enum_class.__name__:
        raise ClassicNetsError(f"{weights} are not {model}'s weights: pass imagenet or one of "
                               f"{', '.join(f'{enum_class.__name__}.{m}' for m in members)}")
    if key == "DEFAULT":
        key = enum_class.DEFAULT.name
    if key not in members:
        raise ClassicNetsError(f"unknown weights {weights!r} for {model}: pass imagenet, "
                               f"{', '.join(members)}, or the path of a weights file")
    return TorchvisionWeights(model, torchvision_name, members[key])


def imagenet_weights_info(model: str, torchvision_name: str | None) -> dict[str, Any] | None:
    """What `classicnets list --pretrained` shows of a net's default ImageNet weights, without reading them:
    their name, torchvision's top-1/top-5, the file and whether torch's hub cache holds it."""
    if not published(model, torchvision_name):
        return None
    found = torchvision_weights(model, torchvision_name, "imagenet")
    cfg = found.cfg()
    return {"weights": found.name, "imagenet_top1": cfg["imagenet_top1"], "imagenet_top5": cfg["imagenet_top5"],
            "file": str(hub_file(found)), "cached": hub_file(found).is_file()}


def hub_file(weights: TorchvisionWeights) -> Path:
    """Where torch's hub cache keeps the file (`$TORCH_HOME/hub/checkpoints/NAME`, as torchvision puts it)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / weights.file_name


def fetch(weights: TorchvisionWeights, *, progress: bool = True) -> Path:
    """The cached file, downloaded first (hash checked) unless it is there or CLASSICNETS_OFFLINE=1."""
    path = hub_file(weights)
    if path.is_file():
        return path
    put_it = f"download {weights.url} and put it at {path} (TORCH_HOME moves the cache)"
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        raise ClassicNetsError(f"{weights.model}'s ImageNet weights ({weights.file_name}) are not in torch's hub "
                               f"cache and {OFFLINE_ENV} is set: {put_it}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(weights.url, str(path), hash_prefix=weights.hash_prefix, progress=progress)
    except RuntimeError as e:
        if "invalid hash" not in str(e):
            raise
        raise ClassicNetsError(
            f"the download of {weights.url} does not match its SHA-256 prefix {weights.hash_prefix} (a damaged or "
            f"swapped file; nothing was kept): try again, or {put_it}") from None
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or first_line(e)
        raise ClassicNetsError(f"{weights.model}'s ImageNet weights are not in torch's hub cache ({path}) and "
                               f"downloading them failed ({reason}): {put_it}") from None
    return path


# --- reading a weights file ---------------------------------------------------------------------------------

@dataclass
class Weights:
    """Tensors to start a net from, where they came from, and what they say about feeding the net."""

    state: dict[str, torch.Tensor]
    source: str  # for messages: "imagenet (vgg16-397923af.pth)" or the file's path
    cfg: dict[str, Any] = field(default_factory=dict)  # mean, std, input_size, resize, categories, ...
    width: float | None = None  # the width they were trained at, when known (torchvision's: 1)
    options: dict[str, Any] = field(default_factory=dict)  # the net's build options, when the file says


def read_weights(path: str | os.PathLike) -> Weights:
    """A torchvision-style state dict (.pth), a classicnets checkpoint or a .safetensors file, as Weights."""
    path = Path(path)
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ClassicNetsError(f"weights file {path} {what}: {WEIGHTS_FILE.instead}")
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # safetensors: u64 header length, then a JSON object
        state, meta = load_safetensors(path)
        options = _options_of_export(meta)
        return Weights(_tensors_only(state, path), str(path), _cfg_of_export(meta), width=options.get("width"),
                       options=options)
    obj = read_torch_file(path, expected=WEIGHTS_FILE, mmap=True)
    if isinstance(obj, dict) and obj.get("format") == "classicnets.checkpoint":
        data = obj.get("data") if isinstance(obj.get("data"), dict) else {}
        kwargs = obj.get("model_kwargs") if isinstance(obj.get("model_kwargs"), dict) else {}
        return Weights(_tensors_only(obj.get("model"), path), str(path), _cfg_of_data(data, obj.get("model_name")),
                       width=kwargs.get("width", 1.0), options=dict(kwargs))
    if isinstance(obj, dict) and not _all_tensors(obj):  # {"state_dict": ...} as other trainers save it
        inner = [v for k, v in obj.items() if k in ("state_dict", "model", "model_state_dict") and isinstance(v, dict)]
        obj = inner[0] if inner else obj
    return Weights(_tensors_only(obj, path), str(path))


def _all_tensors(obj: dict) -> bool:
    return bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _tensors_only(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, dict) or not _all_tensors(obj):
        raise ClassicNetsError(f"{path} holds no state dict (a map of names to tensors): {WEIGHTS_FILE.instead}")
    return unwrap_state_dict(obj)


def _cfg_of_data(data: dict, architecture: Any) -> dict[str, Any]:
    """What a classicnets checkpoint's data record says about feeding the net (see training.checkpoint)."""
    cfg: dict[str, Any] = {"architecture": architecture} if isinstance(architecture, str) else {}
    if isinstance(data.get("mean"), list):
        cfg["mean"] = tuple(float(v) for v in data["mean"])
    if isinstance(data.get("std"), list):
        cfg["std"] = tuple(float(v) for v in data["std"])
    size, channels = data.get("input_size"), data.get("in_channels")
    if isinstance(size, int) and isinstance(channels, int):
        cfg["input_size"] = (channels, size, size)
        resize = data.get("resize")
        cfg["resize"] = resize if isinstance(resize, int) else size
    if isinstance(data.get("classes"), list) and all(isinstance(c, str) for c in data["classes"]):
        cfg["categories"] = list(data["classes"])
    return cfg


def _options_of_export(meta: dict[str, str]) -> dict[str, Any]:
    """A classicnets export's build options (its "model_kwargs" metadata), else none."""
    try:
        options = json.loads(meta.get("model_kwargs", "{}")) if meta.get("format") == "classicnets.export" else {}
    except (TypeError, ValueError, RecursionError):
        return {}
    return options if isinstance(options, dict) else {}


def _cfg_of_export(meta: dict[str, str]) -> dict[str, Any]:
    """The same facts from a classicnets safetensors export's metadata (empty for anyone else's file)."""
    if meta.get("format") != "classicnets.export":
        return {}
    try:
        data = {key: json.loads(meta[key]) for key in ("mean", "std", "classes", "resize", "in_channels",
                                                        "input_size") if key in meta}
    except (TypeError, ValueError, RecursionError):
        return {}
    return _cfg_of_data(data, meta.get("model_name"))


@functools.cache
def imagenet_synsets() -> tuple[str, ...]:
    """The 1,000 WordNet ids of ImageNet-1k (ILSVRC 2012) in class-index order: sorted, which is the order
    torchvision's weights number their classes in (0 n01440764 tench ... 999 n15075141 toilet tissue)."""
    text = resources.files("classicnets.models").joinpath("imagenet_synsets.txt").read_text()
    return tuple(text.split())


def imagenet_indices(names: list[str]) -> list[int] | None:
    """Each name's ImageNet-1k class index when every name is an ImageNet-1k synset folder (n01440764...),
    as in an ImageNet-style val folder or Imagenette; else None."""
    index = {wnid: i for i, wnid in enumerate(imagenet_synsets())}
    return [index[n] for n in names] if names and all(n in index for n in names) else None


def resolve(model: str, torchvision_name: str | None, weights: object, *, progress: bool = True) -> Weights:
    """`weights` as create_model takes it (a published name or enum member, or a file path) -> Weights."""
    if isinstance(weights, Weights):
        return weights
    if not is_weights_name(weights):
        if not isinstance(weights, (str, os.PathLike)):
            raise ClassicNetsError(f"weights must be 'imagenet', a torchvision weights enum or a file path; "
                                   f"got {weights!r}")
        return read_weights(weights)
    published_weights = torchvision_weights(model, torchvision_name, weights)
    path = fetch(published_weights, progress=progress)
    found = read_weights(path)
    tag = "imagenet" if published_weights.enum is type(published_weights.enum).DEFAULT else published_weights.enum.name
    return Weights(found.state, f"{tag} ({path.name})", published_weights.cfg(), width=1.0)


# --- loading weights into a net of another shape -----------------------------------------------------------

@dataclass
class LoadReport:
    """Which of a net's layers came from the weights, which are new, and what was adapted or left out."""

    source: str
    loaded: list[str] = field(default_factory=list)  # module names
    new: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        text = f"weights: {len(self.loaded)} layers from {self.source}"
        if self.new:
            text += f"; new: {', '.join(self.new)}"
        return "; ".join([text, *self.notes])


def _module(key: str) -> str:
    return key.rsplit(".", 1)[0] if "." in key else key


def in_modules(key: str, modules: list[str]) -> bool:
    """Whether a parameter or state-dict key ("classifier.6.weight") belongs to one of `modules`."""
    return any(key == m or key.startswith(m + ".") for m in modules)


def per_channel(values, channels: int) -> tuple[float, ...]:
    """Per-channel statistics (mean or std) for a net of `channels`: a gray net takes the average of RGB
    values, other counts repeat them in turn."""
    values = tuple(float(v) for v in values)
    if len(values) == channels:
        return values
    return (sum(values) / len(values),) if channels == 1 else tuple(values[i % len(values)] for i in range(channels))


def adapt_input_conv(kernel: torch.Tensor, channels: int) -> torch.Tensor:
    """timm's rule for a first conv with other input channels: 1 channel sums the kernels over the
    weights' channels (a gray image then gives what the RGB net gave for R = G = B); other counts repeat
    the kernels and scale by their_channels / channels, so the response keeps its size."""
    theirs = kernel.shape[1]
    if channels == 1:
        return kernel.sum(dim=1, keepdim=True)
    repeats = math.ceil(channels / theirs)
    return kernel.repeat(1, repeats, 1, 1)[:, :channels] * (theirs / channels)


def load_into(model: nn.Module, weights: Weights, *, width: float | None = None) -> LoadReport:
    """Copy `weights` into `model` by the shape rules of this module's docstring, set the weights' facts
    as `model.weights_cfg` (so `pretrained_cfg` carries them), and report what came from where.
    `width`: the width the net was built at, refused up front when the weights are of another width."""
    name = getattr(model, "name", type(model).__name__)
    if width is not None and weights.width is not None and float(width) != float(weights.width):
        raise ClassicNetsError(
            f"{name} built at width {width:g} cannot take {weights.source}: those weights are for width "
            f"{weights.width:g} (every layer's channels differ); "
            + ("drop --width / pass width=1" if float(weights.width) == 1.0
               else f"pass --width {weights.width:g} / width={weights.width:g}"))
    state = unwrap_state_dict(weights.state)
    expected = model.state_dict()
    heads = model.class_layer_names() if hasattr(model, "class_layer_names") else []
    # A head of another structure (VGG's three FC layers into a GAP net) starts afresh as a whole.
    head_parts = model.head_names() if hasattr(model, "head_names") else heads
    head_keys = {k for k in expected if in_modules(k, head_parts) and not k.endswith("num_batches_tracked")}
    restructured = head_keys != {k for k in state
                                 if in_modules(k, head_parts) and not k.endswith("num_batches_tracked")}
    # A head without values (NaN: all of the classifier in torchvision's VGG-16 "features" file) likewise.
    valueless = any(in_modules(k, head_parts) and v.is_floating_point() and not bool(torch.isfinite(v).all())
                    for k, v in state.items())
    if restructured or valueless:
        heads = head_parts
    first_conv = next((n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    report = LoadReport(weights.source)
    merged, fresh, empty_head = {}, set(), False
    for key, mine in expected.items():
        theirs = state.get(key)
        if theirs is None:
            if key.endswith("num_batches_tracked"):  # absent from torch < 0.4.1 files: starts at 0
                merged[key] = mine
                continue
            if in_modules(key, heads):
                fresh.add(key)
                merged[key] = mine
                continue
            raise ClassicNetsError(f"the weights lack {key!r}, which {name} has: {_other_net(weights, name)}")
        if tuple(theirs.shape) == tuple(mine.shape):
            if in_modules(key, heads) and theirs.is_floating_point() and not bool(torch.isfinite(theirs).all()):
                fresh.add(key)  # a head without values (NaN): torchvision's VGG-16 "features" weights
                empty_head = True
                merged[key] = mine
                continue
            merged[key] = theirs.to(mine.dtype)
        elif key == f"{first_conv}.weight" and theirs.dim() == 4 and theirs.shape[0] == mine.shape[0] \
                and theirs.shape[2:] == mine.shape[2:]:
            merged[key] = adapt_input_conv(theirs.to(mine.dtype), mine.shape[1])
            how = "summed over" if mine.shape[1] == 1 else "repeated from"
            report.notes.append(f"{first_conv}: kernels {how} the weights' {theirs.shape[1]} input channels "
                                f"for {mine.shape[1]} (timm's rule)")
        elif in_modules(key, heads):
            fresh.add(key)
            merged[key] = mine
        else:
            raise ClassicNetsError(_shape_refusal(model, key, tuple(theirs.shape), tuple(mine.shape), weights))
    skipped = sorted({_module(k).split(".")[0] for k in state if k not in merged and not in_modules(k, heads)
                      and getattr(model, k.split(".")[0], None) is None} - {""})
    stray = [k for k in state if k not in merged and not in_modules(k, heads) and k.split(".")[0] not in skipped]
    if stray:
        raise ClassicNetsError(f"the weights have {stray[0]!r}, which {name} lacks: {_other_net(weights, name)}")
    model.load_state_dict(merged, strict=True)
    params = {_module(k) for k, _ in model.named_parameters()}
    report.loaded = sorted({_module(k) for k in merged if k not in fresh} & params, key=_order(model))
    report.new = sorted({_module(k) for k in fresh} & params, key=_order(model))
    if report.new:
        classes = getattr(model, "num_classes", None)
        said = ("the weights' head holds no values" if empty_head
                else f"{classes} classes" + (f", the weights have {len(weights.cfg['categories'])}"
                                              if weights.cfg.get("categories") else "")
                + ("; the weights' head has another structure" if restructured else ""))
        report.new[-1] += f" ({said})"
    if skipped:
        report.notes.append(f"not used: {', '.join(skipped)} (the net was built without them)")
    cfg = dict(weights.cfg)
    if fresh & {k for k in merged if in_modules(k, heads)} or not heads:
        cfg.pop("categories", None)  # a new head: the weights' class names no longer apply
    cfg.pop("architecture", None)
    channels = int(getattr(model, "in_channels", 3))
    if "input_size" in cfg:  # the channels are the net's (after adapting the first conv)
        cfg["input_size"] = (channels, *cfg["input_size"][1:])
    for key in ("mean", "std"):  # per channel of the net
        if cfg.get(key) is not None:
            cfg[key] = per_channel(cfg[key], channels)
    cfg["weights"] = cfg.get("weights", weights.source)
    cfg["weights_report"] = report.line()
    if hasattr(model, "weights_cfg"):
        model.weights_cfg = cfg
    return report


def _order(model: nn.Module):
    rank = {n: i for i, (n, _) in enumerate(model.named_modules())}
    return lambda module: rank.get(module.split(" ")[0], len(rank))


def _other_net(weights: Weights, name: str) -> str:
    arch = weights.cfg.get("architecture")
    if arch and arch != name:
        return f"they are {arch}'s weights; build {arch} (or pass weights saved from {name})"
    return f"they were saved from another net; pass weights saved from {name} (or its torchvision twin)"


def _shape_refusal(model: nn.Module, key: str, theirs: tuple, mine: tuple, weights: Weights) -> str:
    name = getattr(model, "name", type(model).__name__)
    said = f"the weights' {key!r} has shape {theirs} but {name}'s has {mine}"
    module = dict(model.named_modules()).get(_module(key))
    if isinstance(module, nn.Linear) and len(theirs) == 2 and theirs[0] == mine[0]:
        size = weights.cfg.get("input_size", (None, None))[1]
        at = f" --size {size} / input_size={size}" if size else " the weights' input size"
        return (f"{said}: its FC layers are sized to the final feature map, which depends on the input size; "
                f"build it at{at}, or with --head gap / head='gap' (the body loads, a new head starts)")
    if len(theirs) == len(mine) and len(mine) >= 1 and theirs[0] != mine[0]:
        return f"{said}: the layers have other widths; build {name} at the weights' width (width=1 for torchvision's)"
    return f"{said}: {_other_net(weights, name)}"
