"""Weight initialisation by name, and the VGG paper's warm start.

Schemes (every Conv2d and Linear; BatchNorm gets weight 1, bias 0 and fresh running statistics):
    kaiming  torchvision's: conv weights kaiming-normal (fan_out, ReLU gain), linear N(0, 0.01), biases 0.
             The default: it trains deep nets without BN from scratch.
    xavier   Glorot uniform weights, biases 0: the VGG paper's later note (Glorot & Bengio 2010 lets
             the deep configurations train without the warm start) and the tutorials' choice.
    he       He et al. 2015 for every layer: kaiming-normal (fan_in, ReLU gain) conv and FC weights,
             biases 0. Keeps activations at unit scale through narrow nets without BN, where
             torchvision's N(0, 0.01) FC layers shrink the logits (used by `classicnets reproduce`).
    normal   N(0, 0.01) weights, biases 0: the VGG paper's initialisation for net A (sec. 3.1).
    alexnet  The AlexNet paper (sec. 5): N(0, 0.01) weights, biases 1 in conv 2, 4, 5 and the hidden
             FC layers (so the ReLUs start with positive inputs), 0 elsewhere. Defined by AlexNet's
             layer positions, so only nets with AlexNet's 5 conv + 3 FC layers accept it.
`None` leaves PyTorch's per-layer defaults (useful right before loading weights).
"""

from __future__ import annotations

import torch
from torch import nn

from classicnets.errors import ClassicNetsError

SCHEMES = ("kaiming", "he", "xavier", "normal", "alexnet")


def _name(model: nn.Module) -> str:
    return getattr(model, "name", type(model).__name__)


def initialize(model: nn.Module, scheme: str | None = "kaiming") -> nn.Module:
    """Initialise `model` in place with a named scheme (see the module docstring); returns the model."""
    if scheme is None:
        return model
    if scheme not in SCHEMES:
        raise ClassicNetsError(f"unknown init scheme {scheme!r}; choose one of {', '.join(SCHEMES)}")
    unit_bias = _alexnet_unit_bias(model) if scheme == "alexnet" else []
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if scheme == "kaiming" and isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                elif scheme == "he":
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                elif scheme == "xavier":
                    nn.init.xavier_uniform_(m.weight)
                else:
                    nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    m.bias.fill_(1.0 if any(m is u for u in unit_bias) else 0.0)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()
    return model


def _alexnet_unit_bias(model: nn.Module) -> list[nn.Module]:
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(convs) != 5 or len(linears) != 3:
        raise ClassicNetsError(
            f"init 'alexnet' sets biases of 1 by AlexNet's layer positions (conv 2, 4, 5 and the hidden FC "
            f"layers); {_name(model)} has {len(convs)} conv and {len(linears)} FC layers, not 5 and 3: "
            "use kaiming, xavier or normal"
        )
    return [convs[1], convs[3], convs[4], linears[0], linears[1]]


def warm_start(target: nn.Module, source: nn.Module) -> list[str]:
    """The VGG paper's warm start (sec. 3.1): initialise a deeper VGG from a trained net A.

    Copies the source's first four conv layers (A: conv1, conv2 and both convs of block 3) into the
    target's convs at the same block and position within the block (they are the same shape there in
    every configuration), plus the three FC layers; the rest of the target keeps its fresh weights. BN
    layers travel with their convs when both nets have BN. Returns the target's names of the copied
    tensors, e.g. ["features.0.weight", "features.0.bias", ...]. Nothing is copied if any shape differs.
    """
    for role, net in (("target", target), ("source", source)):
        if not hasattr(net, "conv_slots") or getattr(net, "head", None) != "fc":
            raise ClassicNetsError(
                f"warm_start copies between VGG nets with the FC head; the {role} is {_name(net)}"
                + (f" with head={net.head!r}" if hasattr(net, "head") else "")
            )
    target_at = {(s.block, s.position): s for s in target.conv_slots}
    pairs: list[tuple[str, str]] = []  # (target module, source module)
    for slot in source.conv_slots[:4]:
        twin = target_at.get((slot.block, slot.position))
        if twin is None:
            raise ClassicNetsError(
                f"warm_start: {_name(target)} has no conv at block {slot.block + 1}, position "
                f"{slot.position + 1} for {_name(source)}'s {slot.conv}; use net A (vgg11) as the source"
            )
        if (slot.bn is None) != (twin.bn is None):
            raise ClassicNetsError(
                f"warm_start: {_name(source)} and {_name(target)} differ in batch norm; "
                "warm-start a _bn net from a _bn net and a plain one from a plain one"
            )
        pairs.append((twin.conv, slot.conv))
        if slot.bn is not None:
            pairs.append((twin.bn, slot.bn))
    target_fc = [i for i, m in enumerate(target.classifier) if isinstance(m, nn.Linear)]
    source_fc = [i for i, m in enumerate(source.classifier) if isinstance(m, nn.Linear)]
    pairs += [(f"classifier.{t}", f"classifier.{s}") for t, s in zip(target_fc, source_fc)]

    copies: list[tuple[str, torch.Tensor, torch.Tensor]] = []
    for target_module, source_module in pairs:
        target_tensors = target.get_submodule(target_module).state_dict()
        for key, value in source.get_submodule(source_module).state_dict().items():
            dest = target_tensors[key]
            if dest.shape != value.shape:
                raise ClassicNetsError(
                    f"warm_start: {_name(source)}'s {source_module}.{key} has shape {tuple(value.shape)} but "
                    f"{_name(target)}'s {target_module}.{key} has {tuple(dest.shape)}: build both with the "
                    "same width, in_channels, num_classes and input_size"
                )
            copies.append((f"{target_module}.{key}", dest, value))
    with torch.no_grad():
        for _, dest, value in copies:
            dest.copy_(value)
    return [name for name, _, _ in copies]
