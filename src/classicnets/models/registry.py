"""One registry for every net: names, builders, their options, and facts you can query without building.

Builders register themselves with `@register(...)` in their family's module; `create_model` checks the
name and the options before building, so a typo gets a suggestion instead of a TypeError.
"""

from __future__ import annotations

import difflib
import fnmatch
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models.features import FeatureMaps
from classicnets.models.weights import load_into, resolve

# Every family registers itself when `classicnets.models` is imported, which Python always does before
# this module (it lives in that package), so the registry below is complete by the time it is asked.

IMAGENET_SETTING = {"num_classes": 1000, "in_channels": 3, "input_size": 224}
FAMILY_ORDER = ("vgg", "alexnet", "nin", "googlenet", "lenet")  # list_models order


@dataclass(frozen=True)
class ModelEntry:
    name: str
    builder: Callable[..., nn.Module]
    family: str
    paper: str
    options: dict[str, object] = field(default_factory=dict)  # option name -> default
    torchvision: str | None = None  # the torchvision builder with the same state_dict, if any


_MODELS: dict[str, ModelEntry] = {}


def register(*, family: str, paper: str, options: Callable, torchvision: str | None = None,
             defaults: dict | None = None) -> Callable:
    """Register a builder under its function name. `options` is the family's factory: its keyword-only
    parameters are the options create_model accepts, with their defaults updated by `defaults` (the
    values this builder passes in instead)."""
    params = inspect.signature(options).parameters.values()
    opts = {p.name: p.default for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY}
    opts.update(defaults or {})

    def decorate(builder: Callable) -> Callable:
        name = builder.__name__
        _MODELS[name] = ModelEntry(name, builder, family, paper, opts, torchvision)
        return builder

    return decorate


def _normalise(name: str) -> str:
    return str(name).strip().lower().replace("-", "_")


def get_entry(name: str) -> ModelEntry:
    """The registry entry for `name`, or a ClassicNetsError suggesting close names."""
    key = _normalise(name)
    if key in _MODELS:
        return _MODELS[key]
    close = difflib.get_close_matches(key, list(_MODELS), n=3, cutoff=0.7)
    hint = f"did you mean {', '.join(close)}?" if close else f"known models: {', '.join(list_models())}"
    raise ClassicNetsError(f"unknown model {name!r}; {hint} (classicnets list shows all)")


def list_models(filter: str | Sequence[str] = "", pretrained: bool = False,
                exclude_filters: str | Sequence[str] = ()) -> list[str]:
    """Registered nets, grouped by family in the order of the papers; timm's call.

    `filter`: shell-style patterns ("vgg1*", ["alexnet*", "nin"]); `pretrained=True`: only the nets
    torchvision publishes ImageNet weights for; `exclude_filters`: patterns to drop.
    """
    rank = {family: i for i, family in enumerate(FAMILY_ORDER)}
    names = sorted(_MODELS, key=lambda n: rank.get(_MODELS[n].family, len(rank)))  # stable: keeps file order
    include = [filter] if isinstance(filter, str) else list(filter)
    exclude = [exclude_filters] if isinstance(exclude_filters, str) else list(exclude_filters)
    if any(include):
        names = [n for n in names if any(fnmatch.fnmatchcase(n, _normalise(p)) for p in include if p)]
    names = [n for n in names if not any(fnmatch.fnmatchcase(n, _normalise(p)) for p in exclude)]
    if pretrained:
        names = [n for n in names if _MODELS[n].torchvision is not None]
    return names


# timm's and torchvision's names for our options, so code written for them builds our nets.
ALIASES = {"in_chans": "in_channels", "drop_rate": "dropout"}


def create_model(name: str, pretrained: bool = False, *, weights: object = None, features_only: bool = False,
                 out_indices: Sequence[int] | None = None, **kwargs) -> nn.Module:
    """Build a registered net: `create_model("vgg16", num_classes=10, in_channels=1, width=0.25)`.

    Options are the builder's (num_classes, in_channels, input_size, width, dropout, init, and per family
    head / aux_logits / activation); an unknown option is refused by name. timm's keywords work too:
    `in_chans`, `drop_rate`, `features_only=True` (a FeatureMaps net returning the stage-end maps, with
    `out_indices`). `pretrained=True` or `weights="imagenet"` (or a torchvision enum member, or the path of a
    state dict / classicnets checkpoint / safetensors file) starts from those weights by the shape rules of
    `models.weights` (another num_classes: a new class layer); `weights_report` then says what came from
    where, and `pretrained_cfg` carries the weights' mean, std, input size and categories.
    """
    entry = get_entry(name)
    for alias, option in ALIASES.items():
        if alias in kwargs:
            if option in kwargs:
                raise ClassicNetsError(f"{entry.name}: pass {option} or its alias {alias}, not both")
            kwargs[option] = kwargs.pop(alias)
    for key in kwargs:
        if key not in entry.options:
            close = difflib.get_close_matches(key, list(entry.options), n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ClassicNetsError(
                f"{entry.name} has no option {key!r}{hint}; its options are {', '.join(entry.options)}"
            )
    if pretrained and weights is not None and weights is not True:
        raise ClassicNetsError(f"{entry.name}: pass pretrained=True or weights=..., not both")
    if weights is True or (pretrained and weights is None):
        weights = "imagenet"
    if out_indices is not None and not features_only:
        raise ClassicNetsError(f"{entry.name}: out_indices picks feature maps; pass features_only=True too")
    found = None if weights is None else resolve(entry.name, entry.torchvision, weights)
    model = entry.builder(**kwargs)
    if found is not None:
        width = kwargs.get("width", entry.options.get("width", 1.0))
        model.weights_report = load_into(model, found, width=width)
    return FeatureMaps(model, out_indices) if features_only else model


def min_input_size(name: str, **options) -> int:
    """The smallest input the net takes when built with these options (VGG's ceil_mode lowers it), found
    by building it on the meta device at its default input size."""
    with torch.device("meta"):
        return create_model(name, **options).min_input_size


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def model_info(name: str) -> dict:
    """Facts about a net without building it for real (it is built on the meta device: no memory, no time).

    Keys: name, family, paper, description, torchvision (the torchvision twin or None), imagenet_params
    (3 channels, 1000 classes, 224x224), params and min_input_size at the builder's defaults, options.
    """
    return dict(_info(get_entry(name).name))


@functools.cache
def _info(name: str) -> dict:
    entry = _MODELS[name]
    with torch.device("meta"):
        imagenet = entry.builder(**IMAGENET_SETTING)
        default = entry.builder()
    doc = inspect.getdoc(entry.builder) or ""
    return {
        "name": entry.name,
        "family": entry.family,
        "paper": entry.paper,
        "description": " ".join(doc.split("\n\n")[0].split()),  # the docstring's first paragraph
        "torchvision": entry.torchvision,
        "imagenet_params": count_params(imagenet),
        "params": count_params(default),
        "min_input_size": default.min_input_size,
        "options": dict(entry.options),
    }
