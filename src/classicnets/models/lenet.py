"""LeNet-5 (LeCun et al. 1998) in the form the tutorials build (d2l) for 28x28 Fashion-MNIST.

conv 5x5 -> 6 (padding 2, so 28x28 input gives LeNet's 28x28 C1 maps), 2x2 average pool, conv 5x5 -> 16,
2x2 average pool, then 120 -> 84 -> classes. The 1998 net used a scaled tanh and trainable subsampling
and d2l uses sigmoid; we default to ReLU, which trains with any recipe or init here, and offer
`activation="sigmoid"` (d2l exactly) and `"tanh"` (closest to 1998).
"""

from __future__ import annotations

from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models.init import initialize
from classicnets.models.layers import (
    POOL,
    ClassicNet,
    Conv,
    check_options,
    make_layers,
    mlp_head,
    scaled,
    windows_of,
)
from classicnets.models.registry import register

PAPER = "LeCun, Bottou, Bengio & Haffner 1998, Gradient-Based Learning Applied to Document Recognition"

LENET_CONVS: list = [Conv(6, 5, 1, 2), POOL, Conv(16, 5, 1, 0), POOL]  # "M" here: 2x2/2 average pool
LENET_FC = [120, 84]
ACTIVATIONS = {"relu": lambda: nn.ReLU(inplace=True), "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}


class LeNet(ClassicNet):
    paper = PAPER

    def __init__(self, name: str, *, num_classes: int, in_channels: int, input_size: int, width: float,
                 dropout: float | None, activation: str) -> None:
        super().__init__(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        if activation not in ACTIVATIONS:
            raise ClassicNetsError(f"{name}: activation must be one of {', '.join(ACTIVATIONS)}; "
                                   f"got {activation!r}")
        convs = [t for t in LENET_CONVS if isinstance(t, Conv)]
        check_options(name, num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout,
                      channels=[c.channels for c in convs] + LENET_FC)
        act = ACTIVATIONS[activation]
        self.activation = activation
        self.features, _ = make_layers(LENET_CONVS, in_channels, width, activation=act,
                                       pool=lambda: nn.AvgPool2d(kernel_size=2, stride=2))
        size = self.set_input_limits(windows_of([self.features]))
        self.avgpool = nn.AdaptiveAvgPool2d((size, size))
        self.flatten = nn.Flatten(1)
        self.num_features = scaled(convs[-1].channels, width)
        self.head_hidden_size = scaled(LENET_FC[-1], width)
        in_features = self.num_features * size * size
        self.classifier = mlp_head(in_features, [scaled(u, width) for u in LENET_FC], num_classes,
                                   dropout=dropout, activation=act)


def _lenet(*, num_classes: int = 10, in_channels: int = 1, input_size: int = 28, width: float = 1.0,
           dropout: float | None = None, activation: str = "relu", init: str = "kaiming") -> LeNet:
    model = LeNet("lenet", num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                  width=width, dropout=dropout, activation=activation)
    return initialize(model, init)


@register(family="lenet", paper=PAPER, options=_lenet)
def lenet(**kwargs) -> LeNet:
    """LeNet-5 (LeCun et al. 1998) as d2l builds it, for 1x28x28 input and 10 classes by default; ReLU unless
    activation="sigmoid" (d2l) or "tanh"; `dropout` (off by default) adds dropout after the FC layers."""
    return _lenet(**kwargs)
