"""predict, export and the eval/predict/export commands, on a tiny checkpoint and a tiny image folder."""

from __future__ import annotations

import json
import struct
import sys
import warnings

import pytest
import torch
from PIL import Image

from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.evaluation import load_inference_model
from classicnets.export import (
    EXTRA_FILE,
    export,
    load_safetensors,
    model_from_safetensors,
    save_safetensors,
)
from classicnets.models import create_model
from classicnets.predict import predict
from classicnets.training import checkpoint
from helpers import error_of

CLASSES = ["alpha", "beta", "gamma"]
MEAN, STD = [0.5], [0.25]
KWARGS = {"num_classes": 3, "in_channels": 1, "input_size": 32, "width": 1 / 16}


def write_png(image: torch.Tensor, path: str) -> None:
    array = image.permute(1, 2, 0).numpy()
    Image.fromarray(array[..., 0] if array.shape[2] == 1 else array).save(path)


def write_folder(root, classes, per_class=2, size=32, seed=0):
    """An image folder with train/ and val/ splits of random gray PNGs."""
    g = torch.Generator().manual_seed(seed)
    for split in ("train", "val"):
        for name in classes:
            (root / split / name).mkdir(parents=True)
            for i in range(per_class):
                image = torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=g)
                write_png(image, str(root / split / name / f"{i}.png"))
    return root


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("exp")
    folder = write_folder(root / "shapes", CLASSES)
    torch.manual_seed(0)
    model = create_model("vgg11_bn", **KWARGS).eval()
    ckpt = checkpoint.save(root / "run" / "best.pt", {
        "model_name": "vgg11_bn", "model_kwargs": KWARGS, "model": model.state_dict(),
        "data": {"name": f"folder:{folder}", "classes": CLASSES, "in_channels": 1, "input_size": 32,
                 "mean": MEAN, "std": STD, "resize": None},
    })
    return {"root": root, "folder": folder, "model": model, "ckpt": ckpt}


def reference_logits(model, x_uint8):
    return model((x_uint8.float() / 255 - MEAN[0]) / STD[0])


# --- predict ---------------------------------------------------------------------------------------------

def test_predict_gives_the_top_k_classes_with_softmax_probabilities(setup):
    files = sorted((setup["folder"] / "val" / "beta").glob("*.png"))
    result = predict(setup["ckpt"], files, topk=2, device="cpu")
    import numpy as np

    pixels = torch.stack([torch.from_numpy(np.asarray(Image.open(f)).copy())[None] for f in files])
    with torch.no_grad():
        probs = reference_logits(setup["model"], pixels).softmax(1)
    for prediction, p, f in zip(result, probs, files):
        assert prediction.source == str(f)
        values, indices = p.topk(2)
        assert [c for c, _ in prediction.top] == [CLASSES[i] for i in indices.tolist()]
        assert [v for _, v in prediction.top] == pytest.approx(values.tolist(), abs=1e-6)


def test_predict_converts_a_colour_image_to_the_nets_gray_and_resizes_it(setup, tmp_path):
    rgb = torch.randint(0, 256, (3, 48, 64), dtype=torch.uint8)
    write_png(rgb, str(tmp_path / "colour.png"))
    (prediction,) = predict(setup["ckpt"], [tmp_path / "colour.png"], device="cpu")
    assert len(prediction.top) == 3  # top-5 of 3 classes: all of them
    assert sum(v for _, v in prediction.top) == pytest.approx(1.0, abs=1e-5)


def test_predict_names_a_missing_or_unreadable_image(setup, tmp_path):
    with pytest.raises(ClassicNetsError, match="image .*nothere.png does not exist"):
        predict(setup["ckpt"], [tmp_path / "nothere.png"])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(ClassicNetsError, match="cannot read image .*notes.png"):
        predict(setup["ckpt"], [tmp_path / "notes.png"])


