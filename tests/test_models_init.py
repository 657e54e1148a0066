"""Initialisation schemes (their statistics) and the VGG paper's warm start."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from classicnets.errors import ClassicNetsError
from classicnets.models import alexnet_paper, create_model, vgg11, vgg11_bn, vgg13_bn, vgg16
from classicnets.models.init import initialize, warm_start


def layers(model: nn.Module, kind: type) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, kind)]


@pytest.fixture(scope="module")
def net() -> nn.Module:
    # Quarter width at 64x64: a 1024x1024 FC layer and 128x128x3x3 convs give tight statistics.
    torch.manual_seed(0)
    return vgg11_bn(width=0.25, input_size=64, num_classes=10, init=None)


def close(value: float, expected: float, rel: float = 0.03) -> bool:
    return abs(value - expected) <= rel * expected


def test_kaiming_is_torchvisions_scheme(net):
    initialize(net, "kaiming")
    conv = net.features[-4]  # the last conv: 128 -> 128, 3x3
    assert close(conv.weight.std().item(), math.sqrt(2 / (128 * 9)))  # fan_out, ReLU gain
    hidden = net.classifier[3]
    assert close(hidden.weight.std().item(), 0.01) and abs(hidden.weight.mean().item()) < 1e-3
    assert all(m.bias.abs().sum() == 0 for m in layers(net, nn.Conv2d) + layers(net, nn.Linear))
    bn = layers(net, nn.BatchNorm2d)
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in bn)


def test_he_is_kaiming_fan_in_for_every_conv_and_fc_layer(net):
    initialize(net, "he")
    conv = net.features[-4]  # 128 -> 128, 3x3: fan_in 1152
    assert close(conv.weight.std().item(), math.sqrt(2 / (128 * 9)))
    first = layers(net, nn.Conv2d)[0]  # 3 -> 16 channels: fan_in 27, fan_out 144 would give a smaller std
    assert close(first.weight.std().item(), math.sqrt(2 / 27), rel=0.25)
    hidden = net.classifier[3]  # 1024 x 1024: He, not torchvision's N(0, 0.01)
    assert close(hidden.weight.std().item(), math.sqrt(2 / 1024))
    assert all(m.bias.abs().sum() == 0 for m in layers(net, nn.Conv2d) + layers(net, nn.Linear))


def test_xavier_is_glorot_uniform_with_zero_biases(net):
    initialize(net, "xavier")
    hidden = net.classifier[3].weight  # 1024 x 1024
    bound = math.sqrt(6 / (1024 + 1024))
    assert hidden.abs().max() <= bound and close(hidden.std().item(), bound / math.sqrt(3))
    conv = net.features[-4].weight
    assert close(conv.std().item(), math.sqrt(2 / (128 * 9 + 128 * 9)))
    assert all(m.bias.abs().sum() == 0 for m in layers(net, nn.Linear))


def test_normal_is_the_vgg_papers_n_0_001(net):
    with torch.no_grad():
        for bn in layers(net, nn.BatchNorm2d):
            bn.running_mean.fill_(3.0)
    initialize(net, "normal")
    for m in layers(net, nn.Conv2d)[3:] + layers(net, nn.Linear)[:2]:  # layers with >= 36,864 weights
        assert close(m.weight.std().item(), 0.01) and m.bias.abs().sum() == 0
    assert all(torch.all(bn.running_mean == 0) for bn in layers(net, nn.BatchNorm2d))


def test_alexnet_scheme_puts_unit_biases_in_conv_2_4_5_and_hidden_fc_layers():
    model = alexnet_paper(width=0.5, num_classes=10, init="alexnet")
    assert [m.bias.unique().tolist() for m in layers(model, nn.Conv2d)] == [[0.0], [1.0], [0.0], [1.0], [1.0]]
    assert [m.bias.unique().tolist() for m in layers(model, nn.Linear)] == [[1.0], [1.0], [0.0]]
    assert close(model.classifier[0].weight.std().item(), 0.01)
    assert close(layers(model, nn.Conv2d)[2].weight.std().item(), 0.01)


def test_alexnet_scheme_is_refused_for_nets_without_alexnets_layout():
    with pytest.raises(ClassicNetsError, match=r"vgg11 has 8 conv and 3 FC layers, not 5 and 3: use kaiming, "
                                               r"xavier or normal"):
        vgg11(width=0.125, input_size=32, init="alexnet")


def test_unknown_scheme_lists_the_valid_ones():
    with pytest.raises(ClassicNetsError, match="unknown init scheme 'glorot'; choose one of kaiming, he, "
                                               "xavier, normal, alexnet"):
        initialize(nn.Linear(2, 2), "glorot")


def test_builders_apply_their_init_option():
    torch.manual_seed(0)
    model = create_model("vgg11", width=0.25, input_size=32, init="normal")
    assert close(model.classifier[3].weight.std().item(), 0.01)


# --- Warm start -------------------------------------------------------------------------------------------

def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_warm_start_copies_a_trained_as_first_four_convs_and_three_fc_layers():
    torch.manual_seed(0)
    source = vgg11(width=0.125, input_size=32, num_classes=10)  # stands in for a trained net A
    target = vgg16(width=0.125, input_size=32, num_classes=10)
    before = snapshot(target)
    copied = warm_start(target, source)
    # A's convs sit at block 1 #1, block 2 #1, block 3 #1 and #2; in D those are features 0, 5, 10, 12.
    pairs = {"features.0": "features.0", "features.5": "features.3", "features.10": "features.6",
             "features.12": "features.8", "classifier.0": "classifier.0", "classifier.3": "classifier.3",
             "classifier.6": "classifier.6"}
    assert copied == [f"{t}.{p}" for t in pairs for p in ("weight", "bias")]
    after, src = target.state_dict(), source.state_dict()
    for t, s in pairs.items():
        for p in ("weight", "bias"):
            assert torch.equal(after[f"{t}.{p}"], src[f"{s}.{p}"])
    unchanged = [k for k in after if k not in copied]
    assert len(unchanged) == 2 * 9 and all(torch.equal(after[k], before[k]) for k in unchanged)


def test_warm_start_carries_batch_norm_with_its_conv():
    source = vgg11_bn(width=0.125, input_size=32)
    with torch.no_grad():
        source.features[1].running_mean.fill_(0.5)
    target = vgg13_bn(width=0.125, input_size=32)
    copied = warm_start(target, source)
    assert "features.1.running_mean" in copied and torch.all(target.features[1].running_mean == 0.5)
    assert len(copied) == 4 * 7 + 3 * 2  # conv weight, bias + 5 BN tensors per conv; 3 FC layers


@pytest.mark.parametrize(("source_options", "target_name", "message"), [
    ({"width": 0.25}, "vgg16", (r"vgg11's features.0.weight has shape \(16, 3, 3, 3\) but vgg16's "
                                r"features.0.weight has \(8, 3, 3, 3\): build both with the same width")),
    ({"num_classes": 7}, "vgg16", "classifier.6.weight has shape"),
    ({}, "vgg16_bn", "differ in batch norm"),
    ({"head": "gap"}, "vgg16", "the source is vgg11 with head='gap'"),
    ({}, "alexnet", "the target is alexnet"),
])
def test_warm_start_refuses_nets_that_do_not_fit(source_options, target_name, message):
    source = vgg11(input_size=32, **{"width": 0.125, **source_options})
    target = create_model(target_name, width=0.125, **({"input_size": 32} if target_name != "alexnet" else {}))
    before = snapshot(target)
    with pytest.raises(ClassicNetsError, match=message):
        warm_start(target, source)
    assert all(torch.equal(v, before[k]) for k, v in target.state_dict().items())
