"""Starting a net from trained weights: torchvision's ImageNet files through torch's hub cache, weights files
of every form, the shape rules of `load_into` and its report, and every refusal as one line.

No test touches the network. The issue's rule: randomly initialised torchvision-format state dicts are
written under the enum's own file name where torch's hub cache expects them ($TORCH_HOME/hub/checkpoints),
here in a TORCH_HOME of this module, so the session's own stays empty for the tests that expect no cached
file (tests/test_ecosystem.py); downloads come from file:// URLs. GoogLeNet's file (49 MB) serves the quick
tests, VGG-11's (507 MB) only the slow ones.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torchvision
from torch import nn
from torchvision.models import GoogLeNet_Weights, VGG11_Weights, VGG16_Weights

import classicnets
from classicnets.export import export
from classicnets.models import create_model, list_models
from classicnets.models import weights as weights_mod
from classicnets.models.weights import imagenet_indices, imagenet_synsets, torchvision_weights
from classicnets.training import checkpoint
from helpers import error_of

GOOGLENET = GoogLeNet_Weights.IMAGENET1K_V1
FILE = os.path.basename(GOOGLENET.url)  # googlenet-1378be20.pth
TOL = 1e-4
# Tiny nets for the file forms and shape rules that do not need ImageNet's shapes.
TINY = {"width": 0.125, "input_size": 32, "num_classes": 5}
TINY_GRAY = {**TINY, "in_channels": 1}
CLASSES = ["ant", "bee", "cat", "dog", "eel"]


def random_googlenet_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """torchvision's GoogLeNet as its ImageNet file holds it (aux heads included), randomly initialised, with
    the batch-norm statistics of one batch: at the initial statistics (mean 0, variance 1) the activations
    die out and every image gets the same logits, which would make output comparisons empty."""
    torch.manual_seed(seed)
    net = torchvision.models.GoogLeNet(aux_logits=True, init_weights=True, transform_input=False)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # the batch's own statistics
    with torch.no_grad():
        net.train()(torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(seed)) * 2 - 1)
    return net.state_dict()


def cache_path(home: str | os.PathLike, weights_enum=GOOGLENET) -> Path:
    """Where torch's hub cache keeps an enum's file when TORCH_HOME is `home`."""
    return Path(home) / "hub" / "checkpoints" / os.path.basename(weights_enum.url)


def seed_hub(home: str | os.PathLike, state: dict, weights_enum=GOOGLENET) -> Path:
    path = cache_path(home, weights_enum)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    return path


def modules_with_params(net: nn.Module) -> set[str]:
    return {name.rsplit(".", 1)[0] for name, _ in net.named_parameters()}


def equal_except(state: dict, reference: dict, prefixes: tuple[str, ...] = ()) -> list[str]:
    """The keys of `state` outside `prefixes` whose tensors differ from `reference`'s."""
    return [k for k in state if not k.startswith(prefixes) and not torch.equal(state[k], reference[k])]


def googlenet_hub(tmp_path_factory) -> SimpleNamespace:
    """A module's own TORCH_HOME whose hub cache holds a random GoogLeNet file under the enum's name."""
    home = tmp_path_factory.mktemp("torch_home")
    state = random_googlenet_state()
    return SimpleNamespace(home=home, path=seed_hub(home, state), state=state)


@pytest.fixture(scope="module")
def googlenet_file(tmp_path_factory):
    return googlenet_hub(tmp_path_factory)


@pytest.fixture(autouse=True)
def module_hub(googlenet_file, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(googlenet_file.home))


