"""Dense evaluation form (VGG paper sec. 3.2): the FC classifier rewritten as convolutions.

The first FC layer becomes a conv whose kernel is the training-size final feature map (7x7 for VGG at
224), the others 1x1 convs. The converted net slides the classifier over any input at least the
training size and returns class-score maps (N, classes, h, w); at the training size the map is 1x1 and
equals the original logits. Nets with a global-average-pooling head (NiN, GoogLeNet, VGG head="gap")
become their body plus 1x1 convs, whose maps average to the original logits. The conv weights are views
of the FC weights (no copy), so the two forms share parameters.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models.layers import ClassicNet, smallest_input


class DenseForm(nn.Module):
    """A classicnets net's body followed by its classifier as convolutions."""

    def __init__(self, net: ClassicNet, head: nn.Sequential, kernel: int) -> None:
        super().__init__()
        self.net = net
        self.head = head
        self.kernel = kernel
        self.num_classes, self.in_channels, self.input_size = net.num_classes, net.in_channels, net.input_size
        # The first conv needs a kernel x kernel feature map: the training size's, for FC heads.
        self.min_input_size = max(net.min_input_size, smallest_input(net.windows, final=kernel))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.net.check_input(x)
        if min(x.shape[-2:]) < self.min_input_size:
            m = self.min_input_size
            raise ClassicNetsError(
                f"dense {self.net.name} needs inputs of at least {m}x{m} (its first FC layer became a "
                f"{self.kernel}x{self.kernel} conv over the final feature map); got {x.shape[-2]}x{x.shape[-1]}"
            )
        return self.head(self.net.forward_features(x))


def _conv_from_linear(linear: nn.Linear, kernel: int) -> nn.Conv2d:
    in_channels = linear.in_features // (kernel * kernel)
    conv = nn.Conv2d(in_channels, linear.out_features, kernel, bias=linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype)
    # Flatten order (channel, row, column) is the conv weight's (in, kh, kw): a reshape, not a copy.
    conv.weight = nn.Parameter(linear.weight.view(linear.out_features, in_channels, kernel, kernel))
    if linear.bias is not None:
        conv.bias = linear.bias
    return conv


def to_dense(model: nn.Module) -> DenseForm:
    """Convert a classicnets net (any registered one) to its dense evaluation form; see the module doc."""
    if not isinstance(model, ClassicNet) or not isinstance(getattr(model, "avgpool", None),
                                                           nn.AdaptiveAvgPool2d):
        raise ClassicNetsError(
            f"to_dense converts classicnets nets (create_model(...)); got {type(model).__name__}"
        )
    size = model.avgpool.output_size
    kernel = size if isinstance(size, int) else size[0]
    layers: list[nn.Module] = []
    first = True
    for layer in model.head_layers():
        if isinstance(layer, nn.Linear):
            layers.append(_conv_from_linear(layer, kernel if first else 1))
            first = False
        elif isinstance(layer, (nn.Flatten, nn.Identity)):
            continue
        elif isinstance(layer, (nn.ReLU, nn.Sigmoid, nn.Tanh, nn.Dropout)):
            layers.append(copy.deepcopy(layer))  # elementwise: the same on maps
        else:
            raise ClassicNetsError(f"to_dense cannot convert {type(layer).__name__} in {model.name}'s head")
    return DenseForm(model, nn.Sequential(*layers), kernel)
