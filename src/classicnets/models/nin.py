"""Network in Network (Lin, Chen & Yan 2013) in the form the tutorials build (d2l).

Each NiN block is a conv followed by two 1x1 convs (the "micro network", an MLP shared over positions),
each with a ReLU. d2l's ImageNet-shaped stack uses AlexNet's kernels (11/4, 5, 3) and widths 96-256-384
with 3x3/2 max-pools, dropout 0.5, and a last block with one channel per class; global average pooling
of that block gives the logits: no FC layers at all, so any input size works and the net is its own
dense form. As in d2l, the last block ends with a ReLU too.
"""

from __future__ import annotations

from torch import nn

from classicnets.models.init import initialize
from classicnets.models.layers import (
    POOL,
    ClassicNet,
    Conv,
    Dropout,
    FeatureInfo,
    check_options,
    make_layers,
    stage_ends,
    windows_of,
)
from classicnets.models.registry import register

PAPER = "Lin, Chen & Yan 2013, Network In Network"

# The first conv of each NiN block (its two 1x1 convs have the same width); "M" is a 3x3/2 max-pool.
# After them: dropout, then a last NiN block of 3x3 convs with num_classes channels.
NIN_BLOCKS: list = [Conv(96, 11, 4, 0), POOL, Conv(256, 5, 1, 2), POOL, Conv(384, 3, 1, 1), POOL]


def _nin_block(spec: Conv) -> list[Conv]:
    return [spec, Conv(spec.channels, 1), Conv(spec.channels, 1)]


class NiN(ClassicNet):
    """d2l's NiN: NiN blocks and max-pools, dropout, a block to class maps, global average pooling.

    Its classifier (timm's sense) is the last NiN block, `features[-1]`: the one that makes class maps.
    """

    paper = PAPER

    def __init__(self, name: str, *, num_classes: int, in_channels: int, input_size: int, width: float,
                 dropout: float) -> None:
        super().__init__(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        check_options(name, num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout,
                      channels=[t.channels for t in NIN_BLOCKS if isinstance(t, Conv)])
        layers: list[nn.Module] = []
        channels = in_channels
        pool = lambda: nn.MaxPool2d(kernel_size=3, stride=2)
        for token in NIN_BLOCKS:
            if token == POOL:
                layers.append(pool())
                continue
            block, _ = make_layers(_nin_block(token), channels, width)
            layers.append(block)
            channels = block[-2].out_channels
        layers.append(Dropout(dropout))
        self.num_features = self.head_hidden_size = channels
        layers.append(self.new_classifier(num_classes))
        self.features = nn.Sequential(*layers)
        self.set_input_limits(windows_of([self.features]))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.classifier = nn.Identity()

    def head_layers(self) -> list[nn.Module]:
        return []

    def get_classifier(self) -> nn.Module:
        return self.features[-1]

    def set_classifier(self, layer: nn.Module) -> None:
        self.features[-1] = layer

    def new_classifier(self, num_classes: int) -> nn.Module:
        """A NiN block with one map per class (width never scales classes); 0 classes: none."""
        if num_classes == 0:
            return nn.Identity()
        return make_layers(_nin_block(Conv(num_classes, 3)), self.head_hidden_size)[0]

    @property
    def feature_info(self) -> FeatureInfo:
        """Stage ends up to the last pool: the class-map block is the classifier, not a feature."""
        body = list(self.features.named_children())[:-2]  # without the dropout and the class block
        return stage_ends([(f"features.{n}", m) for n, m in body], self.in_channels)


def _nin(*, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224, width: float = 1.0,
         dropout: float = 0.5, init: str = "kaiming") -> NiN:
    model = NiN("nin", num_classes=num_classes, in_channels=in_channels, input_size=input_size, width=width,
                dropout=dropout)
    return initialize(model, init)


@register(family="nin", paper=PAPER, options=_nin)
def nin(**kwargs) -> NiN:
    """Network in Network (Lin et al. 2013) as d2l builds it: NiN blocks 96-256-384 with AlexNet's kernels,
    a last block with one map per class, global average pooling (no FC layers)."""
    return _nin(**kwargs)
