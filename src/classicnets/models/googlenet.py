"""GoogLeNet (Inception v1; Szegedy et al. 2014) in the paper's form and in torchvision's batch-norm form.

Both are built from INCEPTION_TABLE (the paper's Table 1). The paper form has LRN in the stem, 5x5
convs in the Inception "5x5" branch, a 3x3/2 max-pool before stage 5 and dropout 0.4. torchvision's form
(`googlenet_bn`) differs in ways its ImageNet weights depend on, which it keeps:
  - batch norm after every conv (bias-free convs) and no LRN;
  - a 3x3 conv in the "5x5" branch, a known slip of the original port (pytorch/vision #906);
  - a 2x2/2 max-pool before stage 5 and dropout 0.2;
  - no `transform_input`: torchvision sets transform_input=True when it loads its ImageNet weights, which
    silently turns ImageNet-normalised input into (x - 0.5) / 0.5 per channel (pytorch/vision #4136);
    with those weights here, normalise with mean = std = 0.5 instead.
Auxiliary classifiers (after 4a and 4d, paper sec. 5) are optional (`aux_logits=True`); in training mode
the net then returns AuxOutputs(logits, (aux1, aux2)) and the loss adds aux_weight (0.3) times theirs.
torchvision's ImageNet file carries its (never trained) aux heads: build googlenet_bn(aux_logits=True)
to load it strictly.
"""

from __future__ import annotations

import torch
from torch import nn

from classicnets.models.init import initialize
from classicnets.models.layers import (
    AuxOutputs,
    ClassicNet,
    ConvBlock,
    Dropout,
    FeatureInfo,
    Window,
    check_options,
    local_response_norm,
    output_size,
    scaled,
    stage_ends,
    windows_of,
)
from classicnets.models.registry import register

PAPER = "Szegedy et al. 2014, Going Deeper with Convolutions"

# Table 1: #1x1, #3x3 reduce, #3x3, #5x5 reduce, #5x5, pool proj (output = #1x1 + #3x3 + #5x5 + pool proj).
INCEPTION_TABLE: dict[str, tuple[int, int, int, int, int, int]] = {
    "3a": (64, 96, 128, 16, 32, 32),
    "3b": (128, 128, 192, 32, 96, 64),
    "4a": (192, 96, 208, 16, 48, 64),
    "4b": (160, 112, 224, 24, 64, 64),
    "4c": (128, 128, 256, 24, 64, 64),
    "4d": (112, 144, 288, 32, 64, 64),
    "4e": (256, 160, 320, 32, 128, 128),
    "5a": (256, 160, 320, 32, 128, 128),
    "5b": (384, 192, 384, 48, 128, 128),
}
STEM_CHANNELS = (64, 64, 192)  # conv 7x7/2, conv 1x1 (reduce), conv 3x3
AUX_AFTER = {"inception4a": "aux1", "inception4d": "aux2"}
AUX_CONV, AUX_FC = 128, 1024


class Inception(nn.Module):
    """Four branches concatenated: 1x1 | 1x1 -> 3x3 | 1x1 -> "5x5" | 3x3 max-pool -> 1x1."""

    def __init__(self, in_channels: int, spec: tuple[int, ...], *, wide_kernel: int, batch_norm: bool):
        super().__init__()
        c1, c3_reduce, c3, c5_reduce, c5, pool_proj = spec
        self.branch1 = ConvBlock(in_channels, c1, 1, batch_norm=batch_norm)
        self.branch2 = nn.Sequential(ConvBlock(in_channels, c3_reduce, 1, batch_norm=batch_norm),
                                     ConvBlock(c3_reduce, c3, 3, padding=1, batch_norm=batch_norm))
        self.branch3 = nn.Sequential(
            ConvBlock(in_channels, c5_reduce, 1, batch_norm=batch_norm),
            ConvBlock(c5_reduce, c5, wide_kernel, padding=wide_kernel // 2, batch_norm=batch_norm),
        )
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1, ceil_mode=True),
                                     ConvBlock(in_channels, pool_proj, 1, batch_norm=batch_norm))
        self.out_channels = c1 + c3 + c5 + pool_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], 1)