@pytest.fixture(scope="module")
def imagenet_net(googlenet_file):
    """googlenet_bn with the (seeded) ImageNet weights, shared by the tests that only run it."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(googlenet_file.home))
        return create_model("googlenet_bn", weights="imagenet").eval()


@pytest.fixture(scope="module")
def vgg11_file(googlenet_file):
    """torchvision's vgg11() state dict under VGG11_Weights' file name (507 MB; slow tests only)."""
    torch.manual_seed(0)
    path = seed_hub(googlenet_file.home, torchvision.models.vgg11().state_dict(), VGG11_Weights.IMAGENET1K_V1)
    return SimpleNamespace(path=path, state=torch.load(path, mmap=True, weights_only=True))


def tiny_state(name: str = "vgg11_bn", seed: int = 0, **options) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return create_model(name, **{**TINY, **options}).state_dict()


def pixels(n: int, channels: int = 3, size: int = 96, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(seed))


# --- torchvision's published weights ------------------------------------------------------------------------

def test_the_seeded_file_is_where_torch_hub_and_classicnets_look_for_it(googlenet_file):
    assert Path(torch.hub.get_dir()) / "checkpoints" / FILE == googlenet_file.path
    assert weights_mod.hub_file(torchvision_weights("googlenet_bn", "googlenet", "imagenet")) == googlenet_file.path


def test_imagenet_weights_load_every_tensor_of_the_file(googlenet_file):
    net = create_model("googlenet_bn", weights="imagenet", aux_logits=True)  # the file's aux heads too
    state = net.state_dict()
    assert state.keys() == googlenet_file.state.keys()
    assert not equal_except(state, googlenet_file.state)
    report = net.weights_report
    assert report.new == [] and report.notes == []
    assert report.line() == f"weights: {len(modules_with_params(net))} layers from imagenet ({FILE})"


def test_imagenet_weights_bring_their_categories_preprocessing_and_accuracy(imagenet_net, googlenet_file):
    assert not equal_except(imagenet_net.state_dict(), googlenet_file.state)
    cfg = imagenet_net.pretrained_cfg
    assert cfg["categories"] == GOOGLENET.meta["categories"] and len(cfg["categories"]) == 1000
    assert cfg["input_size"] == (3, 224, 224) and cfg["resize"] == 256 and cfg["crop_pct"] == 224 / 256
    assert cfg["weights"] == "GoogLeNet_Weights.IMAGENET1K_V1" and cfg["weights_url"] == GOOGLENET.url
    assert cfg["imagenet_top1"] == GOOGLENET.meta["_metrics"]["ImageNet-1K"]["acc@1"] == 69.778
    assert cfg["imagenet_top5"] == GOOGLENET.meta["_metrics"]["ImageNet-1K"]["acc@5"]
    # torchvision's transform_input turns ImageNet-normalised input into (x - 0.5) / 0.5: ours says so
    assert cfg["mean"] == cfg["std"] == (0.5, 0.5, 0.5) and cfg["num_classes"] == 1000
    assert cfg["weights_report"].endswith("not used: aux1, aux2 (the net was built without them)")


def test_googlenet_with_imagenet_weights_computes_what_torchvision_computes(googlenet_file, imagenet_net):
    theirs = torchvision.models.GoogLeNet(transform_input=True, aux_logits=False, init_weights=False)
    result = theirs.load_state_dict(googlenet_file.state, strict=False)
    assert not result.missing_keys and result.unexpected_keys
    assert all(k.startswith(("aux1.", "aux2.")) for k in result.unexpected_keys)
    x = pixels(2)  # raw pixels in [0, 1]
    preset = GOOGLENET.transforms()
    imagenet_mean, imagenet_std = (torch.tensor(v).view(1, 3, 1, 1) for v in (preset.mean, preset.std))
    cfg = imagenet_net.pretrained_cfg
    mean, std = (torch.tensor(cfg[k]).view(1, 3, 1, 1) for k in ("mean", "std"))
    with torch.no_grad():
        expected = theirs.eval()((x - imagenet_mean) / imagenet_std)
        got = imagenet_net((x - mean) / std)
    assert float((expected[0] - expected[1]).abs().max()) > 100 * TOL  # the logits depend on the image
    assert torch.allclose(got, expected, atol=TOL, rtol=TOL)


def test_every_name_of_the_published_weights_loads_the_same_file(imagenet_net):
    reference = imagenet_net.state_dict()
    for how in ({"pretrained": True}, {"weights": GOOGLENET}, {"weights": "GoogLeNet_Weights.IMAGENET1K_V1"},
                {"weights": "IMAGENET1K_V1"}):
        net = create_model("googlenet_bn", **how)
        assert not equal_except(net.state_dict(), reference), how
        assert net.weights_cfg == imagenet_net.weights_cfg, how  # IMAGENET1K_V1 is GoogLeNet's DEFAULT


def test_conflicting_or_foreign_weight_names_are_refused_in_one_line():
    assert error_of(lambda: create_model("googlenet_bn", pretrained=True, weights="x")) == \
        "googlenet_bn: pass pretrained=True or weights=..., not both"
    for foreign in (VGG16_Weights.IMAGENET1K_V1, "VGG16_Weights.IMAGENET1K_V1"):
        message = error_of(lambda foreign=foreign: create_model("googlenet_bn", weights=foreign))
        assert message.startswith("VGG16_Weights.IMAGENET1K_V1 are not googlenet_bn's weights")
        assert "GoogLeNet_Weights.IMAGENET1K_V1" in message
    assert "got 7" in error_of(lambda: create_model("googlenet_bn", weights=7))


def test_a_misspelt_weights_name_lists_the_valid_ones():
    assert error_of(lambda: create_model("googlenet_bn", weights="imagnet")) == (
        "unknown weights 'imagnet' for googlenet_bn: pass imagenet, IMAGENET1K_V1, or the path of a weights file")
    message = error_of(lambda: create_model("vgg16", weights="IMAGENET1K_V2"))
    assert "pass imagenet, IMAGENET1K_V1, IMAGENET1K_FEATURES, or the path" in message


@pytest.mark.parametrize("name", ["nin", "googlenet", "lenet"])
def test_nets_without_published_weights_say_which_nets_have_them(name):
    message = error_of(lambda: create_model(name, weights="imagenet"))
    assert message.startswith(f"{name} has no published ImageNet weights")
    assert "VGG nets A, B, D, E with and without BN, alexnet and googlenet_bn" in message
    assert "pass a weights file" in message
    assert error_of(lambda: create_model(name, pretrained=True)) == message
    # what the message claims is what the registry knows
    assert list_models(pretrained=True) == ["vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19",
                                            "vgg19_bn", "alexnet", "googlenet_bn"]


def test_imagenet_means_each_nets_default_weights_and_vgg16_features_need_no_categories():
    assert torchvision_weights("vgg16", "vgg16", "imagenet").enum is VGG16_Weights.IMAGENET1K_V1
    features = torchvision_weights("vgg16", "vgg16", "IMAGENET1K_FEATURES")
    cfg = features.cfg()  # torchvision gives these weights categories=None
    assert cfg["weights"] == "VGG16_Weights.IMAGENET1K_FEATURES" and cfg["categories"] == []
    assert cfg["mean"] == pytest.approx((0.48235, 0.45882, 0.40784)) and cfg["std"] == pytest.approx((1 / 255,) * 3)
    assert math.isnan(cfg["imagenet_top1"]) and cfg["input_size"] == (3, 224, 224) and cfg["resize"] == 256
    assert features.file_name == "vgg16_features-amdegroot-88682ab5.pth" and features.hash_prefix == "88682ab5"


# --- another number of classes, aux heads, input channels ---------------------------------------------------

def test_other_classes_get_a_new_class_layer_and_keep_everything_else(googlenet_file):
    torch.manual_seed(0)
    net = create_model("googlenet_bn", weights="imagenet", num_classes=10)
    report = net.weights_report
    assert report.new == ["fc (10 classes, the weights have 1000)"]
    assert report.line() == (f"weights: {len(modules_with_params(net)) - 1} layers from imagenet ({FILE}); "
                             "new: fc (10 classes, the weights have 1000); not used: aux1, aux2 (the net was "
                             "built without them)")
    state = net.state_dict()
    assert not equal_except(state, googlenet_file.state, ("fc.",))
    assert state["fc.weight"].shape == (10, 1024)
    assert not torch.equal(state["fc.weight"], googlenet_file.state["fc.weight"][:10])
    cfg = net.pretrained_cfg
    assert "categories" not in cfg and cfg["num_classes"] == 10
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["weights"] == "GoogLeNet_Weights.IMAGENET1K_V1"


def test_aux_heads_get_new_class_layers_along_with_the_main_one(googlenet_file):
    net = create_model("googlenet_bn", weights="imagenet", aux_logits=True, num_classes=3)
    report = net.weights_report
    assert report.new == ["aux1.fc2", "aux2.fc2", "fc (3 classes, the weights have 1000)"]
    assert "not used" not in report.line()
    assert report.loaded == sorted(modules_with_params(net) - {"aux1.fc2", "aux2.fc2", "fc"},
                                   key=list(dict(net.named_modules())).index)
    assert not equal_except(net.state_dict(), googlenet_file.state, ("aux1.fc2.", "aux2.fc2.", "fc."))
    assert net.aux1.fc2.weight.shape == net.aux2.fc2.weight.shape == (3, 1024)


def test_one_input_channel_sums_the_first_kernels_so_gray_looks_like_rgb(googlenet_file, imagenet_net):
    gray = create_model("googlenet_bn", weights="imagenet", in_channels=1).eval()
    kernel = googlenet_file.state["conv1.conv.weight"]
    assert torch.allclose(gray.conv1.conv.weight, kernel.sum(dim=1, keepdim=True))
    assert "conv1.conv: kernels summed over the weights' 3 input channels for 1 (timm's rule)" in \
        gray.weights_report.line()
    cfg = gray.pretrained_cfg
    assert cfg["input_size"] == (1, 224, 224) and cfg["mean"] == (0.5,) and cfg["std"] == (0.5,)
    x = pixels(2, channels=1)
    with torch.no_grad():
        got, expected = gray(x), imagenet_net(x.expand(-1, 3, -1, -1))
    assert float((expected[0] - expected[1]).abs().max()) > 100 * TOL
    assert torch.allclose(got, expected, atol=TOL, rtol=TOL)


def test_four_input_channels_repeat_the_kernels_scaled_by_three_quarters(googlenet_file):
    net = create_model("googlenet_bn", weights="imagenet", in_channels=4)
    kernel = googlenet_file.state["conv1.conv.weight"]
    expected = torch.cat([kernel, kernel[:, :1]], dim=1) * 0.75
    assert torch.allclose(net.conv1.conv.weight, expected)
    assert "conv1.conv: kernels repeated from the weights' 3 input channels for 4" in net.weights_report.line()
    assert net.pretrained_cfg["mean"] == (0.5,) * 4 and net.pretrained_cfg["input_size"] == (4, 224, 224)


# --- refusals ------------------------------------------------------------------------------------------------

def test_a_width_other_than_the_weights_is_refused_with_the_fix():
    assert error_of(lambda: create_model("googlenet_bn", weights="imagenet", width=0.5)) == (
        f"googlenet_bn built at width 0.5 cannot take imagenet ({FILE}): those weights are for width 1 "
        "(every layer's channels differ); drop --width / pass width=1")


def test_weights_of_another_net_are_refused_naming_the_first_missing_key(googlenet_file, tmp_path):
    message = error_of(lambda: create_model("alexnet", width=0.25, weights=str(googlenet_file.path)))
    assert message.startswith("the weights lack 'features.0.weight', which alexnet has")
    assert "saved from another net" in message
    torch.save(tiny_state("vgg11"), tmp_path / "vgg11.pth")
    message = error_of(lambda: create_model("vgg11_bn", weights=str(tmp_path / "vgg11.pth"), **TINY))
    assert message.startswith("the weights lack 'features.1.weight', which vgg11_bn has")


def test_weights_of_another_width_are_refused_by_shape(tmp_path):
    torch.save(tiny_state("vgg11_bn", width=0.25), tmp_path / "wide.pth")
    message = error_of(lambda: create_model("vgg11_bn", weights=str(tmp_path / "wide.pth"), **TINY))
    assert "the weights' 'features.0.weight' has shape (16, 3, 3, 3) but vgg11_bn's has (8, 3, 3, 3)" in message
    assert "the layers have other widths" in message


def test_a_head_without_values_starts_afresh_as_a_whole(tmp_path):
    """torchvision's VGG-16 "features" weights hold NaN in every layer of the classifier, not only the last."""
    source = tiny_state("vgg11")
    empty_head = {k: v.clone().fill_(math.nan) if k.startswith("classifier.") else v for k, v in source.items()}
    torch.save(empty_head, tmp_path / "features.pth")
    net = create_model("vgg11", weights=str(tmp_path / "features.pth"), **TINY).eval()
    assert all(bool(torch.isfinite(p).all()) for p in net.parameters())
    assert bool(torch.isfinite(net(pixels(2, size=32))).all())
    assert not equal_except(net.state_dict(), source, ("classifier.",))
    assert net.weights_report.new == ["classifier.0", "classifier.3", "classifier.6 (the weights' head holds no values)"]


