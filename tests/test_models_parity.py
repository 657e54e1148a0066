"""Parity with torchvision: same state_dict keys and shapes, and the same outputs from the same weights.

torchvision's models are randomly initialised here (nothing is downloaded). Full-size VGGs cost ~2 s each
to build, so the complete forward comparison runs for vgg11 and vgg11_bn at 224; the deeper VGGs compare
keys and shapes (on the meta device) and their conv stacks' outputs, since the head is the same code.
"""

from __future__ import annotations

import pytest
import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import vgg as tv_vgg

from classicnets.models import create_model
from classicnets.models.vgg import VGG_CONFIG

TV_VGG = ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn"]


def torchvision_net(name: str, **kwargs) -> nn.Module:
    if name == "googlenet_bn":
        return tvm.GoogLeNet(init_weights=True, transform_input=False, **kwargs)
    return getattr(tvm, name)(weights=None, **kwargs)


def shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


def randomise_batch_norm(model: nn.Module) -> nn.Module:
    # Fresh BN layers are the identity in eval mode, which would hide a misplaced BN.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(m.weight, 1.0, 0.2)
            nn.init.normal_(m.bias, 0.0, 0.2)
    return model


def ours_with_weights_of(theirs: nn.Module, name: str, **kwargs) -> nn.Module:
    """Our net holding torchvision's tensors: built on meta, then given them (strict load, no copy)."""
    with torch.device("meta"):
        ours = create_model(name, init=None, **kwargs)
    ours.load_state_dict(theirs.state_dict(), strict=True, assign=True)
    return ours.eval()


@pytest.mark.parametrize("name", [*TV_VGG, "alexnet"])
def test_state_dict_keys_and_shapes_equal_torchvisions(name):
    with torch.device("meta"):
        assert shapes(create_model(name)) == shapes(torchvision_net(name))


@pytest.mark.parametrize("aux_logits", [False, True])
def test_googlenet_bn_state_dict_equals_torchvisions_googlenet(aux_logits):
    with torch.device("meta"):
        ours = create_model("googlenet_bn", aux_logits=aux_logits)
        theirs = torchvision_net("googlenet_bn", aux_logits=aux_logits)
    assert shapes(ours) == shapes(theirs)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "vgg11_bn", "alexnet"])
def test_outputs_equal_torchvisions_at_224(name):
    torch.manual_seed(0)
    theirs = randomise_batch_norm(torchvision_net(name)).eval()
    ours = ours_with_weights_of(theirs, name)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        expected = theirs(x)
        assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-5)
        # Smaller inputs go through the same adaptive pooling as torchvision's.
        small = torch.randn(1, 3, 96, 80)
        assert torch.allclose(ours(small), theirs(small), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [n for n in TV_VGG if not n.startswith("vgg11")])
def test_deeper_vgg_conv_stacks_equal_torchvisions(name):
    torch.manual_seed(0)
    config = VGG_CONFIG[name.removesuffix("_bn")]
    theirs = randomise_batch_norm(tv_vgg.make_layers(tv_vgg.cfgs[config], batch_norm=name.endswith("_bn")))
    with torch.device("meta"):
        ours = create_model(name, init=None)
    ours.features.to_empty(device="cpu").load_state_dict(theirs.state_dict())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(ours.features.eval()(x), theirs.eval()(x), rtol=1e-4, atol=1e-5)


def test_googlenet_bn_outputs_and_aux_heads_equal_torchvisions():
    torch.manual_seed(0)
    theirs = randomise_batch_norm(torchvision_net("googlenet_bn", aux_logits=True)).eval()
    ours = ours_with_weights_of(theirs, "googlenet_bn", aux_logits=True)
    x = torch.randn(1, 3, 224, 224)
    at_4a, at_4d = torch.randn(1, 512, 14, 14), torch.randn(1, 528, 14, 14)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours.aux1(at_4a), theirs.aux1(at_4a), rtol=1e-4, atol=1e-5)
        assert torch.allclose(ours.aux2(at_4d), theirs.aux2(at_4d), rtol=1e-4, atol=1e-5)
