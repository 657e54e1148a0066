"""export's two graph options: --include-normalize ((x - mean) / std inside the graph) and --dynamic-size
(free height and width), their refusals, and an ONNX export checked in onnxruntime on real Fashion-MNIST."""

from __future__ import annotations

import json
import warnings

import onnx
import onnxruntime
import pytest
import torch
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument, RuntimeException

from classicnets import data
from classicnets.cli import main
from classicnets.evaluation import load_inference_model, prepare
from classicnets.export import (
    EXTRA_FILE,
    Normalized,
    decode_metadata,
    dynamic_size_refusal,
    export,
    exported_program,
    metadata,
)
from classicnets.models import create_model
from classicnets.training import checkpoint
from helpers import error_of

MEAN, STD = [0.5], [0.25]
ORT_ERRORS = (Fail, InvalidArgument, RuntimeException)
KWARGS = {"num_classes": 3, "in_channels": 1, "input_size": 32, "width": 1 / 16, "head": "gap"}


def save_checkpoint(path, name, kwargs, mean=MEAN, std=STD, seed=0):
    torch.manual_seed(seed)
    model = create_model(name, **kwargs).eval()
    ckpt = checkpoint.save(path, {
        "model_name": name, "model_kwargs": kwargs, "model": model.state_dict(),
        "data": {"name": "fashion-mnist", "classes": [f"c{i}" for i in range(kwargs["num_classes"])],
                 "in_channels": kwargs["in_channels"], "input_size": kwargs["input_size"], "mean": mean,
                 "std": std, "resize": None},
    })
    return model, ckpt


@pytest.fixture(scope="module")
def gap_net(tmp_path_factory):
    """VGG-11-BN with the global-average-pool head: height and width can be free in every format."""
    model, ckpt = save_checkpoint(tmp_path_factory.mktemp("gap") / "best.pt", "vgg11_bn", KWARGS)
    return {"model": model, "ckpt": ckpt}


def run_onnx(path, x: torch.Tensor) -> torch.Tensor:
    session = onnxruntime.InferenceSession(str(path))
    (logits,) = session.run(None, {"images": x.numpy()})
    return torch.from_numpy(logits)


def assert_close(got: torch.Tensor, expected: torch.Tensor, rel: float = 1e-4) -> None:
    """Equal up to float rounding, relative to the logits' scale (random nets have logits near 0.01)."""
    scale = max(expected.abs().max().item(), 1e-3)
    assert (got - expected).abs().max().item() <= rel * scale


def onnx_input_dims(path) -> list:
    shape = onnx.load(str(path)).graph.input[0].type.tensor_type.shape
    return [d.dim_param or d.dim_value for d in shape.dim]


def onnx_meta(path) -> dict[str, str]:
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# --- Normalized and the metadata -------------------------------------------------------------------------

def test_normalized_applies_the_checkpoint_mean_and_std_before_the_net():
    net = torch.nn.Conv2d(3, 2, 1)
    wrapped = Normalized(net, [0.1, 0.2, 0.3], [0.5, 0.25, 2.0], in_channels=3)
    assert wrapped.mean.shape == wrapped.std.shape == (1, 3, 1, 1)
    x = torch.rand(2, 3, 5, 5)
    expected = net((x - torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)) / torch.tensor([0.5, 0.25, 2.0]).view(1, 3, 1, 1))
    assert torch.allclose(wrapped(x), expected)
    assert set(wrapped.state_dict()) >= {"mean", "std"}  # buffers: they travel with the net


def test_normalized_takes_one_value_for_every_channel_and_none_as_no_step():
    wrapped = Normalized(torch.nn.Identity(), [0.5], None, in_channels=3)
    assert wrapped.mean.flatten().tolist() == [0.5] * 3 and wrapped.std.flatten().tolist() == [1.0] * 3
    x = torch.rand(1, 3, 2, 2)
    assert torch.equal(Normalized(torch.nn.Identity(), None, None, in_channels=3)(x), x)


def test_normalized_refuses_stats_that_do_not_fit_the_channels_or_divide_by_zero():
    assert "2 values for 3-channel" in error_of(lambda: Normalized(torch.nn.Identity(), [0.1, 0.2], None, 3))
    assert "not positive" in error_of(lambda: Normalized(torch.nn.Identity(), [0.1], [0.0], 1))


def test_metadata_says_whether_normalisation_and_free_sizes_are_inside(gap_net):
    loaded = load_inference_model(gap_net["ckpt"], "cpu")
    inside = metadata(loaded, normalized_inside=True, dynamic_size=True)
    assert inside["normalized_inside"] == "true" and inside["dynamic_size"] == "true"
    assert inside["min_input_size"] == "32" and json.loads(inside["mean"]) == MEAN  # kept for information
    info = decode_metadata(inside)
    assert info["normalized_inside"] is True and info["dynamic_size"] is True and info["min_input_size"] == 32
    assert "dynamic_size" not in metadata(loaded)  # safetensors: no graph, no size to speak of


