"""Feature maps out of any classicnets net, by name: torchvision's feature extraction with our names.

`feature_extractor(net, ["relu1_2", "relu4_3"])` is the perceptual-loss use of VGG: a module that returns
{name: map} and computes nothing past the last map asked for. Names are the net's own tap names (VGG:
conv1_1 ... relu5_3 / relu5_4, pool1 ... pool5, the literature's) or module names ("features.22",
"inception4e"). `FeatureMaps` is timm's `features_only`: the stage-end maps of `feature_info`, as a list.
Both are torch.fx graphs made by torchvision's `create_feature_extractor`, so the nets' input check stays
in them.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from classicnets.errors import ClassicNetsError
from classicnets.models.layers import ClassicNet, FeatureInfo


def tap_names(model: nn.Module) -> dict[str, str]:
    """The net's named taps -> module names (empty for nets without conventional names)."""
    return dict(model.tap_names()) if hasattr(model, "tap_names") else {}


def resolve_layers(model: nn.Module, layers: Sequence[str] | str) -> dict[str, str]:
    """{module name: the name asked for} for create_feature_extractor; an unknown name is one line with the
    close names and where to see them all."""
    if isinstance(layers, str):
        layers = [layers]
    if not layers:
        raise ClassicNetsError("name at least one layer to extract, e.g. ['relu1_2', 'relu4_3']")
    taps = tap_names(model)
    modules = {name for name, _ in model.named_modules() if name}
    resolved: dict[str, str] = {}
    for layer in layers:
        target = taps.get(layer, layer)
        if target not in modules:
            known = [*taps, *sorted(modules)]
            close = difflib.get_close_matches(layer, known, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else "see tap_names(model) and model.named_modules()"
            raise ClassicNetsError(f"{getattr(model, 'name', type(model).__name__)} has no layer {layer!r}: {hint}")
        if target in resolved:
            raise ClassicNetsError(f"{layer!r} and {resolved[target]!r} are the same layer ({target}): ask once")
        resolved[target] = layer
    return resolved


def feature_extractor(model: nn.Module, layers: Sequence[str] | str) -> nn.Module:
    """A module whose forward returns {name: feature map} for `layers`, in the order asked.

    It shares the net's parameters (freeze them yourself for a perceptual loss: `requires_grad_(False)`)
    and keeps its train/eval switch (BN and dropout behave as in the net)."""
    return create_feature_extractor(model, return_nodes=resolve_layers(model, layers))


class FeatureMaps(nn.Module):
    """timm's `features_only` net: forward returns the stage-end maps as a list, described by
    `feature_info` (channels, reduction, module of each)."""

    def __init__(self, model: ClassicNet, out_indices: Sequence[int] | None = None) -> None:
        super().__init__()
        info = model.feature_info
        if out_indices is None:
            out_indices = range(len(info))
        picked = []
        for i in out_indices:
            if not isinstance(i, int) or isinstance(i, bool) or not -len(info) <= i < len(info):
                raise ClassicNetsError(f"{model.name} has {len(info)} feature maps (indices 0-{len(info) - 1} "
                                       f"or negative from the end); got out_indices={tuple(out_indices)!r}")
            picked.append(i % len(info))
        if not picked or len(set(picked)) != len(picked):
            raise ClassicNetsError(f"out_indices must name each feature map at most once and at least one; "
                                   f"got {tuple(out_indices)!r}")
        self.feature_info = FeatureInfo(info[i] for i in sorted(picked))
        self.name, self.in_channels = model.name, model.in_channels
        self.min_input_size, self.input_size = model.min_input_size, model.input_size
        self.pretrained_cfg = model.pretrained_cfg
        self.body = create_feature_extractor(
            model, return_nodes={d["module"]: str(k) for k, d in enumerate(self.feature_info)})

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(self.body(x).values())