def test_a_file_without_batch_norm_counters_still_loads_every_layer(tmp_path):
    """Files saved before torch 0.4.1 lack num_batches_tracked; torch loads them, and so do we."""
    source = tiny_state("vgg11_bn")
    torch.save({k: v for k, v in source.items() if not k.endswith("num_batches_tracked")}, tmp_path / "old.pth")
    net = create_model("vgg11_bn", weights=str(tmp_path / "old.pth"), **TINY)
    assert net.weights_report.new == [] and "new:" not in net.weights_report.line()
    assert not equal_except(net.state_dict(), source)


@pytest.mark.slow
def test_vgg_fc_head_at_another_size_is_refused_and_a_gap_head_takes_the_body(vgg11_file):
    message = error_of(lambda: create_model("vgg11", weights="imagenet", input_size=64))
    assert "'classifier.0.weight' has shape (4096, 25088) but vgg11's has (4096, 2048)" in message
    assert "build it at --size 224 / input_size=224, or with --head gap / head='gap'" in message
    net = create_model("vgg11", weights="imagenet", input_size=64, head="gap", num_classes=5)
    report = net.weights_report
    assert report.new == ["classifier.0 (5 classes, the weights have 1000; the weights' head has another structure)"]
    assert report.loaded == [f"features.{i}" for i in (0, 3, 6, 8, 11, 13, 16, 18)]
    state = net.state_dict()
    assert not equal_except(state, vgg11_file.state, ("classifier.",))
    assert state["classifier.0.weight"].shape == (5, 512) and "categories" not in net.pretrained_cfg
    message = error_of(lambda: create_model("vgg11_bn", weights=str(vgg11_file.path)))
    assert message.startswith("the weights lack 'features.1.weight', which vgg11_bn has")


