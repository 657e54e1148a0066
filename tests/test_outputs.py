"""An output never replaces an input: eval --out and export --out naming the checkpoint (the same path, a
relative path to it, a symlink or a hard link) are one line, and the checkpoint keeps its bytes."""

from __future__ import annotations

import hashlib
import json
import os

import pytest
import torch

from classicnets.cli import main
from classicnets.models import create_model
from classicnets.training import checkpoint, paths

KWARGS = {"num_classes": 2, "in_channels": 1, "input_size": 28}


def sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet", **KWARGS)
    return checkpoint.save(tmp_path / "run" / "best.pt", {
        "model_name": "lenet", "model_kwargs": KWARGS, "model": model.state_dict(),
        "data": {"name": "toy", "classes": ["a", "b"], "in_channels": 1, "input_size": 28, "mean": [0.5],
                 "std": [0.25], "resize": None},
    })


def refused(argv: list[str], capsys, protected) -> str:
    """Run the command; it must exit 2 with one line on stderr and leave `protected` as it was."""
    before = sha(protected)
    assert main(argv) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert sha(protected) == before
    return lines[0]


def same_file_spellings(ckpt, tmp_path, monkeypatch):
    """The checkpoint named five ways: as given, relative, through '..', a symlink and a hard link."""
    monkeypatch.chdir(ckpt.parent)
    (tmp_path / "link.pt").symlink_to(ckpt)
    os.link(ckpt, tmp_path / "hard.pt")
    return [str(ckpt), "best.pt", f"../{ckpt.parent.name}/best.pt", str(tmp_path / "link.pt"),
            str(tmp_path / "hard.pt")]


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors", "pt2"])
def test_export_refuses_to_write_over_its_checkpoint(ckpt, tmp_path, monkeypatch, capsys, fmt):
    for out in same_file_spellings(ckpt, tmp_path, monkeypatch):
        line = refused(["export", str(ckpt), "--format", fmt, "--out", out], capsys, ckpt)
        assert f"--out {out} is the input" in line and "writing there would destroy it" in line
    assert checkpoint.load(ckpt)["model_name"] == "lenet"


def test_eval_refuses_to_write_its_report_over_its_checkpoint(ckpt, tmp_path, monkeypatch, capsys):
    for out in same_file_spellings(ckpt, tmp_path, monkeypatch):
        line = refused(["eval", str(ckpt), "--device", "cpu", "--out", out], capsys, ckpt)
        assert f"--out {out} is the input" in line


def test_a_run_dir_input_means_its_last_checkpoint(ckpt, capsys):
    last = checkpoint.save(ckpt.parent / "last.pt", checkpoint.load(ckpt))
    line = refused(["eval", str(ckpt.parent), "--out", str(last)], capsys, last)
    assert "is the input" in line
    line = refused(["export", str(ckpt.parent), "--format", "safetensors", "--out", str(last)], capsys, last)
    assert "is the input" in line


def test_another_checkpoint_a_folder_or_a_path_below_a_file_is_refused_too(ckpt, tmp_path, capsys):
    other = checkpoint.save(tmp_path / "other" / "last.pt", checkpoint.load(ckpt))
    line = refused(["export", str(ckpt), "--format", "torchscript", "--out", str(other)], capsys, other)
    assert "is a classicnets checkpoint" in line
    line = refused(["eval", str(ckpt), "--out", str(other)], capsys, other)
    assert "is a classicnets checkpoint" in line
    line = refused(["export", str(ckpt), "--format", "safetensors", "--out", str(tmp_path)], capsys, ckpt)
    assert "is a folder" in line
    line = refused(["eval", str(ckpt), "--out", str(ckpt / "report.json")], capsys, ckpt)
    assert f"{ckpt} is a file, not a folder" in line


def test_an_earlier_export_is_replaced_and_no_temp_file_is_left(ckpt, tmp_path, capsys):
    out = tmp_path / "m.safetensors"
    for _ in range(2):
        assert main(["export", str(ckpt), "--format", "safetensors", "--out", str(out)]) == 0
    assert out.is_file() and sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors", "run"]


def test_same_file_sees_through_links_and_relative_paths(tmp_path, monkeypatch):
    target = tmp_path / "a.txt"
    target.write_text("x")
    (tmp_path / "sym").symlink_to(target)
    os.link(target, tmp_path / "hard")
    monkeypatch.chdir(tmp_path)
    assert paths.same_file("a.txt", target) and paths.same_file(tmp_path / "sym", target)
    assert paths.same_file(tmp_path / "hard", target) and paths.same_file(tmp_path / "new" / ".." / "a.txt", target)
    assert not paths.same_file(tmp_path / "b.txt", target)


