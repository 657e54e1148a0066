"""AlexNet in its three forms: the 2012 paper's, the tutorials' (d2l) and torchvision's.

All three are five convs and three FC layers; they differ in widths, padding, LRN and where dropout
sits, which the tables below spell out. Each pooling layer is AlexNet's overlapping max-pool (3x3,
stride 2; paper sec. 3.4). The classifier is sized from the real final feature map (224 -> 6x6 for the
paper and torchvision forms, 5x5 for d2l's).
"""

from __future__ import annotations

from torch import nn

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

PAPER = "Krizhevsky, Sutskever & Hinton 2012, ImageNet Classification with Deep Convolutional Neural Networks"
M = POOL

# Conv(channels, kernel, stride, padding); every conv is followed by a ReLU.
ALEXNET_TABLE: dict[str, list] = {
    # Sec. 3.5 / Fig. 2, as one tower (the paper split each layer over two GPUs). LRN follows conv 1
    # and 2 (sec. 3.3); padding 2 on conv 1 turns 224 into the paper's 55x55.
    "paper": [Conv(96, 11, 4, 2), LRN, M, Conv(256, 5), LRN, M, Conv(384, 3), Conv(384, 3), Conv(256, 3), M],
    # d2l's "AlexNet" for Fashion-MNIST at 224 (tutorials): no LRN, 224 -> 54 -> ... -> 5x5.
    "d2l": [Conv(96, 11, 4, 1), M, Conv(256, 5), M, Conv(384, 3), Conv(384, 3), Conv(256, 3), M],
    # torchvision's alexnet, the "one weird trick" variant (Krizhevsky 2014): narrower, no LRN.
    "torchvision": [Conv(64, 11, 4, 2), M, Conv(192, 5), M, Conv(384, 3), Conv(256, 3), Conv(256, 3), M],
}
FC_UNITS = 4096


class AlexNet(ClassicNet):
    """An AlexNet built from one row of ALEXNET_TABLE (torchvision's module layout)."""

    paper = PAPER

    def __init__(self, name: str, form: str, *, num_classes: int, in_channels: int, input_size: int,
                 width: float, dropout: float, fc_width: int | None = None) -> None:
        super().__init__(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        table = ALEXNET_TABLE[form]
        convs = [t for t in table if isinstance(t, Conv)]
        check_options(name, num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout,
                      channels=[c.channels for c in convs])
        self.form = form
        self.features, _ = make_layers(table, in_channels, width,
                                       pool=lambda: nn.MaxPool2d(kernel_size=3, stride=2))
        size = self.set_input_limits(windows_of([self.features]))
        self.avgpool = nn.AdaptiveAvgPool2d((size, size))
        self.flatten = nn.Flatten(1)
        hidden = hidden_units(name, FC_UNITS, width, fc_width)
        self.num_features, self.head_hidden_size = scaled(convs[-1].channels, width), hidden
        in_features = self.num_features * size * size
        # The paper (sec. 4.2) and d2l drop out the outputs of the two hidden FC layers; torchvision
        # drops their inputs (Dropout first), which keeps its classifier indices 1/4/6.
        self.classifier = mlp_head(in_features, [hidden, hidden], num_classes, dropout=dropout,
                                   dropout_first=form == "torchvision")


def _alexnet(name: str, form: str, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
             width: float = 1.0, dropout: float = 0.5, init: str = "kaiming", fc_width: int | None = None) -> AlexNet:
    model = AlexNet(name, form, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                    width=width, dropout=dropout, fc_width=fc_width)
    return initialize(model, init)


D2L_DEFAULTS = {"num_classes": 10, "in_channels": 1}  # the tutorials' Fashion-MNIST setting


@register(family="alexnet", paper=PAPER, options=_alexnet, torchvision="alexnet")
def alexnet(**kwargs) -> AlexNet:
    """AlexNet as torchvision builds it (64-192-384-256-256, no LRN; Krizhevsky 2014, "One weird trick");
    its ImageNet weights load here. Not the 2012 net: see alexnet_paper."""
    return _alexnet("alexnet", "torchvision", **kwargs)


@register(family="alexnet", paper=PAPER, options=_alexnet)
def alexnet_paper(**kwargs) -> AlexNet:
    """AlexNet as in Krizhevsky et al. 2012, single tower: 96-256-384-384-256 convs, LRN after conv 1 and 2,
    overlapping 3x3/2 max-pools, dropout on the two 4096-unit FC layers."""
    return _alexnet("alexnet_paper", "paper", **kwargs)


@register(family="alexnet", paper=PAPER, options=_alexnet, defaults=D2L_DEFAULTS)
def alexnet_d2l(**kwargs) -> AlexNet:
    """The tutorials' AlexNet (d2l, Fashion-MNIST resized to 224): 1 input channel and 10 classes by default,
    no LRN, 6400 -> 4096 -> 4096 -> classes with dropout 0.5."""
    return _alexnet("alexnet_d2l", "d2l", **{**D2L_DEFAULTS, **kwargs})