# --- offline, download, damaged files ------------------------------------------------------------------------

def serve_from(monkeypatch, path: Path) -> None:
    """torchvision's GoogLeNet weights at the file:// URL of `path`, cached under that URL's file name."""
    url = path.as_uri()
    monkeypatch.setattr(weights_mod.TorchvisionWeights, "url", property(lambda self: url))
    monkeypatch.setattr(weights_mod.TorchvisionWeights, "file_name", property(lambda self: os.path.basename(url)))


def test_offline_without_the_file_says_which_file_to_put_where(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    message = error_of(lambda: create_model("googlenet_bn", weights="imagenet"))
    assert message == (f"googlenet_bn's ImageNet weights ({FILE}) are not in torch's hub cache and "
                       f"CLASSICNETS_OFFLINE is set: download {GOOGLENET.url} and put it at "
                       f"{cache_path(tmp_path)} (TORCH_HOME moves the cache)")


def test_a_failed_download_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CLASSICNETS_OFFLINE")
    monkeypatch.setattr(weights_mod.TorchvisionWeights, "url",
                        property(lambda self: f"file:///nonexistent/{FILE}"))
    message = error_of(lambda: create_model("googlenet_bn", weights="imagenet"))
    assert message.startswith(f"googlenet_bn's ImageNet weights are not in torch's hub cache ({cache_path(tmp_path)})"
                              " and downloading them failed (")
    assert message.endswith(f": download file:///nonexistent/{FILE} and put it at {cache_path(tmp_path)} "
                            "(TORCH_HOME moves the cache)")
    assert not any(cache_path(tmp_path).parent.iterdir())


def test_a_download_is_hash_checked_cached_and_loaded(googlenet_file, tmp_path, monkeypatch):
    data = googlenet_file.path.read_bytes()
    served = tmp_path / "server" / f"googlenet-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    served.parent.mkdir()
    served.write_bytes(data)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CLASSICNETS_OFFLINE", "0")  # 0 is not offline
    serve_from(monkeypatch, served)
    net = create_model("googlenet_bn", weights="imagenet")
    cached = tmp_path / "home" / "hub" / "checkpoints" / served.name
    assert list(cached.parent.iterdir()) == [cached] and cached.read_bytes() == data
    assert net.weights_report.source == f"imagenet ({served.name})"
    assert not equal_except(net.state_dict(), googlenet_file.state)
    served.unlink()  # from now on the cache serves it
    assert not equal_except(create_model("googlenet_bn", weights="imagenet").state_dict(), googlenet_file.state)


def test_a_download_with_the_wrong_hash_is_refused_and_leaves_nothing(googlenet_file, tmp_path, monkeypatch):
    served = tmp_path / "server" / "googlenet-00000000.pth"
    served.parent.mkdir()
    served.write_bytes(googlenet_file.path.read_bytes())
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CLASSICNETS_OFFLINE")
    serve_from(monkeypatch, served)
    message = error_of(lambda: create_model("googlenet_bn", weights="imagenet"))
    assert message.startswith(f"the download of {served.as_uri()} does not match its SHA-256 prefix 00000000 "
                              "(a damaged or swapped file; nothing was kept)")
    assert list((tmp_path / "home" / "hub" / "checkpoints").iterdir()) == []


class _Touch:
    """A pickle payload that would run code (create a file) when unpickled without weights_only."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def _damaged(kind: str, tmp_path: Path, source: Path, monkeypatch) -> tuple[str, list[str]]:
    """(weights argument, what its one-line refusal must say) for one kind of bad file."""
    path = tmp_path / "weights.pth"
    if kind == "truncated cached file":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "home"))
        cached = cache_path(tmp_path / "home")
        cached.parent.mkdir(parents=True)
        cached.write_bytes(source.read_bytes()[:1000])
        return "imagenet", [str(cached), "is a damaged torch file", "delete it and fetch or copy it again"]
    if kind == "text":
        path.write_text("these are not weights\n")
        return str(path), [str(path), "is not a torch file", "pass a torchvision state dict (.pth)"]
    if kind == "code payload":
        torch.save({"conv1.conv.weight": _Touch(tmp_path / "pwned")}, path)
        return str(path), [str(path), "unsafe to load", "refused by weights_only"]
    if kind == "empty":
        path.write_bytes(b"")
        return str(path), [str(path), "is empty (0 bytes)", "delete it"]
    if kind == "directory":
        return str(tmp_path), [str(tmp_path), "is not a regular file"]
    if kind == "missing":
        return str(tmp_path / "nowhere.pth"), ["nowhere.pth does not exist"]
    if kind == "non-tensor value":
        torch.save({"conv1.conv.weight": torch.zeros(1), "epoch": 3}, path)
        return str(path), [str(path), "holds no state dict (a map of names to tensors)"]
    if kind == "bad safetensors":
        path = tmp_path / "weights.safetensors"
        path.write_bytes(struct.pack("<Q", 10_000) + b'{"conv1": ')
        return str(path), [str(path), "is not a safetensors file (header length 10000 exceeds the file)"]
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["truncated cached file", "text", "code payload", "empty", "directory", "missing",
                                  "non-tensor value", "bad safetensors"])
def test_a_bad_weights_file_is_one_line_naming_it(kind, googlenet_file, tmp_path, monkeypatch):
    weights, said = _damaged(kind, tmp_path, googlenet_file.path, monkeypatch)
    message = error_of(lambda: create_model("googlenet_bn", weights=weights))
    assert all(part in message for part in said), message
    assert not (tmp_path / "pwned").exists()  # the payload never ran


# --- weights files of every form --------------------------------------------------------------------------

def test_a_torchvision_state_dict_file_loads_like_the_published_weights(googlenet_file):
    net = create_model("googlenet_bn", weights=str(googlenet_file.path))
    assert not equal_except(net.state_dict(), googlenet_file.state)
    cfg = net.pretrained_cfg  # a bare file says nothing about itself: the net's own defaults stay
    assert cfg["weights"] == str(googlenet_file.path) and "categories" not in cfg
    assert cfg["mean"] == (0.485, 0.456, 0.406) and net.weights_report.source == str(googlenet_file.path)


@pytest.mark.parametrize("form", ["plain", "state_dict", "model_state_dict", "ddp", "ddp in state_dict", "compiled"])
def test_state_dicts_in_the_usual_wrappers_load_the_same_tensors(form, tmp_path):
    source = tiny_state("vgg11_bn")
    prefixed = {"ddp": "module.", "ddp in state_dict": "module.", "compiled": "_orig_mod."}.get(form, "")
    state = {prefixed + k: v for k, v in source.items()}
    saved = {"plain": state, "ddp": state, "compiled": state, "state_dict": {"state_dict": state, "epoch": 3},
             "ddp in state_dict": {"state_dict": state, "epoch": 3},
             "model_state_dict": {"model_state_dict": state, "optimizer": {"lr": 0.1}}}[form]
    torch.save(saved, tmp_path / "w.pth")
    net = create_model("vgg11_bn", weights=str(tmp_path / "w.pth"), **TINY)
    assert not equal_except(net.state_dict(), source) and net.weights_report.new == []


@pytest.fixture(scope="module")
def gray_checkpoint(tmp_path_factory):
    """A classicnets checkpoint of a 5-class gray vgg11_bn, and its safetensors export."""
    root = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(3)
    model = create_model("vgg11_bn", **TINY_GRAY)
    path = checkpoint.save(root / "best.pt", {
        "model_name": "vgg11_bn", "model_kwargs": TINY_GRAY, "model": model.state_dict(),
        "data": {"name": "folder:/somewhere", "classes": CLASSES, "in_channels": 1, "input_size": 32,
                 "mean": [0.25], "std": [0.5], "resize": 36}})
    return SimpleNamespace(pt=path, safetensors=export(path, "safetensors", root / "best.safetensors"),
                           state=model.state_dict())


@pytest.mark.parametrize("form", ["pt", "safetensors"])
def test_a_classicnets_checkpoint_or_export_brings_its_preprocessing(form, gray_checkpoint):
    path = getattr(gray_checkpoint, form)
    net = create_model("vgg11_bn", weights=str(path), **{**TINY_GRAY, "num_classes": 3})
    assert net.weights_report.new == ["classifier.6 (3 classes, the weights have 5)"]
    assert not equal_except(net.state_dict(), gray_checkpoint.state, ("classifier.6.",))
    cfg = net.weights_cfg
    assert cfg["mean"] == (0.25,) and cfg["std"] == (0.5,) and cfg["input_size"] == (1, 32, 32)
    assert cfg["resize"] == 36 and cfg["weights"] == str(path) and "categories" not in cfg
    same = create_model("vgg11_bn", weights=str(path), **TINY_GRAY)  # its own head: its class names apply
    assert same.weights_report.new == [] and same.pretrained_cfg["categories"] == CLASSES
    assert not equal_except(same.state_dict(), gray_checkpoint.state)


def test_a_checkpoint_of_another_width_says_which_width_to_pass(gray_checkpoint):
    message = error_of(lambda: create_model("vgg11_bn", weights=str(gray_checkpoint.pt), in_channels=1,
                                            input_size=32))
    assert message == (f"vgg11_bn built at width 1 cannot take {gray_checkpoint.pt}: those weights are for width "
                       "0.125 (every layer's channels differ); pass --width 0.125 / width=0.125")


@pytest.mark.slow
@pytest.mark.realdata
def test_a_trained_run_starts_a_net_for_other_classes(tmp_path):
    result = classicnets.train(recipe="fast", model="vgg11_bn", head="fc", width=0.125, epochs=1, limit_train=256,
                               limit_test=64, batch_size=64, run_dir=str(tmp_path / "run"), progress="none",
                               plots=False, tensorboard="off", threads=1)
    saved = checkpoint.load(result.run_dir / "last.pt")
    net = create_model("vgg11_bn", weights=str(result.run_dir / "last.pt"), width=0.125, input_size=32,
                       in_channels=1, num_classes=3)
    assert net.weights_report.new == ["classifier.6 (3 classes, the weights have 10)"]
    assert not equal_except(net.state_dict(), saved["model"], ("classifier.6.",))
    cfg = net.weights_cfg
    assert list(cfg["mean"]) == saved["data"]["mean"] and list(cfg["std"]) == saved["data"]["std"]
    assert cfg["input_size"] == (1, 32, 32) and "categories" not in cfg
    same = create_model("vgg11_bn", weights=str(result.run_dir / "last.pt"), width=0.125, input_size=32,
                        in_channels=1, num_classes=10)
    assert same.weights_report.new == [] and not equal_except(same.state_dict(), saved["model"])
    assert same.pretrained_cfg["categories"] == saved["data"]["classes"]
    assert saved["data"]["classes"][:2] == ["T-shirt/top", "Trouser"]


# --- ImageNet's class order -----------------------------------------------------------------------------------

def test_imagenet_synsets_are_the_1000_sorted_wordnet_ids_in_torchvision_order():
    synsets = imagenet_synsets()
    assert len(synsets) == 1000 and list(synsets) == sorted(set(synsets))
    assert synsets[0] == "n01440764" and synsets[1] == "n01443537" and synsets[-1] == "n15075141"
    assert all(len(s) == 9 and s[0] == "n" and s[1:].isdigit() for s in synsets)
    assert imagenet_indices(["n01443537", "n01440764"]) == [1, 0]
    assert imagenet_indices(["n01443537", "cats"]) is None and imagenet_indices([]) is None


def test_a_safetensors_file_without_classicnets_metadata_loads_as_plain_tensors(tmp_path):
    from classicnets.export import save_safetensors

    source = tiny_state("vgg11_bn")
    save_safetensors(source, tmp_path / "w.safetensors", {"note": json.dumps("from elsewhere")})
    net = create_model("vgg11_bn", weights=str(tmp_path / "w.safetensors"), **TINY)
    assert not equal_except(net.state_dict(), source)
    assert "mean" not in net.weights_cfg and net.weights_report.new == []


@pytest.mark.parametrize("form", ["pt", "safetensors"])
def test_eval_and_predict_weights_from_a_checkpoint_bring_its_net_options(form, gray_checkpoint):
    from classicnets.evaluation import load_trained_weights

    loaded = load_trained_weights("vgg11_bn", str(getattr(gray_checkpoint, form)), "cpu")
    assert (loaded.num_classes, loaded.in_channels, loaded.input_size, loaded.resize) == (5, 1, 32, 36)
    assert loaded.classes == CLASSES and loaded.mean == [0.25] and loaded.std == [0.5]
    assert not equal_except(loaded.model.state_dict(), gray_checkpoint.state)
    # another net's checkpoint keeps the one-line refusal
    assert "they are vgg11_bn's weights" in error_of(
        lambda: load_trained_weights("vgg11", str(gray_checkpoint.pt), "cpu", **TINY_GRAY))


def test_torch_hub_entries_take_the_weights_too(googlenet_file):
    repo = Path(__file__).resolve().parents[1]
    net = torch.hub.load(str(repo), "googlenet_bn", source="local", weights="imagenet", num_classes=4)
    assert net.weights_report.new == ["fc (4 classes, the weights have 1000)"]
    assert torch.equal(net.conv1.conv.weight, googlenet_file.state["conv1.conv.weight"])