def test_metadata_of_older_exports_still_decodes_as_caller_normalises_fixed_size(gap_net):
    old = metadata(load_inference_model(gap_net["ckpt"], "cpu"))
    del old["normalized_inside"]
    info = decode_metadata(old)
    assert info["normalized_inside"] is False and info["dynamic_size"] is False and info["std"] == STD
    old["normalized_inside"] = '"maybe"'
    assert "not true/false" in error_of(lambda: decode_metadata(old, "m.onnx"))


# --- refusals, before any work ---------------------------------------------------------------------------

@pytest.mark.parametrize("fmt, flag, words", [
    ("safetensors", "include_normalize", "safetensors holds weights only"),
    ("safetensors", "dynamic_size", "works with --format onnx, pt2 or torchscript"),
])
def test_options_a_format_cannot_carry_are_refused_before_loading(tmp_path, fmt, flag, words):
    missing = tmp_path / "nothere.pt"  # never read: the refusal comes first
    message = error_of(lambda: export(missing, fmt, tmp_path / "out.bin", **{flag: True}))
    assert words in message and not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("argv, words", [
    (["--format", "safetensors", "--include-normalize"], "--include-normalize needs a graph format"),
    (["--format", "safetensors", "--dynamic-size"], "--dynamic-size works with --format onnx, pt2 or"),
])
def test_export_command_refuses_a_flag_combination_in_one_line(gap_net, capsys, argv, words):
    out = gap_net["ckpt"].parent / "refused.out"
    assert main(["export", str(gap_net["ckpt"]), "--out", str(out), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classicnets: error: ") and words in err and err.count("\n") == 1
    assert not out.exists()


@pytest.mark.slow
def test_export_command_with_both_flags_writes_a_graph_for_raw_pixels_of_any_size(gap_net, tmp_path, capsys):
    out = tmp_path / "m.pt2"
    argv = ["export", str(gap_net["ckpt"]), "--format", "pt2", "--out", str(out), "--dynamic-size",
            "--include-normalize"]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out} (pt2, ") and "height and width free, takes raw 0-1 pixels" in text
    raw = torch.rand(2, 1, 48, 40)
    with torch.no_grad():
        assert_close(torch.export.load(out).module()(raw), gap_net["model"]((raw - MEAN[0]) / STD[0]))


def small(name, **kwargs):
    options = {"num_classes": 3, "in_channels": 1, "width": 0.25, **kwargs}
    return create_model(name, **options).eval()


@pytest.mark.parametrize("name, kwargs, onnx_ok, pt2_ok", [
    ("vgg11_bn", {"input_size": 32, "head": "gap"}, True, True),
    ("vgg11_bn", {"input_size": 32}, True, True),  # FC head on a 1x1 final map: a global pool
    ("vgg11_bn", {"input_size": 64}, False, True),  # FC head pools to a fixed 2x2 grid
    ("alexnet", {"input_size": 63}, True, True),
    ("alexnet", {"input_size": 224}, False, True),
    ("nin", {"input_size": 67}, True, True),
    ("lenet", {"input_size": 28}, False, True),
    ("vgg11_bn", {"input_size": 28, "head": "gap", "ceil_mode": True}, False, False),  # torch.export fails too
    ("googlenet", {"input_size": 32}, False, False),  # ceil-mode max pools
    ("googlenet_bn", {"input_size": 32}, False, False),
])
def test_dynamic_size_is_refused_where_the_exporter_would_fix_a_size(name, kwargs, onnx_ok, pt2_ok):
    model = small(name, **kwargs)
    assert (dynamic_size_refusal(model, "onnx") is None) == onnx_ok
    assert (dynamic_size_refusal(model, "pt2") is None) == pt2_ok


def test_refusals_name_the_net_the_reason_and_the_fix():
    vgg = dynamic_size_refusal(small("vgg16", input_size=64), "onnx")
    assert vgg.startswith("vgg16 cannot be exported to ONNX with --dynamic-size")
    assert "avgpool pools the final map to a fixed 2x2 grid" in vgg
    assert "--format pt2" in vgg and "--head gap" in vgg and "\n" not in vgg
    assert "--head gap" not in dynamic_size_refusal(small("lenet"), "onnx")  # LeNet has no such option
    google = dynamic_size_refusal(small("googlenet", input_size=32), "pt2")
    assert google.startswith("googlenet cannot be exported with --dynamic-size: its ceil_mode pooling")
    assert "--format torchscript (any size)" in google and "export without --dynamic-size" in google
    assert dynamic_size_refusal(small("googlenet", input_size=32), "torchscript") is None


def test_export_command_refuses_dynamic_size_for_googlenet_before_exporting(tmp_path, capsys):
    kwargs = {"num_classes": 3, "in_channels": 1, "input_size": 32, "width": 0.125}
    _, ckpt = save_checkpoint(tmp_path / "g.pt", "googlenet", kwargs)
    assert main(["export", str(ckpt), "--format", "pt2", "--dynamic-size"]) == 2
    err = capsys.readouterr().err
    assert "googlenet cannot be exported with --dynamic-size" in err and err.count("\n") == 1
    assert not (tmp_path / "g.pt2").exists()


@pytest.mark.slow
def test_googlenets_refusal_is_what_torch_export_itself_would_say(tmp_path):
    """Without the rule, torch.export fails on the ceil-mode pools: the refusal is not over-cautious."""
    loaded = load_inference_model(small("googlenet", input_size=32, width=0.125), "cpu")
    assert "torch.export cannot keep height and width free" in error_of(
        lambda: exported_program(loaded, dynamic_size=True))


# --- what the files compute ------------------------------------------------------------------------------

def load_graph(path, fmt):
    """(the exported graph as a function of a tensor, its metadata) for onnx, torchscript or pt2."""
    if fmt == "onnx":
        return (lambda x: run_onnx(path, x)), onnx_meta(path)
    extra = {EXTRA_FILE: ""}
    if fmt == "pt2":
        module = torch.export.load(path, extra_files=extra).module()
    else:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
            module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[EXTRA_FILE])


@pytest.mark.slow
@pytest.mark.parametrize("fmt, suffix", [("onnx", ".onnx"), ("torchscript", ".torchscript.pt"), ("pt2", ".pt2")])
def test_include_normalize_puts_mean_and_std_inside_every_graph_format(gap_net, tmp_path, fmt, suffix):
    path = export(gap_net["ckpt"], fmt, tmp_path / f"m{suffix}", include_normalize=True)
    graph, meta = load_graph(path, fmt)
    raw = torch.rand(2, 1, 32, 32)  # 0-1 pixels, as a server gets them
    with torch.no_grad():
        assert_close(graph(raw), gap_net["model"]((raw - MEAN[0]) / STD[0]))
    assert meta["normalized_inside"] == "true" and json.loads(meta["mean"]) == MEAN


@pytest.mark.slow
def test_pt2_with_dynamic_size_takes_any_size_even_with_an_fc_head(tmp_path):
    """The FC head's AdaptiveAvgPool2d((2, 2)) stays general in torch.export (ONNX refuses it)."""
    kwargs = {"num_classes": 3, "in_channels": 1, "input_size": 64, "width": 1 / 16}
    model, ckpt = save_checkpoint(tmp_path / "fc.pt", "vgg11", kwargs)
    extra = {EXTRA_FILE: ""}
    module = torch.export.load(export(ckpt, "pt2", tmp_path / "fc.pt2", dynamic_size=True),
                               extra_files=extra).module()
    assert json.loads(extra[EXTRA_FILE])["min_input_size"] == "32"
    for h, w in ((32, 32), (64, 64), (71, 96), (130, 40)):
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            assert_close(module(x), model(x), rel=1e-6)
    with pytest.raises((AssertionError, RuntimeError), match="32"):  # below the smallest size: its range check
        module(torch.randn(1, 1, 31, 31))


# One net of each kind whose ONNX sizes can be free (every registered net was checked this way once, with
# torch 2.14): VGG with LRN, BN and the global-pool head, AlexNet's FC head on a 1x1 final map, NiN's
# conv-only head with 11x11/4 and 3x3/2 windows.
ONNX_DYNAMIC_NETS = [
    ("vgg11_lrn_bn", {"input_size": 32, "head": "gap"}),
    ("alexnet", {"input_size": 63}),
    ("nin", {"input_size": 67}),
]


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs", ONNX_DYNAMIC_NETS)
def test_each_kind_of_net_exports_free_sizes_to_onnx_that_match_torch(tmp_path, name, kwargs):
    torch.manual_seed(0)
    model = small(name, width=0.125, **kwargs)
    assert dynamic_size_refusal(model, "onnx") is None
    path = export(model, "onnx", tmp_path / "m.onnx", dynamic_size=True)
    assert onnx_input_dims(path) == ["batch", 1, "height", "width"]
    assert onnx_meta(path)["dynamic_size"] == "true" and onnx_meta(path)["normalized_inside"] == "false"
    s, smallest = model.input_size, model.min_input_size
    for h, w in ((s, s), (s + 32, s + 32), (s + 7, s + 7), (smallest, s + 19)):
        x = torch.randn(2, 1, h, w)
        with torch.no_grad():
            expected = model(x)
        assert_close(run_onnx(path, x), expected)


@pytest.mark.slow
def test_onnx_refusal_of_a_fixed_grid_pool_is_what_onnxruntime_would_show(tmp_path):
    """Without the rule, LeNet's AdaptiveAvgPool2d((4, 4)) head exports with free sizes in the graph, but
    onnxruntime computes only the export size: the refusal is not over-cautious."""
    torch.manual_seed(0)
    model = small("lenet")
    program = torch.onnx.export(exported_program(load_inference_model(model, "cpu"), dynamic_size=True),
                                dynamo=True, verbose=False)
    program.save(str(tmp_path / "m.onnx"))
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the failure below is expected: keep onnxruntime's log quiet
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), options)
    outcomes = []
    for size in (28, 36):
        x = torch.randn(2, 1, size, size)
        with torch.no_grad():
            expected = model(x)
        try:
            (got,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
            outcomes.append(bool(torch.allclose(torch.from_numpy(got), expected, atol=1e-5)))
        except ORT_ERRORS:  # a shape mismatch in the head's Gemm
            outcomes.append(False)
    assert outcomes == [True, False]


# --- real data -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fashion(tmp_path_factory):
    """A small net trained for 40 steps of 64 real Fashion-MNIST images (about 52% test accuracy), saved as
    the trainer saves it (mean/std of the training split, class names), and 256 real test images."""
    train, test = data.load("fashion-mnist", "train"), data.load("fashion-mnist", "test")
    mean, std = (list(v) for v in train.stats())
    kwargs = {"num_classes": 10, "in_channels": 1, "input_size": 32, "width": 1 / 16, "head": "gap"}
    torch.manual_seed(0)
    model = create_model("vgg11_bn", **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(40):
        images = train.images[step * 64:(step + 1) * 64]
        loss = torch.nn.functional.cross_entropy(model(prepare(images, 32, mean, std)),
                                                 train.labels[step * 64:(step + 1) * 64])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    ckpt = checkpoint.save(tmp_path_factory.mktemp("fashion") / "best.pt", {
        "model_name": "vgg11_bn", "model_kwargs": kwargs, "model": model.state_dict(),
        "data": {"name": "fashion-mnist", "classes": train.classes, "in_channels": 1, "input_size": 32,
                 "mean": mean, "std": std, "resize": None},
    })
    return {"model": model, "ckpt": ckpt, "images": test.images[:256], "labels": test.labels[:256],
            "mean": mean, "std": std}


def compare(onnx_logits: torch.Tensor, torch_logits: torch.Tensor) -> float:
    diff = (onnx_logits - torch_logits).abs().max().item()
    assert diff <= 1e-4
    assert torch.equal(onnx_logits.argmax(1), torch_logits.argmax(1))
    return diff


@pytest.mark.realdata
@pytest.mark.slow
def test_onnx_export_matches_torch_on_real_fashion_mnist_test_images(fashion, tmp_path):
    model, images, mean, std = fashion["model"], fashion["images"], fashion["mean"], fashion["std"]
    x = prepare(images, 32, mean, std)
    with torch.no_grad():
        expected = model(x)
    assert (expected.argmax(1) == fashion["labels"]).float().mean() > 0.3  # 3x chance: logits that mean something

    plain = export(fashion["ckpt"], "onnx", tmp_path / "plain.onnx")
    compare(run_onnx(plain, x), expected)

    # --include-normalize: the same answers from raw 0-1 pixels
    inside = export(fashion["ckpt"], "onnx", tmp_path / "inside.onnx", include_normalize=True)
    raw = prepare(images, 32, [0.0], [1.0])  # resized to 32, /255, nothing else
    compare(run_onnx(inside, raw), expected)

    # --dynamic-size: one file, two input sizes (the training size and a non-multiple of 32)
    free = export(fashion["ckpt"], "onnx", tmp_path / "free.onnx", dynamic_size=True, include_normalize=True)
    assert onnx_input_dims(free) == ["batch", 1, "height", "width"]
    for size in (32, 45):
        with torch.no_grad():
            at_size = model(prepare(images, size, mean, std))
        compare(run_onnx(free, prepare(images, size, [0.0], [1.0])), at_size)



def test_torchscript_is_scripted_so_it_keeps_the_input_check_and_takes_other_sizes(gap_net, tmp_path):
    path = export(gap_net["ckpt"], "torchscript", tmp_path / "m.torchscript.pt")
    extra = {"classicnets.json": ""}
    net = torch.jit.load(str(path), _extra_files=extra)
    meta = json.loads(extra["classicnets.json"])
    size, channels = int(meta["input_size"]), int(meta["in_channels"])
    assert json.loads(meta["dynamic_size"]) is True
    assert net(torch.rand(3, channels, size + 8, size + 8)).shape[0] == 3
    with pytest.raises(torch.jit.Error, match="channel input"):
        net(torch.rand(1, channels + 1, size, size))