def test_plot_refuses_to_draw_over_a_runs_files(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    records = [{"type": "epoch", "epoch": 1, "train_loss": 1.0, "test_acc": 0.5}]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    (tmp_path / "curves.png").symlink_to(run / "metrics.jsonl")
    for out in (run / "metrics.jsonl", tmp_path / "curves.png"):
        line = refused(["plot", str(run), str(run), "--out", str(out)], capsys, run / "metrics.jsonl")
        assert str(out) in line


@pytest.mark.parametrize("fmt", ["torchscript", "safetensors"])
def test_an_output_never_replaces_a_file_that_is_not_an_earlier_output(ckpt, tmp_path, capsys, fmt):
    for name, content in (("metrics.jsonl", b'{"type": "start"}\n'), ("photo.png", b"\x89PNG\r\n\x1a\n..."),
                          ("t10k-labels-idx1-ubyte.gz", b"\x1f\x8b\x08...")):
        victim = tmp_path / name
        victim.write_bytes(content)
        line = refused(["export", str(ckpt), "--format", fmt, "--out", str(victim)], capsys, victim)
        assert "already exists and is not an earlier output of this command" in line
        line = refused(["eval", str(ckpt), "--out", str(victim)], capsys, victim)
        assert "already exists and is not an earlier output of this command" in line


def test_an_output_is_never_a_device_or_an_empty_path(ckpt, capsys):
    line = refused(["export", str(ckpt), "--format", "safetensors", "--out", "/dev/null"], capsys, ckpt)
    assert "/dev/null is not a regular file" in line
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")  # still the device
    line = refused(["eval", str(ckpt), "--out", " "], capsys, ckpt)
    assert "--out is empty" in line


def test_an_earlier_eval_report_may_be_replaced(ckpt, tmp_path, monkeypatch, capsys):
    from classicnets.data import ArrayDataset
    from classicnets.evaluation import evaluate as real_evaluate

    toy = ArrayDataset(torch.randint(0, 256, (4, 1, 28, 28), dtype=torch.uint8), torch.tensor([0, 1, 0, 1]),
                       ["a", "b"], name="toy", split="test")
    monkeypatch.setattr("classicnets.data.load", lambda *a, **k: toy)
    monkeypatch.setattr("classicnets.evaluation.evaluate", real_evaluate)
    out = tmp_path / "report.json"
    for _ in range(2):
        assert main(["eval", str(ckpt), "--out", str(out), "--json"]) == 0
    assert json.loads(out.read_text())["format"] == "classicnets.eval/1"


def test_plot_never_draws_over_a_file_that_is_not_an_earlier_plot(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 1, "train_loss": 1.0}) + "\n")
    photo = tmp_path / "holiday.png"
    photo.write_bytes(b"\x89PNG\r\n\x1a\n not ours")
    line = refused(["plot", str(run), "--out", str(photo)], capsys, photo)
    assert "already exists and is not an earlier plot" in line
    ours = tmp_path / "comparison.png"
    for _ in range(2):  # an earlier plot of ours is replaced
        assert main(["plot", str(run), "--out", str(ours)]) == 0


def test_plot_refuses_a_metrics_file_far_too_large_without_reading_it(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / "metrics.jsonl", "wb") as f:
        f.truncate(10 * 2**30)
    assert main(["plot", str(run)]) == 2
    assert "far more than a run's metrics" in capsys.readouterr().err


def test_weights_holding_nan_are_refused_and_class_names_are_printed_escaped(ckpt, tmp_path, capsys):
    blob = torch.load(ckpt, weights_only=True)
    blob["model"]["features.0.weight"][0, 0, 0, 0] = float("nan")
    nan = checkpoint.save(tmp_path / "nan.pt", {k: v for k, v in blob.items() if k not in ("format", "version")})
    line = refused(["export", str(nan), "--format", "safetensors", "--out", str(tmp_path / "x.safetensors")],
                   capsys, nan)
    assert "hold NaN or infinity" in line
    from classicnets.evaluation import load_inference_model

    blob = torch.load(ckpt, weights_only=True)
    blob["data"]["classes"] = ["a\nb\x1b[31m", "c"]
    named = checkpoint.save(tmp_path / "named.pt", {k: v for k, v in blob.items() if k not in ("format", "version")})
    assert load_inference_model(named, "cpu").classes == ["a\\nb\\x1b[31m", "c"]
