"""Inputs from a second sweep of hostile files: each is one line that says what the thing really is."""

from __future__ import annotations

import os

import pytest
import torch
from PIL import Image

from classicnets import data
from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.models import create_model
from classicnets.training import checkpoint

KWARGS = {"num_classes": 2, "in_channels": 1, "input_size": 28}


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    return checkpoint.save(tmp_path / "run" / "best.pt", {
        "model_name": "lenet", "model_kwargs": KWARGS, "model": create_model("lenet", **KWARGS).state_dict(),
        "data": {"name": "toy", "classes": ["a", "b"], "in_channels": 1, "input_size": 28, "mean": [0.5],
                 "std": [0.25], "resize": None},
    })


def one_line(argv, capsys) -> str:
    assert main(argv) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def test_our_own_exports_given_as_a_checkpoint_say_what_they_are(ckpt, tmp_path, capsys):
    for fmt, kind in (("torchscript", "TorchScript"), ("pt2", "pt2")):
        out = tmp_path / f"m.{fmt}"
        assert main(["export", str(ckpt), "--format", fmt, "--out", str(out)]) == 0
        capsys.readouterr()
        assert f"is a {kind} export, not a checkpoint" in one_line(["eval", str(out)], capsys)


def test_a_pickle_that_would_run_code_is_called_unsafe_not_damaged(tmp_path, capsys):
    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    line = one_line(["eval", str(evil)], capsys)
    assert "unsafe to load" in line and "system" in line


def test_a_device_or_folder_where_a_file_belongs_is_named_as_such(ckpt, tmp_path, capsys):
    assert "is not a regular file" in one_line(["eval", "/dev/zero"], capsys)
    assert "is not a regular file" in one_line(["predict", str(ckpt), str(tmp_path)], capsys)
    assert "is not a metrics.jsonl" in one_line(["plot", str(ckpt)], capsys)


def test_a_class_name_far_longer_than_a_folder_name_is_refused(ckpt, tmp_path, capsys):
    blob = torch.load(ckpt, weights_only=True)
    blob["data"]["classes"] = ["x" * 100_000, "b"]
    long = checkpoint.save(tmp_path / "long.pt", {k: v for k, v in blob.items() if k not in ("format", "version")})
    assert "one per output of the net" in one_line(["eval", str(long)], capsys)


def test_an_image_folder_with_one_class_is_refused(tmp_path):
    (tmp_path / "only").mkdir()
    for k in range(4):
        Image.new("L", (8, 8), color=k).save(tmp_path / "only" / f"{k}.png")
    with pytest.raises(ClassicNetsError, match="one class subfolder .* a classifier needs at least two"):
        data.load(f"folder:{tmp_path}", "train")


def test_resuming_a_run_that_stopped_before_its_first_checkpoint_says_so(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "metrics.jsonl").write_text('{"type": "start"}\n')
    line = one_line(["train", "--resume", str(run)], capsys)
    assert "holds no checkpoint: that run stopped before it saved its first one" in line