def test_predict_command_prints_classes_and_fails_cleanly_on_a_bad_image(setup, tmp_path, capsys):
    image = next((setup["folder"] / "val" / "gamma").glob("*.png"))
    assert main(["predict", str(setup["ckpt"]), str(image), "--topk", "2", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{image}:") and out.count("%") == 2
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8garbage")
    assert main(["predict", str(setup["ckpt"]), str(tmp_path / "bad.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("classicnets: error: cannot read image") and err.count("\n") == 1


# --- export ----------------------------------------------------------------------------------------------

def test_torchscript_export_round_trips_with_metadata(setup, tmp_path):
    path = export(setup["ckpt"], "torchscript", tmp_path / "m.torchscript.pt")
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit is deprecated upstream
        loaded = torch.jit.load(str(path), _extra_files=extra)
    x = torch.randn(3, 1, 32, 32)
    assert torch.allclose(loaded(x), setup["model"](x), atol=1e-5)
    meta = json.loads(extra[EXTRA_FILE])
    assert json.loads(meta["classes"]) == CLASSES and json.loads(meta["mean"]) == MEAN


@pytest.mark.slow
def test_pt2_export_round_trips_for_any_batch_size(setup, tmp_path):
    path = export(setup["ckpt"], "pt2", tmp_path / "m.pt2")
    module = torch.export.load(path).module()
    for n in (1, 5):
        x = torch.randn(n, 1, 32, 32)
        assert torch.allclose(module(x), setup["model"](x), atol=1e-5)


def test_safetensors_export_rebuilds_the_same_net(setup, tmp_path):
    path = export(setup["ckpt"], "safetensors", tmp_path / "m.safetensors")
    model, info = model_from_safetensors(path)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), setup["model"](x))
    assert info["model_name"] == "vgg11_bn" and info["classes"] == CLASSES and info["std"] == STD


def test_safetensors_file_follows_the_published_layout(tmp_path):
    tensors = {"w": torch.arange(6, dtype=torch.float32).view(2, 3), "n": torch.tensor(7)}
    path = save_safetensors(tensors, tmp_path / "t.safetensors", {"note": "hi"})
    raw = path.read_bytes()
    (size,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + size])
    assert (8 + size) % 8 == 0  # data aligned
    assert header["__metadata__"] == {"note": "hi"}
    assert header["w"] == {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
    assert header["n"] == {"dtype": "I64", "shape": [], "data_offsets": [24, 32]}
    assert struct.unpack("<6f", raw[8 + size:8 + size + 24]) == (0, 1, 2, 3, 4, 5)


def test_safetensors_round_trips_every_dtype_and_empty_tensors(tmp_path):
    tensors = {
        "bf16": torch.randn(3, 2).to(torch.bfloat16), "f16": torch.randn(4).half(), "f64": torch.randn(2, 2).double(),
        "i8": torch.tensor([-3, 4], dtype=torch.int8), "u8": torch.tensor([0, 255], dtype=torch.uint8),
        "flag": torch.tensor([True, False, True]), "empty": torch.zeros(0, 5), "scalar": torch.tensor(2.5),
    }
    back, meta = load_safetensors(save_safetensors(tensors, tmp_path / "t.safetensors"))
    assert meta == {} and list(back) == list(tensors)
    for name, tensor in tensors.items():
        assert back[name].dtype == tensor.dtype and torch.equal(back[name], tensor), name


def test_safetensors_package_reads_our_files(setup, tmp_path):
    from safetensors.torch import load_file

    path = export(setup["ckpt"], "safetensors", tmp_path / "m.safetensors")
    ours, _ = load_safetensors(path)
    theirs = load_file(str(path))
    assert all(torch.equal(ours[k], theirs[k]) for k in ours) and set(ours) == set(theirs)


def test_safetensors_reader_refuses_a_damaged_file(tmp_path):
    path = save_safetensors({"w": torch.ones(4)}, tmp_path / "t.safetensors")
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(ClassicNetsError, match="do not match its shape"):
        load_safetensors(path)
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 10**9))
    with pytest.raises(ClassicNetsError, match="not a safetensors file"):
        load_safetensors(tmp_path / "junk.safetensors")


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_onnx_export_without_onnx_says_what_to_install(setup, tmp_path, monkeypatch, package):
    monkeypatch.setitem(sys.modules, package, None)  # as if not installed: `import` raises ImportError
    message = error_of(lambda: export(setup["ckpt"], "onnx", tmp_path / "m.onnx"))
    assert f"needs the {package} package: pip install onnx onnxscript" in message
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
def test_onnx_export_round_trips_in_onnxruntime_with_the_batch_free_and_the_size_fixed(setup, tmp_path):
    import onnx
    import onnxruntime

    path = export(setup["ckpt"], "onnx", tmp_path / "m.onnx")
    session = onnxruntime.InferenceSession(str(path))
    for n in (1, 3):
        x = torch.randn(n, 1, 32, 32)
        (logits,) = session.run(None, {"images": x.numpy()})
        assert torch.allclose(torch.from_numpy(logits), setup["model"](x), atol=1e-4)
    graph = onnx.load(str(path))
    dims = [d.dim_param or d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 1, 32, 32]
    meta = {p.key: p.value for p in graph.metadata_props}
    assert meta["dynamic_size"] == "false" and meta["normalized_inside"] == "false"
    assert json.loads(meta["classes"]) == CLASSES


def test_export_command_writes_beside_the_checkpoint(setup, capsys):
    assert main(["export", str(setup["ckpt"]), "--format", "safetensors"]) == 0
    expected = setup["ckpt"].parent / "best.safetensors"
    assert expected.is_file() and f"wrote {expected}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:  # argparse refuses an unknown format itself
        main(["export", str(setup["ckpt"]), "--format", "zip"])
    assert stop.value.code == 2


# --- the eval command ------------------------------------------------------------------------------------

def test_eval_command_reports_errors_per_class_accuracy_and_confusion(setup, capsys, tmp_path):
    out_file = tmp_path / "eval.json"
    assert main(["eval", str(setup["ckpt"]), "--device", "cpu", "--out", str(out_file)]) == 0
    text = capsys.readouterr().out
    assert "top-1 error" in text and "top-5 error" in text and "confusion matrix" in text
    assert all(name in text for name in CLASSES)
    report = json.loads(out_file.read_text())
    assert report["split"] == "val" and report["count"] == 6 and report["top5_error"] == 0.0
    # the same numbers as the Python API on the same data
    from classicnets import data
    from classicnets.evaluation import evaluate

    direct = evaluate(setup["ckpt"], data.load(f"folder:{setup['folder']}", "val"), device="cpu")
    assert report["top1_error"] == pytest.approx(direct.top1_error)


def test_eval_command_runs_multi_scale_multi_crop_dense_as_json(setup, capsys):
    argv = ["eval", str(setup["ckpt"]), "--scales", "32,40", "--crops", "multi", "--dense", "--json",
            "--device", "cpu"]
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["scales"] == [32, 40] and report["dense"] and report["crops"] == "multi"
    assert report["views"] == (2 + 2) + (50 + 2)  # Q=32: one crop position; Q=40: the 5x5 grid


def test_eval_command_refuses_data_with_other_classes(setup, tmp_path, capsys):
    other = write_folder(tmp_path / "digits", ["one", "two"])
    assert main(["eval", str(setup["ckpt"]), "--data", f"folder:{other}", "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "has 2 classes but vgg11_bn" in err and "predicts 3" in err


def test_eval_command_refuses_a_scale_below_the_training_size(setup, capsys):
    assert main(["eval", str(setup["ckpt"]), "--scales", "24", "--device", "cpu"]) == 2
    assert "below the training size 32" in capsys.readouterr().err


def test_loading_a_run_dir_takes_its_last_checkpoint(setup, tmp_path):
    run = tmp_path / "run"
    checkpoint.save(run / "last.pt", checkpoint.load(setup["ckpt"]))
    loaded = load_inference_model(run, "cpu")
    assert loaded.classes == CLASSES and loaded.mean == MEAN
