"""timm's and torchvision's generic model checks, adapted to classicnets, for every registered net.

Kept apart from test_models.py on purpose: these are the checks other libraries run on their own nets
(timm tests/test_models.py, torchvision test/test_models.py), so that code written for them takes ours:
forward and backward, batch 1, channels_last and bf16, TorchScript, torch.fx, torchvision's feature
extraction and torch.export each equal to eager, timm's classifier and feature surface, the VGG taps by
the literature's names, and torch.hub. Nets are built narrow and small (width 1/4, 64x64) so the whole
zoo runs on 2 CPU cores; five nets, one per family, are in the quick subset, the rest are marked slow.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor, get_graph_node_names

from classicnets.models import (
    FeatureInfo,
    FeatureMaps,
    create_model,
    feature_extractor,
    list_models,
    model_info,
    tap_names,
    vgg16,
    vgg16_bn,
    vgg19,
)
from helpers import error_of

REPO = Path(__file__).resolve().parents[1]
QUICK = {"vgg11_bn", "alexnet", "nin", "googlenet_bn", "lenet"}  # one per family, in the quick subset
CLASSES = 7
TOL = 1e-5


def zoo():
    return [pytest.param(n, marks=() if n in QUICK else pytest.mark.slow) for n in list_models()]


def small(name: str, **kwargs) -> nn.Module:
    options = {"num_classes": CLASSES, **({} if name == "lenet" else {"width": 0.25}), **kwargs}
    with torch.device("meta"):  # the smallest input these options take (GoogLeNet's aux heads need more)
        smallest = create_model(name, **options).min_input_size
    torch.manual_seed(0)
    return create_model(name, input_size=28 if name == "lenet" else max(64, smallest), **options)


def batch_for(model: nn.Module, n: int = 2, size: int | None = None) -> torch.Tensor:
    size = size or model.input_size
    return torch.randn(n, model.in_channels, size, size, generator=torch.Generator().manual_seed(1))


def close(a: torch.Tensor, b: torch.Tensor, tol: float = TOL) -> bool:
    return a.shape == b.shape and float((a - b).abs().max()) <= tol


@pytest.fixture(autouse=True)
def quiet_deprecations():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit.script is deprecated upstream, still works
        yield


# --- timm: forward, backward, batch 1, memory format, precision ------------------------------------------

@pytest.mark.parametrize("name", zoo())
def test_forward_backward_reaches_every_parameter(name):
    model = small(name, **({"aux_logits": True} if name.startswith("googlenet") else {})).train()
    out = model(batch_for(model))
    logits = out.logits if hasattr(out, "logits") else out
    assert logits.shape == (2, CLASSES) and torch.isfinite(logits).all()
    loss = logits.sum() + sum(a.sum() for a in getattr(out, "aux", ()))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, f"no gradient reached {missing[:3]}"


@pytest.mark.parametrize("name", zoo())
def test_batch_of_one_channels_last_and_bf16_agree_with_the_float_batch(name):
    model = small(name).eval()
    x = batch_for(model, 3)
    with torch.no_grad():
        ref = model(x)
        assert close(model(x[:1]), ref[:1], 1e-4)
        last = model.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
        assert close(last, ref, 1e-4)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(x).float()
    assert torch.isfinite(low).all() and float((low - ref).abs().max()) < 0.1 * float(ref.abs().max()) + 0.05


# --- TorchScript, torch.fx, feature extraction, torch.export: each equal to eager -----------------------

@pytest.mark.parametrize("name", zoo())
def test_torchscript_matches_eager_and_keeps_the_input_check(name):
    model = small(name).eval()
    x = batch_for(model)
    scripted = torch.jit.script(model)
    with torch.no_grad():
        assert close(scripted(x), model(x))
    with pytest.raises(torch.jit.Error, match="built for"):
        scripted(torch.randn(1, model.in_channels + 1, model.input_size, model.input_size))


@pytest.mark.parametrize("name", zoo())
def test_fx_symbolic_trace_matches_eager_and_keeps_the_input_check(name):
    model = small(name).eval()
    x = batch_for(model)
    traced = torch.fx.symbolic_trace(model)
    with torch.no_grad():
        assert close(traced(x), model(x))
    small_side = model.min_input_size - 1
    if small_side >= 1:
        assert "needs inputs of at least" in error_of(lambda: traced(batch_for(model, 1, small_side)))
    assert "add a batch dimension" in error_of(lambda: traced(x[0]))


@pytest.mark.parametrize("name", zoo())
def test_create_feature_extractor_returns_every_stage_and_the_logits(name):
    """torchvision's own feature extraction, on the stage ends the net declares in feature_info."""
    model = small(name).eval()
    info = model.feature_info
    assert isinstance(info, FeatureInfo) and len(info) >= 3
    nodes = {d["module"]: f"stage{i}" for i, d in enumerate(info)}
    _, eval_nodes = get_graph_node_names(model)
    assert all(any(n == m or n.startswith(m + ".") for n in eval_nodes) for m in nodes)
    last_node = eval_nodes[-1]
    extractor = create_feature_extractor(model, return_nodes={**nodes, last_node: "logits"})
    x = batch_for(model)
    with torch.no_grad():
        out = extractor(x)
        assert close(out["logits"], model(x))
        assert close(out[f"stage{len(info) - 1}"], model.forward_features(x)) or name == "nin"
    sides = [out[f"stage{i}"].shape[-1] for i in range(len(info))]
    assert [out[f"stage{i}"].shape[1] for i in range(len(info))] == info.channels()
    assert sides == sorted(sides, reverse=True) and len(set(sides)) == len(sides), "one map per reduction"
    assert info.reduction() == sorted(info.reduction()) and info.reduction()[-1] == 32 or name == "lenet"
    for side, reduction in zip(sides, info.reduction()):
        assert abs(side - model.input_size / reduction) <= model.input_size / reduction / 2 + 1