class AuxHead(nn.Module):
    """Auxiliary classifier (paper sec. 5): pool, 1x1 conv to 128, FC 1024, dropout 0.7, FC to classes."""

    def __init__(self, in_channels: int, num_classes: int, *, pool: nn.Module, pooled: int, width: float,
                 batch_norm: bool) -> None:
        super().__init__()
        channels, units = scaled(AUX_CONV, width), scaled(AUX_FC, width)
        self.pool = pool
        self.conv = ConvBlock(in_channels, channels, 1, batch_norm=batch_norm)
        self.flatten = nn.Flatten(1)
        self.fc1 = nn.Linear(channels * pooled * pooled, units)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = Dropout(0.7)
        self.fc2 = nn.Linear(units, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.conv(self.pool(x)))
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class GoogLeNet(ClassicNet):
    """GoogLeNet in the paper's form (form="paper") or torchvision's batch-norm form ("torchvision")."""

    aux_weight = 0.3  # paper sec. 5: auxiliary losses added with weight 0.3
    paper = PAPER

    def __init__(self, name: str, form: str, *, num_classes: int, in_channels: int, input_size: int,
                 width: float, dropout: float, aux_logits: bool) -> None:
        super().__init__(name, num_classes=num_classes, in_channels=in_channels, input_size=input_size)
        check_options(name, num_classes=num_classes, in_channels=in_channels, width=width, dropout=dropout,
                      channels=[*STEM_CHANNELS, *(c for spec in INCEPTION_TABLE.values() for c in spec)])
        paper = form == "paper"
        self.form, self.aux_logits = form, bool(aux_logits)
        bn = not paper
        c0, c1, c2 = (scaled(c, width) for c in STEM_CHANNELS)
        stem: list[tuple[str, nn.Module]] = [
            ("conv1", ConvBlock(in_channels, c0, 7, stride=2, padding=3, batch_norm=bn)),
            ("maxpool1", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
            *([("lrn1", local_response_norm())] if paper else []),
            ("conv2", ConvBlock(c0, c1, 1, batch_norm=bn)),
            ("conv3", ConvBlock(c1, c2, 3, padding=1, batch_norm=bn)),
            *([("lrn2", local_response_norm())] if paper else []),
            ("maxpool2", nn.MaxPool2d(3, stride=2, ceil_mode=True)),
        ]
        self.lrn1 = self.lrn2 = None  # the paper's stem has them; torchvision's does not
        for module_name, module in stem:
            setattr(self, module_name, module)
        self.body = [module_name for module_name, _ in stem]
        channels, aux_in = c2, {}
        for stage, names in (("3", "ab"), ("4", "abcde"), ("5", "ab")):
            for letter in names:
                spec = tuple(scaled(c, width) for c in INCEPTION_TABLE[stage + letter])
                block = Inception(channels, spec, wide_kernel=5 if paper else 3, batch_norm=bn)
                self.add_module(f"inception{stage}{letter}", block)
                self.body.append(f"inception{stage}{letter}")
                channels = block.out_channels
                aux_in[f"inception{stage}{letter}"] = channels
            if stage != "5":  # the pool before stage 5 is 3x3/2 in the paper, 2x2/2 in torchvision
                window = 3 if paper or stage == "3" else 2
                self.add_module(f"maxpool{stage}", nn.MaxPool2d(window, stride=2, ceil_mode=True))
                self.body.append(f"maxpool{stage}")

        main = windows_of(self.modules_named(self.body))
        # The paper's aux heads pool 5x5/3 on the 4a/4d map (14x14 at 224), so they need that map >= 5.
        to_4a = windows_of(self.modules_named(self.body[: self.body.index("inception4a") + 1]))
        aux_path = to_4a + [Window("avg-pool", 5, 3, 0)]
        self.set_input_limits(main, *([aux_path] if paper and self.aux_logits else []))
        self.aux1 = self.aux2 = None
        if self.aux_logits:
            for point, head_name in AUX_AFTER.items():
                if paper:  # 5x5/3 average pool (4x4 at 224), then adaptive: the identity at input_size
                    pooled = output_size(self.input_size, aux_path)
                    pool = nn.Sequential(nn.AvgPool2d(5, stride=3), nn.AdaptiveAvgPool2d(pooled))
                else:
                    pooled, pool = 4, nn.AdaptiveAvgPool2d((4, 4))
                setattr(self, head_name, AuxHead(aux_in[point], num_classes, pool=pool, pooled=pooled,
                                                   width=width, batch_norm=bn))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.flatten = nn.Flatten(1)
        self.dropout = Dropout(dropout)
        self.fc = nn.Linear(channels, num_classes)
        self.num_features = self.head_hidden_size = channels

    def modules_named(self, names: list[str]) -> list[nn.Module]:
        return [getattr(self, n) for n in names]

    def run_body(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The stem and the Inception stages (self.body, written out so TorchScript compiles it), and in
        training the aux heads' logits (after 4a and 4d: AUX_AFTER)."""
        aux: list[torch.Tensor] = []
        x = self.maxpool1(self.conv1(x))
        if self.lrn1 is not None:
            x = self.lrn1(x)
        x = self.conv3(self.conv2(x))
        if self.lrn2 is not None:
            x = self.lrn2(x)
        x = self.maxpool3(self.inception3b(self.inception3a(self.maxpool2(x))))
        x = self.inception4a(x)
        if self.aux1 is not None and self.training:
            aux.append(self.aux1(x))
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        if self.aux2 is not None and self.training:
            aux.append(self.aux2(x))
        x = self.maxpool4(self.inception4e(x))
        return self.inception5b(self.inception5a(x)), aux

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.run_body(x)[0]

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))

    def head_layers(self) -> list[nn.Module]:
        return [self.dropout, self.fc]

    def get_classifier(self) -> nn.Module:
        return self.fc

    def set_classifier(self, layer: nn.Module) -> None:
        self.fc = layer

    def class_layer_names(self) -> list[str]:
        return ["fc", *(f"{head}.fc2" for head in ("aux1", "aux2") if getattr(self, head) is not None)]

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new main class layer, and new last layers in the aux heads, so all three agree."""
        super().reset_classifier(num_classes, global_pool)
        for head in (self.aux1, self.aux2):
            if head is not None:
                layer = nn.Linear(head.fc1.out_features, num_classes) if num_classes else nn.Identity()
                head.fc2 = layer.to(device=head.fc1.weight.device, dtype=head.fc1.weight.dtype)

    @property
    def feature_info(self) -> FeatureInfo:
        return stage_ends([(n, getattr(self, n)) for n in self.body], self.in_channels)

    def forward(self, x: torch.Tensor):
        x = self.check_input(x)
        features, aux = self.run_body(x)
        logits = self.forward_head(features)
        if torch.jit.is_scripting():
            return logits  # TorchScript wants one output type: a scripted net is for inference
        return AuxOutputs(logits, tuple(aux)) if aux else logits


def _googlenet(name: str, form: str, *, num_classes: int = 1000, in_channels: int = 3, input_size: int = 224,
               width: float = 1.0, dropout: float = 0.4, aux_logits: bool = False,
               init: str = "kaiming") -> GoogLeNet:
    model = GoogLeNet(name, form, num_classes=num_classes, in_channels=in_channels, input_size=input_size,
                      width=width, dropout=dropout, aux_logits=aux_logits)
    return initialize(model, init)


BN_DEFAULTS = {"dropout": 0.2}  # torchvision's


@register(family="googlenet", paper=PAPER, options=_googlenet)
def googlenet(**kwargs) -> GoogLeNet:
    """GoogLeNet as in Szegedy et al. 2014: LRN in the stem, 5x5 Inception branches, dropout 0.4; the two
    auxiliary classifiers (after 4a and 4d, loss weight 0.3) with aux_logits=True."""
    return _googlenet("googlenet", "paper", **kwargs)


@register(family="googlenet", paper=PAPER, options=_googlenet, torchvision="googlenet", defaults=BN_DEFAULTS)
def googlenet_bn(**kwargs) -> GoogLeNet:
    """GoogLeNet as torchvision builds it (batch norm, no LRN, 3x3 in the "5x5" branch: pytorch/vision
    #906); its ImageNet weights load here, with aux_logits=True and input normalised with mean = std = 0.5
    (torchvision's transform_input does that behind your back: pytorch/vision #4136)."""
    return _googlenet("googlenet_bn", "torchvision", **{**BN_DEFAULTS, **kwargs})
