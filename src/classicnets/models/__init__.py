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

from classicnets.errors import ClassicNetsError
from classicnets.models.alexnet import alexnet, alexnet_d2l, alexnet_paper
from classicnets.models.features import FeatureMaps, feature_extractor, tap_names
from classicnets.models.googlenet import googlenet, googlenet_bn
from classicnets.models.layers import AuxOutputs, ClassicNet, FeatureInfo
from classicnets.models.lenet import lenet
from classicnets.models.nin import nin
from classicnets.models.registry import create_model, list_models, min_input_size, model_info
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
from classicnets.models.weights import (
    LoadReport,
    Weights,
    load_into,
    load_weights,
    read_weights,
    unwrap_state_dict,
)

__all__ = [
    "AuxOutputs",
    "ClassicNet",
    "ClassicNetsError",
    "FeatureInfo",
    "FeatureMaps",
    "LoadReport",
    "Weights",
    "alexnet",
    "alexnet_d2l",
    "alexnet_paper",
    "create_model",
    "feature_extractor",
    "googlenet",
    "googlenet_bn",
    "lenet",
    "list_models",
    "load_into",
    "load_weights",
    "min_input_size",
    "model_info",
    "nin",
    "read_weights",
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
