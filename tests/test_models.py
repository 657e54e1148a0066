"""The model zoo: every net builds, trains a step at its smallest input, and refuses bad input clearly."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import classicnets
from classicnets.errors import ClassicNetsError
from classicnets.models import (
    AuxOutputs,
    alexnet_d2l,
    alexnet_paper,
    create_model,
    googlenet,
    googlenet_bn,
    lenet,
    list_models,
    load_weights,
    min_input_size,
    model_info,
    nin,
    vgg11,
    vgg11_lrn,
    vgg16,
    vgg16_c,
)
from classicnets.models.dense import to_dense
from classicnets.models.layers import Dropout

ALL = list_models()
SMALL_WIDTH = {"lenet": 0.5}  # the smallest tidy width per net (others: 1/8)


def small(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    options = {"num_classes": 3, "in_channels": 1, "width": SMALL_WIDTH.get(name, 0.125), **kwargs}
    return create_model(name, **options)


def test_list_models_has_every_net_of_the_papers():
    vgg = [f"{n}{bn}" for n in ("vgg11", "vgg11_lrn", "vgg13", "vgg16_c", "vgg16", "vgg19") for bn in ("", "_bn")]
    others = ["alexnet", "alexnet_paper", "alexnet_d2l", "nin", "googlenet", "googlenet_bn", "lenet"]
    assert sorted(ALL) == sorted(vgg + others)
    assert ALL[0] == "vgg11" and ALL[-1] == "lenet"
    assert classicnets.list_models() == ALL


@pytest.mark.parametrize("name", ALL)
def test_every_net_trains_a_step_at_its_smallest_input(name):
    model = small(name).train()
    m = model.min_input_size
    logits = model(torch.randn(2, 1, m, m))
    assert logits.shape == (2, 3)
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)


@pytest.mark.parametrize("name", ALL)
def test_features_then_head_is_the_forward_pass(name):
    model = small(name).eval()
    x = torch.randn(2, 1, model.min_input_size + 5, model.min_input_size)
    with torch.no_grad():
        assert torch.allclose(model.forward_head(model.forward_features(x)), model(x))
    assert (model.num_classes, model.in_channels) == (3, 1)


@pytest.mark.parametrize("name", ALL)
def test_input_one_pixel_below_the_minimum_is_refused_naming_the_minimum(name):
    model = small(name)
    m = model.min_input_size
    with pytest.raises(ClassicNetsError, match=rf"^{name} needs inputs of at least {m}x{m} \(.*\); got {m - 1}x{m}"):
        model(torch.randn(1, 1, m - 1, m))


@pytest.mark.parametrize("name", ALL)
def test_the_minimum_is_tight_since_the_layers_themselves_fail_below_it(name):
    model = small(name).eval()
    m = model.min_input_size
    with pytest.raises(RuntimeError, match="(?i)output size is too small|kernel size can't be greater"):
        model.forward_features(torch.randn(1, 1, m - 1, m - 1))


@pytest.mark.parametrize("name", ALL)
def test_building_for_an_input_size_below_the_minimum_is_refused(name):
    m = model_info(name)["min_input_size"]
    with pytest.raises(ClassicNetsError, match=rf"at least {m}x{m} .*got input_size={m - 1}:"):
        small(name, input_size=m - 1)


def test_min_input_sizes_follow_from_the_strides():
    sizes = {name: model_info(name)["min_input_size"] for name in ALL}
    assert {sizes[n] for n in ALL if n.startswith("vgg")} == {32}
    assert sizes["alexnet"] == 63  # torchvision's own meta says 63
    assert sizes["googlenet_bn"] == 15  # and 15 here
    assert sizes["lenet"] == 12
    msg = "vgg16 needs inputs of at least 32x32 (5 max-pools 2x2/2); got 28x28: resize or pad the images"
    with pytest.raises(ClassicNetsError, match=re.escape(msg)):
        small("vgg16")(torch.randn(1, 1, 28, 28))


IMAGENET_PARAMS = {
    "vgg11": 132_863_336, "vgg11_lrn": 132_863_336, "vgg13": 133_047_848, "vgg16_c": 133_638_952,
    "vgg16": 138_357_544, "vgg19": 143_667_240, "vgg11_bn": 132_868_840, "vgg16_bn": 138_365_992,
    "alexnet": 61_100_840, "googlenet_bn": 6_624_904,
}


@pytest.mark.parametrize("name", IMAGENET_PARAMS)
def test_imagenet_parameter_counts_match_the_paper_and_torchvision(name):
    assert model_info(name)["imagenet_params"] == IMAGENET_PARAMS[name]


def test_model_info_describes_a_net_without_building_it():
    info = model_info("vgg16_c")
    assert info["family"] == "vgg" and "Simonyan" in info["paper"]
    assert info["torchvision"] is None and model_info("vgg16")["torchvision"] == "vgg16"
    assert info["min_input_size"] == 32 and "1x1" in info["description"]
    assert info["options"]["width"] == 1.0 and info["options"]["head"] == "fc"
    assert model_info("alexnet_d2l")["options"]["in_channels"] == 1
    assert model_info("googlenet_bn")["options"]["dropout"] == 0.2
    info["family"] = "changed"
    assert model_info("vgg16_c")["family"] == "vgg"


def test_vgg_classifier_is_sized_from_the_real_feature_map():
    with torch.device("meta"):
        assert vgg11(input_size=224).classifier[0].in_features == 512 * 7 * 7
    at_32 = vgg11(input_size=32, num_classes=10)
    assert at_32.classifier[0].in_features == 512 and at_32.avgpool.output_size == (1, 1)
    tutorial = vgg11(in_channels=1, num_classes=10, width=0.25, input_size=64)
    assert [tutorial.classifier[i].out_features for i in (0, 3, 6)] == [1024, 1024, 10]
    assert tutorial.classifier[0].in_features == 128 * 2 * 2


def test_vgg11_at_quarter_width_gives_the_tutorials_block_outputs():
    with torch.device("meta"):
        model = vgg11(in_channels=1, num_classes=10, width=0.25)
        x = torch.empty(1, 1, 224, 224)
        shapes = []
        for layer in model.features:
            x = layer(x)
            if isinstance(layer, nn.MaxPool2d):
                shapes.append(tuple(x.shape[1:]))
        out = model(torch.empty(1, 1, 224, 224))
    assert shapes == [(16, 112, 112), (32, 56, 56), (64, 28, 28), (128, 14, 14), (128, 7, 7)]
    assert out.shape == (1, 10)


def test_vgg_takes_larger_and_non_square_inputs_than_it_was_built_for():
    model = small("vgg11", input_size=32).eval()
    assert model(torch.randn(1, 1, 64, 96)).shape == (1, 3)


def test_vgg_gap_head_is_global_pooling_and_one_linear_layer():
    model = small("vgg13", head="gap")
    assert isinstance(model.avgpool, nn.AdaptiveAvgPool2d) and model.avgpool.output_size == 1
    assert [type(m) for m in model.classifier] == [nn.Linear]
    assert model.classifier[0].in_features == 64
    assert model(torch.randn(2, 1, 48, 48)).shape == (2, 3)


def test_vgg_lrn_follows_the_first_conv_with_the_alexnet_formula():
    model = vgg11_lrn(width=0.125, input_size=32, num_classes=3)
    assert [type(m) for m in model.features[:4]] == [nn.Conv2d, nn.ReLU, nn.LocalResponseNorm, nn.MaxPool2d]
    a = torch.rand(1, 8, 2, 2) * 40
    # Krizhevsky et al. 2012 sec. 3.3: b_i = a_i / (k + alpha * sum_{j within n/2 of i} a_j^2)^beta
    sq = torch.nn.functional.pad(a.pow(2), (0, 0, 0, 0, 2, 2))
    window = sum(sq[:, i : i + 8] for i in range(5))
    expected = a / (2 + 1e-4 * window).pow(0.75)
    assert torch.allclose(model.features[2](a), expected, rtol=1e-5)


def test_vgg_c_has_1x1_convs_as_the_third_conv_of_blocks_3_to_5():
    with torch.device("meta"):
        model = vgg16_c()
    kernels = [m.kernel_size[0] for m in model.features if isinstance(m, nn.Conv2d)]
    assert kernels == [3] * 6 + [1] + [3, 3, 1] + [3, 3, 1]
    assert [m.padding[0] for m in model.features if isinstance(m, nn.Conv2d)][6] == 0


def test_vgg_width_that_leaves_no_channels_is_refused():
    with pytest.raises(ClassicNetsError, match=r"vgg11: width=0.01 leaves its 64-channel layers with 0 "
                                               r"channels; use width >= 0.015625"):
        vgg11(width=0.01)
    assert vgg11(width=0.015625, input_size=32).features[0].out_channels == 1


def test_alexnet_paper_is_the_2012_single_tower_net():
    with torch.device("meta"):
        model = alexnet_paper()
        feature_map = model.features(torch.empty(1, 3, 224, 224)).shape
    convs = [m for m in model.features if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert (convs[0].kernel_size, convs[0].stride) == ((11, 11), (4, 4))
    kinds = [type(m).__name__ for m in model.features if not isinstance(m, nn.ReLU)]
    assert kinds[:6] == ["Conv2d", "LocalResponseNorm", "MaxPool2d", "Conv2d", "LocalResponseNorm", "MaxPool2d"]
    pools = [m for m in model.features if isinstance(m, nn.MaxPool2d)]
    assert all((p.kernel_size, p.stride) == (3, 2) for p in pools)  # overlapping pooling, sec. 3.4
    assert feature_map == (1, 256, 6, 6)
    assert [type(m) for m in model.classifier] == [nn.Linear, nn.ReLU, Dropout] * 2 + [nn.Linear]
    assert model.classifier[3].out_features == 4096


def test_alexnet_d2l_is_the_tutorials_fashion_mnist_net():
    with torch.device("meta"):
        model = alexnet_d2l()
        out = model(torch.empty(2, 1, 224, 224))
    assert (model.in_channels, model.num_classes, out.shape) == (1, 10, (2, 10))
    assert model.classifier[0].in_features == 6400
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in model.modules())


def test_nin_ends_in_one_map_per_class_and_global_pooling():
    model = nin(num_classes=5, in_channels=1, width=0.125, input_size=67).eval()
    x = torch.randn(1, 1, 128, 128)
    with torch.no_grad():
        maps = model.forward_features(x)
        assert maps.shape[:2] == (1, 5) and maps.shape[2] > 1
        assert torch.allclose(model(x), maps.mean((2, 3)), atol=1e-6)
    assert not any(isinstance(m, nn.Linear) for m in model.modules())


def test_lenet_takes_28x28_fashion_mnist_and_offers_the_d2l_sigmoid():
    model = lenet()
    assert (model.in_channels, model.num_classes, model.input_size) == (1, 10, 28)
    assert model.classifier[0].in_features == 16 * 5 * 5
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert any(isinstance(m, nn.Sigmoid) for m in lenet(activation="sigmoid").modules())
    with pytest.raises(ClassicNetsError, match="activation must be one of relu, sigmoid, tanh; got 'gelu'"):
        lenet(activation="gelu")


def test_googlenet_aux_heads_return_aux_outputs_only_in_training():
    model = googlenet(aux_logits=True, num_classes=4, width=0.125, input_size=96)
    assert model.aux_weight == 0.3
    out = model.train()(torch.randn(2, 3, 96, 96))
    assert isinstance(out, AuxOutputs) and out.logits.shape == (2, 4)
    assert len(out.aux) == 2 and all(a.shape == (2, 4) for a in out.aux)
    assert model.eval()(torch.randn(2, 3, 96, 96)).shape == (2, 4)
    assert isinstance(googlenet(width=0.125).train()(torch.randn(2, 3, 64, 64)), torch.Tensor)


def test_googlenet_paper_form_has_lrn_and_5x5_where_torchvision_has_bn_and_3x3():
    with torch.device("meta"):
        paper, tv = googlenet(), googlenet_bn()
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)
    assert tv.inception3a.branch3[1].conv.kernel_size == (3, 3)
    assert isinstance(paper.lrn1, nn.LocalResponseNorm) and isinstance(paper.lrn2, nn.LocalResponseNorm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in paper.modules())
    assert not any(isinstance(m, nn.LocalResponseNorm) for m in tv.modules())
    assert (paper.dropout.p, tv.dropout.p) == (0.4, 0.2)


def test_googlenet_paper_aux_heads_need_a_larger_input():
    # The paper's aux head pools 5x5/3 on the 4a map: 224 gives 14 -> 4x4, as in the paper.
    model = googlenet(aux_logits=True, width=0.125)
    assert model.aux1.fc1.in_features == 16 * 4 * 4
    assert model.min_input_size > model_info("googlenet")["min_input_size"]
    m = model.min_input_size
    assert isinstance(model.train()(torch.randn(1, 3, m, m)), AuxOutputs)


# --- Errors the user can fix ------------------------------------------------------------------------------

def test_unknown_model_suggests_close_names():
    with pytest.raises(ClassicNetsError, match=r"^unknown model 'vgg161'; did you mean vgg16.*\? "
                                               r"\(classicnets list shows all\)$"):
        create_model("vgg161")
    with pytest.raises(ClassicNetsError, match="known models: vgg11, vgg11_bn"):
        create_model("resnet50")


def test_model_names_are_forgiving_about_case_and_dashes():
    assert create_model("VGG11-BN", width=0.125, input_size=32).name == "vgg11_bn"


def test_unknown_option_is_named_with_a_suggestion():
    with pytest.raises(ClassicNetsError, match=r"vgg16 has no option 'widht' \(did you mean width\?\); "
                                               r"its options are num_classes, in_channels"):
        create_model("vgg16", widht=0.5)
    with pytest.raises(ClassicNetsError, match="googlenet has no option 'head'"):
        create_model("googlenet", head="gap")


@pytest.mark.parametrize(("options", "message"), [
    ({"head": "mlp"}, "head must be 'fc' .* or 'gap' .*; got 'mlp'"),
    ({"num_classes": 0}, "num_classes must be a positive integer; got 0"),
    ({"in_channels": 2.5}, "in_channels must be a positive integer; got 2.5"),
    ({"width": -1}, "width must be a positive number"),
    ({"dropout": 1.5}, r"dropout must be a probability in \[0, 1\); got 1.5"),
    ({"init": "lecun"}, "unknown init scheme 'lecun'; choose one of kaiming, he, xavier, normal, alexnet"),
    ({"input_size": "224"}, "input_size must be an integer"),
])
def test_bad_options_are_refused_by_name(options, message):
    with pytest.raises(ClassicNetsError, match=message):
        create_model("vgg11", **{"width": 0.125, **options})


def test_wrong_channels_or_rank_at_forward_is_refused_with_the_fix():
    model = small("vgg11")
    with pytest.raises(ClassicNetsError, match="built for 1-channel input; got 3 channels: build it with "
                                               "in_channels=3"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ClassicNetsError, match=r"batch N x C x H x W; got a tensor of shape \(1, 32, 32\)"):
        model(torch.randn(1, 32, 32))


@pytest.mark.parametrize("prefix", ["", "module.", "_orig_mod.", "module._orig_mod."])
def test_load_weights_round_trips_and_unwraps_ddp_and_compile_prefixes(prefix):
    source, target = small("alexnet_paper"), small("alexnet_paper")
    torch.nn.init.normal_(source.features[0].weight)
    load_weights(target, {prefix + k: v for k, v in source.state_dict().items()})
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), target.state_dict().values()))


def test_load_weights_names_the_first_mismatching_key():
    model = small("vgg11")
    other = small("vgg11", num_classes=5).state_dict()
    with pytest.raises(ClassicNetsError, match=r"the weights' 'classifier.6.weight' has shape \(5, 512\) but "
                                               r"vgg11's has \(3, 512\): build the model with the options"):
        load_weights(model, other)
    state = model.state_dict()
    missing = {k: v for k, v in state.items() if k != "features.3.bias"}
    with pytest.raises(ClassicNetsError, match="the weights lack 'features.3.bias', which vgg11 has"):
        load_weights(model, missing)
    with pytest.raises(ClassicNetsError, match="the weights have 'extra.weight', which vgg11 lacks"):
        load_weights(model, {**state, "extra.weight": torch.zeros(1)})
    aux_state = small("googlenet_bn", aux_logits=True).state_dict()
    with pytest.raises(ClassicNetsError, match="which googlenet_bn lacks: build it with aux_logits=True"):
        load_weights(small("googlenet_bn"), aux_state)


# --- Dense evaluation form ---------------------------------------------------------------------------------

DENSE_SIZES = {"vgg": 64, "alexnet": 127, "nin": 67, "googlenet": 64, "lenet": 28}


@pytest.mark.parametrize("name", ALL)
def test_dense_form_averages_to_the_net_at_the_training_size(name):
    size = DENSE_SIZES[model_info(name)["family"]]
    model = small(name, input_size=size).eval()
    dense = to_dense(model).eval()
    x = torch.randn(2, 1, size, size)
    with torch.no_grad():
        maps = dense(x)
        assert maps.shape[:2] == (2, 3)
        assert torch.allclose(maps.mean((2, 3)), model(x), atol=1e-5)
        bigger = dense(torch.randn(1, 1, size + 32, size + 48))
    assert bigger.shape[0] == 1 and bigger.shape[1] == 3 and bigger.shape[3] > 1


def test_dense_vgg_slides_the_classifier_over_the_feature_map():
    model = small("vgg11", input_size=64).eval()  # 2x2 final map: the first FC becomes a 2x2 conv
    dense = to_dense(model)
    assert dense.head[0].kernel_size == (2, 2)
    assert dense.head[0].weight.data_ptr() == model.classifier[0].weight.data_ptr()  # a view, not a copy
    x = torch.randn(1, 1, 128, 96)
    with torch.no_grad():
        maps = dense(x)
        features = model.forward_features(x)
        window = model.classifier(features[..., 1:3, 1:3].flatten(1))
    assert maps.shape == (1, 3, 3, 2)
    assert torch.allclose(maps[0, :, 1, 1], window[0], atol=1e-5)


def test_dense_form_refuses_inputs_below_the_training_size_and_foreign_nets():
    dense = to_dense(small("vgg11", input_size=64).eval())
    assert dense.min_input_size == 64
    with pytest.raises(ClassicNetsError, match=r"dense vgg11 needs inputs of at least 64x64 \(its first FC "
                                               r"layer became a 2x2 conv over the final feature map\); got 48x64"):
        dense(torch.randn(1, 1, 48, 64))
    assert to_dense(small("vgg11", input_size=224, head="gap")).min_input_size == 32
    with pytest.raises(ClassicNetsError, match="to_dense converts classicnets nets"):
        to_dense(nn.Sequential(nn.Linear(2, 2)))


def test_building_on_the_meta_device_costs_nothing_and_counts_right():
    with torch.device("meta"):
        model = vgg16()
    assert sum(p.numel() for p in model.parameters()) == 138_357_544


# --- Dropout: the CPU mask drawn 16 bits at a time ------------------------------------------------------

@pytest.mark.parametrize("p", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_dropout_keeps_1_minus_p_and_scales_the_rest_like_torch(p, dtype):
    torch.manual_seed(0)
    x = torch.ones(400, 1000, dtype=dtype, requires_grad=True)
    y = Dropout(p).train()(x)
    kept = y != 0
    # 400k draws: the kept share is within 5 standard deviations (~0.004) of 1 - p
    assert abs(kept.float().mean().item() - (1 - p)) < 0.004
    assert y.dtype == dtype
    torch.testing.assert_close(y[kept].float(), torch.full_like(y[kept].float(), 1 / (1 - p)), rtol=1e-2, atol=0)
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # the gradient is the same mask and scale


def test_dropout_mask_is_fresh_each_call_and_repeats_with_the_seed():
    layer = Dropout(0.5).train()
    x = torch.ones(64, 256)
    torch.manual_seed(3)
    a, b = layer(x), layer(x)
    torch.manual_seed(3)
    assert not torch.equal(a, b)
    assert torch.equal(layer(x), a)


def test_dropout_draws_are_uniform_over_all_16_bits():
    # a biased bit (say, the sign bit of each 64-bit word) would make p = 0.5 keep 5/8 or 3/8 of a group
    torch.manual_seed(0)
    kept = (Dropout(0.5).train()(torch.ones(100_000, 4)) != 0).float().mean(0)  # the four draws of a word
    assert torch.all((kept - 0.5).abs() < 0.01), kept


def test_dropout_in_place_on_4d_maps_and_identity_in_eval_or_at_zero():
    torch.manual_seed(0)
    x = torch.randn(8, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    y = Dropout(0.5, inplace=True).train()(x)
    assert y.data_ptr() == x.data_ptr() and (x == 0).any()
    z = torch.randn(8, 16)
    assert torch.equal(Dropout(0.5).eval()(z), z)
    assert torch.equal(Dropout(0.0).train()(z), z)
    assert torch.equal(Dropout(1.0).train()(z), torch.zeros_like(z))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg11", "alexnet", "nin", "googlenet"])
def test_every_nets_dropout_is_the_fast_one(name):
    net = create_model(name, num_classes=10)
    drops = [m for m in net.modules() if isinstance(m, nn.Dropout)]
    assert drops and all(isinstance(m, Dropout) for m in drops)


def tutorial_001_vgg11() -> nn.Sequential:
    """VGG-11 as tutorial 001 (d2l ch. 7.2) builds it: a quarter of the conv channels, both 4096-unit FC layers."""
    blocks, in_channels = [], 1
    for convs, out_channels in [(n, c // 4) for n, c in ((1, 64), (1, 128), (2, 256), (2, 512), (2, 512))]:
        layers = []
        for _ in range(convs):
            layers += [nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1), nn.ReLU()]
            in_channels = out_channels
        blocks.append(nn.Sequential(*layers, nn.MaxPool2d(kernel_size=2, stride=2)))
    return nn.Sequential(*blocks, nn.Flatten(), nn.Linear(128 * 7 * 7, 4096), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(4096, 4096), nn.ReLU(), nn.Dropout(0.5), nn.Linear(4096, 10))


def test_fc_width_builds_the_tutorials_vgg11_exactly():
    torch.manual_seed(0)
    theirs = tutorial_001_vgg11().eval()
    ours = create_model("vgg11", num_classes=10, in_channels=1, input_size=224, width=0.25, fc_width=4096).eval()
    assert sum(p.numel() for p in theirs.parameters()) == sum(p.numel() for p in ours.parameters()) == 43_093_322
    with torch.no_grad():  # the same tensors in the same order give the same outputs
        for mine, their in zip(ours.parameters(), theirs.parameters(), strict=True):
            mine.copy_(their)
        x = torch.rand(2, 1, 224, 224)
        assert torch.allclose(ours(x), theirs(x), atol=1e-5)
    # without it, width scales the FC layers too (the paper's 4096 x width)
    assert create_model("vgg11", num_classes=10, in_channels=1, width=0.25).classifier[0].out_features == 1024
    assert create_model("alexnet_d2l", fc_width=512).classifier[-1].in_features == 512
    assert "fc_width must be a whole number" in str(pytest.raises(
        ClassicNetsError, create_model, "vgg11", fc_width=0.5).value)
    assert "has no option 'fc_width'" in str(pytest.raises(ClassicNetsError, create_model, "nin", fc_width=8).value)


def test_ceil_mode_takes_28x28_through_vggs_five_pools_and_changes_nothing_at_even_sizes():
    floor = create_model("vgg11_bn", num_classes=10, in_channels=1, input_size=32, width=0.25, head="gap").eval()
    ceil = create_model("vgg11_bn", num_classes=10, in_channels=1, input_size=28, width=0.25, head="gap",
                        ceil_mode=True).eval()
    ceil.load_state_dict(floor.state_dict())  # pooling has no weights: torchvision's files load as before
    assert ceil.min_input_size == 1 and floor.min_input_size == 32
    sizes = []
    hooks = [m.register_forward_hook(lambda m, i, o: sizes.append(o.shape[-1]))
             for m in ceil.features if isinstance(m, nn.MaxPool2d)]
    with torch.no_grad():
        assert ceil(torch.rand(2, 1, 28, 28)).shape == (2, 10)
        assert sizes == [14, 7, 4, 2, 1]  # the odd 7x7 map keeps its last row and column
        for h in hooks:
            h.remove()
        x = torch.rand(2, 1, 32, 32)  # every map even: rounding up changes nothing
        assert torch.equal(ceil(x), floor(x))
    # the FC head is sized from the final map at input_size, as with floor pools
    fc = create_model("vgg11", num_classes=10, in_channels=1, input_size=28, width=0.25, ceil_mode=True)
    assert fc.classifier[0].in_features == 128 and fc(torch.rand(1, 1, 28, 28)).shape == (1, 10)
    assert "ceil_mode must be True or False" in str(pytest.raises(
        ClassicNetsError, create_model, "vgg11", ceil_mode="yes").value)
    assert "has no option 'ceil_mode'" in str(pytest.raises(ClassicNetsError, create_model, "nin", ceil_mode=True).value)
    assert min_input_size("vgg16", ceil_mode=True) == 1 and min_input_size("vgg16") == 32