@pytest.mark.parametrize("name", zoo())
def test_torch_export_with_a_free_batch_matches_eager(name):
    model = small(name).eval()
    program = torch.export.export(model, (batch_for(model, 2),),
                                  dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    x = batch_for(model, 5)
    with torch.no_grad():
        assert close(program.module()(x), model(x))


# --- timm's surface: classifier, features, config --------------------------------------------------------

@pytest.mark.parametrize("name", zoo())
def test_reset_classifier_get_classifier_and_num_classes_stay_true(name):
    model = small(name)
    assert model.num_classes == CLASSES and model.get_classifier() is dict(model.named_modules())[
        model.pretrained_cfg["classifier"]]
    x = batch_for(model)
    model.eval()
    with torch.no_grad():
        # NiN has no FC head: its last block makes the class maps, so its features are those maps
        assert model.forward_features(x).shape[1] == (CLASSES if name == "nin" else model.num_features)
        model.reset_classifier(0)
        assert model.num_classes == 0 and model(x).shape == (2, model.head_hidden_size)
        model.reset_classifier(3)
        assert model.num_classes == 3 and model(x).shape == (2, 3)
        if name not in ("nin",) and not name.startswith("googlenet"):  # torchvision's way: swap the last Linear
            model.classifier[-1] = nn.Linear(model.head_hidden_size, 4)
            assert model.num_classes == 4 and model(x).shape == (2, 4)
    assert "number of classes >= 0" in error_of(lambda: model.reset_classifier(-1))


def test_googlenet_reset_classifier_renews_the_aux_heads_too():
    model = small("googlenet_bn", aux_logits=True).train()
    model.reset_classifier(4)
    out = model(batch_for(model))
    assert out.logits.shape == (2, 4) and all(a.shape == (2, 4) for a in out.aux)


@pytest.mark.parametrize("name", zoo())
def test_pretrained_cfg_describes_the_input_and_names_real_layers(name):
    model = small(name, in_chans=1)
    cfg = model.pretrained_cfg
    assert cfg["input_size"] == (1, model.input_size, model.input_size) and cfg["num_classes"] == CLASSES
    assert len(cfg["mean"]) == len(cfg["std"]) == 1 and cfg["paper"] and cfg["architecture"] == name
    layers = dict(model.named_modules())
    assert isinstance(layers[cfg["first_conv"]], nn.Conv2d) and layers[cfg["first_conv"]].in_channels == 1
    assert model.default_cfg == cfg
    assert small(name).pretrained_cfg["mean"] == (0.485, 0.456, 0.406) or name in ("lenet", "alexnet_d2l")


@pytest.mark.parametrize("name", zoo())
def test_features_only_returns_the_maps_feature_info_describes(name):
    options = {} if name == "lenet" else {"width": 0.25, "input_size": max(64, model_info(name)["min_input_size"])}
    model = create_model(name, features_only=True, **options)
    assert isinstance(model, FeatureMaps)
    maps = model(batch_for(model))
    assert [m.shape[1] for m in maps] == model.feature_info.channels()
    picked = create_model(name, features_only=True, out_indices=(-1, 1), **options)
    assert picked.feature_info.module_name() == [model.feature_info.module_name(1), model.feature_info.module_name(-1)]
    assert [m.shape for m in picked(batch_for(model))] == [maps[1].shape, maps[-1].shape]


def test_bad_feature_requests_are_one_line_each():
    assert "has 6 feature maps" in error_of(lambda: create_model("vgg11", features_only=True, out_indices=(9,),
                                                                  width=0.25, input_size=32))
    assert "pass features_only=True" in error_of(lambda: create_model("vgg11", out_indices=(1,)))
    assert "at most once" in error_of(lambda: create_model("vgg11", features_only=True, out_indices=(1, 1),
                                                            width=0.25, input_size=32))


def test_timm_keywords_are_accepted():
    assert create_model("vgg11", in_chans=1, width=0.25, input_size=32, pretrained=False, weights=None).in_channels == 1
    assert create_model("lenet", drop_rate=0.3).classifier[2].p == 0.3
    assert "not both" in error_of(lambda: create_model("lenet", in_chans=1, in_channels=1))
    # pretrained=True means weights="imagenet" (tests/test_weights.py); with no cached file, offline: one line
    assert "not in torch's hub cache" in error_of(lambda: create_model("vgg11", pretrained=True))


def test_list_models_filters_like_timm():
    assert list_models("vgg1*") == [n for n in list_models() if n.startswith("vgg1")]
    assert list_models(["alexnet*", "nin"]) == ["alexnet", "alexnet_paper", "alexnet_d2l", "nin"]
    assert list_models("vgg*", exclude_filters="*_bn") == [n for n in list_models("vgg*") if not n.endswith("_bn")]
    assert set(list_models(pretrained=True)) == {"vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn",
                                                 "vgg19", "vgg19_bn", "alexnet", "googlenet_bn"}
    assert list_models("resnet*") == []


# --- VGG's taps by the perceptual-loss literature's names ------------------------------------------------

@pytest.mark.parametrize("build, tv_build, expected", [
    (vgg16, torchvision.models.vgg16, {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15, "relu4_3": 22, "relu5_3": 29,
                                       "conv1_1": 0, "conv4_3": 21, "pool5": 30}),
    (vgg19, torchvision.models.vgg19, {"relu1_2": 3, "relu2_2": 8, "relu3_4": 17, "relu4_4": 26, "relu5_4": 35,
                                       "conv5_4": 34, "pool4": 27}),
    (vgg16_bn, torchvision.models.vgg16_bn, {"conv1_1": 0, "bn1_1": 1, "relu1_2": 5, "relu4_3": 32,
                                             "relu5_3": 42}),
])
def test_vgg_tap_names_resolve_to_torchvisions_indices(build, tv_build, expected):
    with torch.device("meta"):
        ours, theirs = build(), tv_build()
    taps = tap_names(ours)
    kinds = {"conv": nn.Conv2d, "bn": nn.BatchNorm2d, "relu": nn.ReLU, "pool": nn.MaxPool2d}
    for tap, index in expected.items():
        assert taps[tap] == f"features.{index}"
        assert isinstance(theirs.features[index], kinds[tap.rstrip("_0123456789")])
    convs = [k for k in taps if k.startswith("conv")]
    assert len(convs) == sum(isinstance(m, nn.Conv2d) for m in theirs.features)


def test_feature_extractor_gives_the_named_maps_and_stops_at_the_last():
    model = vgg16(width=0.125, input_size=32).eval()
    extractor = feature_extractor(model, ["relu1_2", "relu2_2", "relu3_3", "relu4_3"])
    x = batch_for(model)
    with torch.no_grad():
        maps = extractor(x)
        assert list(maps) == ["relu1_2", "relu2_2", "relu3_3", "relu4_3"]
        assert close(maps["relu4_3"], model.features[:23](x))
        assert close(maps["relu1_2"], model.features[:4](x))
    called = {n.target for n in extractor.graph.nodes if n.op == "call_module"}
    assert "features.22" in called and not called & {"features.23", "features.29", "classifier.0"}
    assert list(feature_extractor(model, "features.8")(x)) == ["features.8"]


def test_feature_extractor_refuses_unknown_and_repeated_layers_with_one_line():
    model = vgg16(width=0.125, input_size=32)
    assert "did you mean relu4_3" in error_of(lambda: feature_extractor(model, ["relu4_33"]))
    assert "same layer (features.22)" in error_of(lambda: feature_extractor(model, ["relu4_3", "features.22"]))
    assert "at least one layer" in error_of(lambda: feature_extractor(model, []))
    extractor = feature_extractor(model, ["relu2_2"])
    assert "3-channel input; got 1" in error_of(lambda: extractor(torch.zeros(1, 1, 32, 32)))


# --- torch.hub ------------------------------------------------------------------------------------------

def test_hubconf_has_an_entry_per_net_and_loads_locally():
    net = torch.hub.load(str(REPO), "vgg16", source="local", num_classes=10, width=0.25, input_size=32,
                         trust_repo=True)
    assert type(net).__name__ == "VGG" and net.num_classes == 10
    spec = importlib.util.spec_from_file_location("hubconf_under_test", REPO / "hubconf.py")
    hub = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hub)
    entries = sorted(n for n in dir(hub) if not n.startswith("_") and callable(getattr(hub, n)))
    assert entries == sorted(list_models()) and hub.dependencies == ["torch", "torchvision"]
    assert hub.googlenet_bn.__doc__ and "vgg11 has no option" in error_of(lambda: hub.vgg11(colour=1))


@pytest.mark.slow
def test_the_readmes_feature_extraction_example_runs_as_written(tmp_path):
    text = (REPO / "README.md").read_text()
    section = text[text.index("### As parts"):]
    start = section.index("```python\n") + len("```python\n")
    script = tmp_path / "example.py"
    script.write_text(section[start:section.index("```\n", start)]
                      + "print([tuple(m.shape[1:]) for m in maps.values()][-1])\n")
    done = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["[256, 512, 512] [4, 8, 16]", "(512, 28, 28)"]
