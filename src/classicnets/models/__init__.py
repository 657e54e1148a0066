"""The model zoo: every net of the VGG, AlexNet, NiN, GoogLeNet and LeNet papers, one registry.

    >>> from classicnets.models import create_model, vgg11
    >>> net = vgg11(num_classes=10, in_channels=1, width=0.25)      # the tutorials' VGG-11
    >>> net = create_model("googlenet", aux_logits=True)

Every net has num_classes, in_channels, input_size, min_input_size, forward_features and forward_head, and
the surface timm and torchvision code expects: num_features, get_classifier(), reset_classifier(n),
pretrained_cfg, feature_info; it runs under torch.jit.script, torch.fx and torch.export.

    >>> from classicnets.models import feature_extractor
    >>> taps = feature_extractor(vgg16(), ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])   # {name: map}
    >>> backbone = create_model("vgg16", features_only=True)                              # [maps]
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models.alexnet import alexnet, alexnet_d2l, alexnet_paper
from classicnets.models.features import FeatureMaps, feature_extractor, tap_names
from classicnets.models.googlenet import googlenet, googlenet_bn
from classicnets.models.layers import AuxOutputs, ClassicNet, FeatureInfo
from classicnets.models.lenet import lenet
from classicnets.models.nin import nin
from classicnets.models.registry import create_model, list_models, model_info
from classicnets.models.vgg import (
    vgg11,
    vgg11_bn,
    vgg11_lrn,
    vgg11_lrn_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg16_c,
    vgg16_c_bn,
    vgg19,
    vgg19_bn,
)

# Prefixes that wrappers add to every key: DistributedDataParallel and torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")


def unwrap_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The state_dict without the prefixes DistributedDataParallel ("module.") and torch.compile
    ("_orig_mod.") add to every key, so it loads into the plain net."""
    state = dict(state_dict)
    for prefix in _WRAPPER_PREFIXES:
        if state and all(isinstance(k, str) and k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def load_weights(model: nn.Module, state_dict: Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state_dict strictly; on any mismatch raise ClassicNetsError naming the first bad key.

    Keys saved from a DDP- or torch.compile-wrapped model ("module." / "_orig_mod." prefixes) are
    unwrapped first. Returns the model.
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


__all__ = [
    "AuxOutputs",
    "ClassicNet",
    "ClassicNetsError",
    "FeatureInfo",
    "FeatureMaps",
    "alexnet",
    "alexnet_d2l",
    "alexnet_paper",
    "create_model",
    "feature_extractor",
    "googlenet",
    "googlenet_bn",
    "lenet",
    "list_models",
    "load_weights",
    "model_info",
    "nin",
    "tap_names",
    "unwrap_state_dict",
    "vgg11",
    "vgg11_bn",
    "vgg11_lrn",
    "vgg11_lrn_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg16_c",
    "vgg16_c_bn",
    "vgg19",
    "vgg19_bn",
]
