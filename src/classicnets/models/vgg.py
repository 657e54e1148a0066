"""VGG: all six configurations of Table 1 of Simonyan & Zisserman (arXiv:1409.1556), with and without BN.

The table below is the paper's Table 1 as data; one factory builds every net from it. Module layout is
torchvision's (`features` with the same indices, `avgpool`, `classifier` with Linear layers at 0/3/6), so
torchvision's state_dicts load with `load_state_dict` and give the same outputs. Unlike torchvision, the
classifier is sized from the real final feature map (224 -> 7x7, 32 -> 1x1), so a 1x1 map is not
copied 49 times into a 25,088-wide FC layer; `avgpool` pools to that map size (the identity at the
training size; it lets larger inputs through).
"""

from __future__ import annotations

from typing import NamedTuple

from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models.init import initialize
from classicnets.models.layers import (
    LRN,
    POOL,
    ClassicNet,
    Conv,
    check_options,
    hidden_units,
    make_layers,
    mlp_head,
    scaled,
    windows_of,
)
from classicnets.models.registry import register

PAPER = "Simonyan & Zisserman 2014, Very Deep Convolutional Networks for Large-Scale Image Recognition"

# Table 1 (ConvNet configurations). An int n is "conv3-n" (3x3, padding 1), Conv(n, 1) is C's "conv1-n",
# "M" is "maxpool" (2x2, stride 2), "LRN" is A-LRN's local response normalisation (after the first
# conv, AlexNet's constants). Every conv is followed by a ReLU (and BN before it in the _bn nets).
M = POOL
VGG_TABLE: dict[str, list] = {
    "A": [64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "A-LRN": [64, LRN, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "B": [64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M],
    "C": [64, 64, M, 128, 128, M, 256, 256, Conv(256, 1), M, 512, 512, Conv(512, 1), M,
          512, 512, Conv(512, 1), M],
    "D": [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M],
    "E": [64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M],
}
VGG_CONFIG = {"vgg11": "A", "vgg11_lrn": "A-LRN", "vgg13": "B", "vgg16_c": "C", "vgg16": "D", "vgg19": "E"}
FC_UNITS = 4096  # the two hidden FC layers
HEADS = ("fc", "gap")


class ConvSlot(NamedTuple):
    """Where a conv sits: its block (between max-pools) and position in it, and its module names."""

    block: int
    position: int
    conv: str
    bn: str | None


class VGG(ClassicNet):
    """A VGG net built from one row of VGG_TABLE."""

    paper = PAPER

    def __init__(self, name: str, config: str, *, batch_norm: bool, num_classes: int, in_channels: int,
                 input_size: int, width: float, dropout: float, head: str, fc_width: int | None = None,
                 ceil_mode: bool = False) -> None:
        super().__init__(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        table = VGG_TABLE[config]
        if head not in HEADS:
            raise ClassicNetsError(f"{name}: head must be 'fc' (the paper's three FC layers) or 'gap' "
                                   f"(global average pooling + one linear layer, as NiN); got {head!r}")
        conv_channels = [t.channels if isinstance(t, Conv) else t for t in table if t not in (M, LRN)]
        check_options(name, num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout,
                      channels=conv_channels)
        if not isinstance(ceil_mode, bool):
            raise ClassicNetsError(f"{name}: ceil_mode must be True or False; got {ceil_mode!r}")
        self.config, self.head = config, head
        self.features, convs = make_layers(table, in_channels, width, batch_norm=batch_norm,
                                           pool=lambda: nn.MaxPool2d(kernel_size=2, stride=2, ceil_mode=ceil_mode))
        size = self.set_input_limits(windows_of([self.features]))
        self.conv_slots = _conv_slots(table, convs)
        channels = scaled(conv_channels[-1], width)
        self.num_features = channels
        if head == "fc":
            self.avgpool = nn.AdaptiveAvgPool2d((size, size))
            self.flatten = nn.Flatten(1)
            hidden = hidden_units(name, FC_UNITS, width, fc_width)
            self.classifier = mlp_head(channels * size * size, [hidden, hidden], num_classes, dropout=dropout)
            self.head_hidden_size = hidden
        else:
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.flatten = nn.Flatten(1)
            self.classifier = nn.Sequential(nn.Linear(channels, num_classes))
            self.head_hidden_size = channels

    def tap_names(self) -> dict[str, str]:
        """The perceptual-loss literature's layer names -> module names, torchvision's indices: conv{b}_{i},
        bn{b}_{i} (the _bn nets), relu{b}_{i} for conv i of block b, lrn1 (A-LRN), pool{b}. VGG-16:
        relu1_2 features.3, relu2_2 features.8, relu3_3 features.15, relu4_3 features.22, relu5_3 features.29."""
        names = {}
        for slot in self.conv_slots:
            tag = f"{slot.block + 1}_{slot.position + 1}"
            names[f"conv{tag}"] = slot.conv
            if slot.bn:
                names[f"bn{tag}"] = slot.bn
            names[f"relu{tag}"] = f"features.{int((slot.bn or slot.conv).split('.')[1]) + 1}"
        kinds = {nn.MaxPool2d: "pool", nn.LocalResponseNorm: "lrn"}
        seen = dict.fromkeys(kinds.values(), 0)
        for index, layer in enumerate(self.features):
            if type(layer) in kinds:
                kind = kinds[type(layer)]
                seen[kind] += 1
                names[f"{kind}{seen[kind]}"] = f"features.{index}"
        return names


def _conv_slots(table: list, convs: list[tuple[int, int | None]]) -> list[ConvSlot]:
    slots, block, position = [], 0, 0
    conv_iter = iter(convs)
    for token in table:
        if token == M:
            block, position = block + 1, 0
        elif token != LRN:
            conv_index, bn_index = next(conv_iter)
            bn = None if bn_index is None else f"features.{bn_index}"
            slots.append(ConvSlot(block, position, f"features.{conv_index}", bn))
            position += 1
    return slots


def _vgg(name: str, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
         width: float = 1.0, dropout: float = 0.5, head: str = "fc", init: str = "kaiming",
         fc_width: int | None = None, ceil_mode: bool = False) -> VGG:
    """The one factory: `name` is vgg11 ... vgg19, optionally with _bn. `fc_width`: units of the two hidden
    FC layers (default 4096 x width; the tutorials' VGG-11 keeps 4096 at width 1/4). `ceil_mode`: the
    max-pools round sizes up (Caffe's rule, in which the paper's nets were trained), so an odd map keeps
    its last row: 28x28 passes the five pools as 28-14-7-4-2-1 instead of being refused below 32x32."""
    batch_norm = name.endswith("_bn")
    config = VGG_CONFIG[name.removesuffix("_bn")]
    model = VGG(name, config, batch_norm=batch_norm, num_classes=num_classes, in_channels=in_channels,
                input_size=input_size, width=width, dropout=dropout, head=head, fc_width=fc_width,
                ceil_mode=ceil_mode)
    return initialize(model, init)


def _register(torchvision: str | None = None):
    return register(family="vgg", paper=PAPER, options=_vgg, torchvision=torchvision)


@_register("vgg11")
def vgg11(**kwargs) -> VGG:
    """VGG-11, configuration A (Simonyan & Zisserman 2014, Table 1): 8 conv + 3 FC layers, 133M params."""
    return _vgg("vgg11", **kwargs)


@_register("vgg11_bn")
def vgg11_bn(**kwargs) -> VGG:
    """VGG-11 (configuration A) with batch norm after every conv (torchvision's vgg11_bn)."""
    return _vgg("vgg11_bn", **kwargs)


@_register()
def vgg11_lrn(**kwargs) -> VGG:
    """VGG-11 with LRN, configuration A-LRN (Simonyan & Zisserman 2014, Table 1): LRN after conv 1."""
    return _vgg("vgg11_lrn", **kwargs)


@_register()
def vgg11_lrn_bn(**kwargs) -> VGG:
    """Configuration A-LRN with batch norm after every conv (not in the paper; for completeness)."""
    return _vgg("vgg11_lrn_bn", **kwargs)


@_register("vgg13")
def vgg13(**kwargs) -> VGG:
    """VGG-13, configuration B (Simonyan & Zisserman 2014, Table 1): 10 conv + 3 FC layers."""
    return _vgg("vgg13", **kwargs)


@_register("vgg13_bn")
def vgg13_bn(**kwargs) -> VGG:
    """VGG-13 (configuration B) with batch norm after every conv (torchvision's vgg13_bn)."""
    return _vgg("vgg13_bn", **kwargs)


@_register()
def vgg16_c(**kwargs) -> VGG:
    """VGG-16 configuration C (Simonyan & Zisserman 2014, Table 1): 1x1 convs as the third conv of
    blocks 3-5; 134M params. Not in torchvision."""
    return _vgg("vgg16_c", **kwargs)


@_register()
def vgg16_c_bn(**kwargs) -> VGG:
    """VGG-16 configuration C with batch norm after every conv."""
    return _vgg("vgg16_c_bn", **kwargs)


@_register("vgg16")
def vgg16(**kwargs) -> VGG:
    """VGG-16, configuration D (Simonyan & Zisserman 2014, Table 1): 13 conv + 3 FC layers, 138M params."""
    return _vgg("vgg16", **kwargs)


@_register("vgg16_bn")
def vgg16_bn(**kwargs) -> VGG:
    """VGG-16 (configuration D) with batch norm after every conv (torchvision's vgg16_bn)."""
    return _vgg("vgg16_bn", **kwargs)


@_register("vgg19")
def vgg19(**kwargs) -> VGG:
    """VGG-19, configuration E (Simonyan & Zisserman 2014, Table 1): 16 conv + 3 FC layers, 144M params."""
    return _vgg("vgg19", **kwargs)


@_register("vgg19_bn")
def vgg19_bn(**kwargs) -> VGG:
    """VGG-19 (configuration E) with batch norm after every conv (torchvision's vgg19_bn)."""
    return _vgg("vgg19_bn", **kwargs)

