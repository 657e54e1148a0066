"""Damaged, hostile and mislabelled checkpoints, full and read-only disks, bad --config files and arguments,
damaged metrics.jsonl: every one ends in exactly one line on stderr naming the file and the fix (exit 2),
and no file the user had changes."""

from __future__ import annotations

import argparse
import errno
import hashlib
import io
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.models import create_model
from classicnets.training import checkpoint

LENET = {"num_classes": 2, "in_channels": 1, "input_size": 28}
VGG = {"num_classes": 2, "in_channels": 1, "input_size": 32, "width": 0.125}
DATA = {"name": "toy", "classes": ["a", "b"], "in_channels": 1, "input_size": 28, "mean": [0.5], "std": [0.25],
        "resize": None}


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lenet_payload() -> dict:
    torch.manual_seed(0)
    return {"model_name": "lenet", "model_kwargs": dict(LENET), "model": create_model("lenet", **LENET).state_dict(),
            "data": dict(DATA)}


def torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def resumable(payload: dict) -> dict:
    """The training state a last.pt adds, shaped like the trainer's (SGD with momentum, one rank)."""
    model = create_model(payload["model_name"], **payload["model_kwargs"])
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return {**payload, "config": {"model": payload["model_name"]}, "optimizer": optimizer.state_dict(),
            "scheduler": {"step": 0, "scale": 1.0, "best": 0.0, "bad_epochs": 0, "drops": 0},
            "progress": {"epoch": 0, "step": 0, "micro_batch": 4, "accum_steps": 1, "world_size": 1},
            "rng": [checkpoint.rng_state(torch.device("cpu"))], "loader": [{"epoch": 0, "batch": 0}],
            "metrics": [], "epoch": 0, "step": 0}


# name -> (how to make the file, what the one line says)
def make_files(folder: Path) -> dict[str, tuple[Path, str]]:
    good = lenet_payload()
    lenet_weights = good["model"]
    expanded = {k: v for k, v in lenet_weights.items()}
    expanded["classifier.0.weight"] = torch.zeros(1).expand(*lenet_weights["classifier.0.weight"].shape)
    files: dict[str, tuple[bytes | dict, str]] = {
        "empty": (b"", "is empty (0 bytes)"),
        "random": (bytes(range(256)) * 16, "is not a torch file"),
        "text": (b"model = vgg16\n", "is not a torch file"),
        "truncated": (torch_bytes({"format": checkpoint.FORMAT, **good})[:60_000], "damaged torch file"),
        "plain_pickle": (b"\x80\x04\x95" + bytes(40), "not a readable torch file"),
        "unsafe": (torch_bytes({"format": checkpoint.FORMAT, "x": argparse.Namespace(a=1)}),
                   "unsafe to load (argparse.Namespace"),
        "not_ours": (torch_bytes({"weights": [1, 2]}), "not a classicnets checkpoint"),
        "bare_state_dict": (torch_bytes(lenet_weights), "bare state_dict"),
        "no_model": ({**good, "model": None}, "'model' is a NoneType"),
        "missing_model": ({k: v for k, v in good.items() if k != "model"}, "lacks 'model'"),
        "kwargs_list": ({**good, "model_kwargs": [1, 2]}, "'model_kwargs' is a list"),
        "unknown_model": ({**good, "model_name": "resnet50"}, "unknown model 'resnet50'"),
        "width_1000": ({**good, "model_name": "vgg11", "model_kwargs": {**VGG, "width": 1000}},
                       "model_kwargs width must be a number in 0..64, not 1000"),
        "huge_net": ({**good, "model_name": "vgg11", "model_kwargs": {**VGG, "width": 8}},
                     "describe a vgg11 of"),
        "lenet_as_vgg": ({**good, "model_name": "vgg11", "model_kwargs": VGG},
                         "the weights' 'features.0.weight' has shape (6, 1, 5, 5) but vgg11"),
        "bad_option": ({**good, "model_kwargs": {**LENET, "widht": 1}}, "do not build lenet"),
        "expanded": ({**good, "model": expanded}, "'classifier.0.weight' is not a plain stored tensor"),
        "bad_classes": ({**good, "data": {**DATA, "classes": ["a", "b", "c"]}}, "data classes="),
        "newline_in_name": ({**good, "model_name": "vgg\n11"}, "unknown model 'vgg\\n11'"),
        "newer": ({**good, "version": 99}, "written by a newer classicnets"),
    }
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, (content, says) in files.items():
        path = folder / f"{name}.pt"
        if isinstance(content, dict):
            content = torch_bytes({"format": checkpoint.FORMAT, "version": 1, **content})
        path.write_bytes(content)
        made[name] = (path, says)
    return made


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    image = root / "x.png"
    Image.fromarray(torch.randint(0, 256, (28, 28), dtype=torch.uint8).numpy()).save(image)
    folder = root / "shapes"  # a tiny image folder for `train --warm-start`
    g = torch.Generator().manual_seed(0)
    for split in ("train", "val"):
        for name in ("a", "b"):
            (folder / split / name).mkdir(parents=True)
            for i in range(4):
                pixels = torch.randint(0, 256, (32, 32), dtype=torch.uint8, generator=g).numpy()
                Image.fromarray(pixels).save(folder / split / name / f"{i}.png")
    good = checkpoint.save(root / "good" / "last.pt", resumable(lenet_payload()))
    return {"root": root, "image": image, "folder": folder, "files": make_files(root / "files"), "good": good}


def run_refused(argv: list[str], capsys, *protected: Path) -> str:
    """Run the command in-process: exit 2, exactly one line on stderr, the protected files unchanged."""
    before = {p: sha(p) for p in protected}
    try:
        code = main(argv)
    except SystemExit as stop:  # argparse's own refusals
        code = stop.code
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2 and len(lines) == 1, captured.err
    assert {p: sha(p) for p in protected} == before
    return lines[0]


def command(kind: str, path: Path, setup, tmp_path: Path) -> list[str]:
    train = ["train", "--recipe", "custom", "--data", f"folder:{setup['folder']}", "--model", "vgg11", "--width",
             "0.125", "--size", "32", "--epochs", "1", "--batch-size", "4", "--progress", "none", "--no-plots",
             "--tensorboard", "off", "--threads", "1", "--run-dir", str(tmp_path / "run")]
    return {
        "eval": ["eval", str(path), "--device", "cpu"],
        "predict": ["predict", str(path), str(setup["image"]), "--device", "cpu"],
        "export": ["export", str(path), "--format", "safetensors", "--out", str(tmp_path / "m.safetensors")],
        "resume": ["train", "--resume", str(path)],
        "warm-start": [*train, "--warm-start", str(path)],
    }[kind]


CASES = ["empty", "random", "text", "truncated", "plain_pickle", "unsafe", "not_ours", "bare_state_dict", "no_model",
         "missing_model", "kwargs_list", "unknown_model", "width_1000", "huge_net", "lenet_as_vgg", "bad_option",
         "expanded", "bad_classes", "newline_in_name", "newer"]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("kind", ["eval", "predict", "export", "resume"])
def test_a_bad_checkpoint_is_one_line_naming_it(setup, tmp_path, capsys, kind, case):
    path, says = setup["files"][case]
    line = run_refused(command(kind, path, setup, tmp_path), capsys, path)
    assert line.startswith("classicnets: error: ") and str(path) in line and says in line, line
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.parametrize("case", ["empty", "random", "unsafe", "missing_model", "width_1000", "lenet_as_vgg"])
def test_a_bad_warm_start_checkpoint_is_one_line_naming_it(setup, tmp_path, capsys, case):
    path, says = setup["files"][case]
    line = run_refused(command("warm-start", path, setup, tmp_path), capsys, path)
    assert str(path) in line and says in line, line


def test_resuming_from_best_pt_says_to_resume_from_the_run_dir(setup, tmp_path, capsys):
    best = checkpoint.save(tmp_path / "run" / "best.pt", {**lenet_payload(), "config": {"model": "lenet"}})
    line = run_refused(["train", "--resume", str(best)], capsys, best)
    assert f"{best} holds the best weights, for eval, and no training state" in line
    assert f"resume from the run dir {best.parent} (its last.pt)" in line


def test_a_resumable_checkpoint_passes_and_damaged_training_state_is_refused(setup):
    good = checkpoint.load(setup["good"], for_resume=True)
    assert checkpoint.require_resumable(good, setup["good"]) is good
    damaged = {
        "progress": {**good["progress"], "world_size": 0},
        "rng": [],
        "loader": [{"epoch": "x"}],
        "scheduler": {"step": 0},
        "config": {"model": "vgg11"},
        "optimizer": {"state": {}, "param_groups": [{"params": [0, 1]}]},
    }
    for key, value in damaged.items():
        with pytest.raises(ClassicNetsError, match="cannot be resumed") as refused:
            checkpoint.require_resumable({**good, key: value}, "run/last.pt")
        assert "\n" not in str(refused.value)
    momentum = {**good["optimizer"], "state": {0: {"momentum_buffer": torch.zeros(3)}}}
    with pytest.raises(ClassicNetsError, match="the optimizer's momentum_buffer of parameter 0 has shape"):
        checkpoint.require_resumable({**good, "optimizer": momentum}, "run/last.pt")


def test_a_checkpoint_is_checked_before_any_net_is_built(setup, monkeypatch):
    """The 295 GB net is never allocated: create_model is only reached on the meta device."""
    import classicnets.training.checkpoint as module

    real, devices = module.create_model, []

    def spy(name, **kwargs):
        devices.append(torch.get_default_device().type)
        return real(name, **kwargs)

    monkeypatch.setattr(module, "create_model", spy)
    ckpt = checkpoint.load(setup["good"])
    with pytest.raises(ClassicNetsError):
        checkpoint.build_model({**ckpt, "model_name": "vgg11", "model_kwargs": {**VGG, "width": 60}})
    assert devices == ["meta", "meta"]
    assert checkpoint.build_model(ckpt)(torch.zeros(1, 1, 28, 28)).shape == (1, 2)
    assert devices[-1] == "cpu"


def test_a_safetensors_export_is_checked_before_its_net_is_built(tmp_path):
    from classicnets.export import METADATA_FORMAT, model_from_safetensors, save_safetensors

    weights = lenet_payload()["model"]
    meta = {"format": METADATA_FORMAT, "model_name": "vgg11", "model_kwargs": '{"width": 1000}'}
    for name, metadata, says in [
        ("wide", meta, "model_kwargs width must be a number in 0..64, not 1000"),
        ("lenet_as_vgg", {**meta, "model_kwargs": '{"num_classes": 2, "in_channels": 1, "input_size": 32}'},
         "describe a vgg11 of"),
        ("not_json", {**meta, "model_kwargs": "{width"}, "its metadata is not JSON"),
    ]:
        path = save_safetensors(weights, tmp_path / f"{name}.safetensors", metadata)
        with pytest.raises(ClassicNetsError, match="export it again") as refused:
            model_from_safetensors(path)
        assert says in str(refused.value) and str(path) in str(refused.value)


# --- arguments and other input files -------------------------------------------------------------------

@pytest.mark.parametrize("argv, says", [
    (["eval", "{good}", "--batch-size", "0"], "--batch-size must be 1 or more; got 0"),
    (["eval", "{good}", "--grid", "0"], "--grid must be 1 or more; got 0"),
    (["eval", "{good}", "--limit", "-3"], "--limit must be 1 or more; got -3"),
    (["eval", "{good}", "--scales", "0"], "expected integers in 1..4096"),
    (["eval", "{good}", "--scales", "100000"], "expected integers in 1..4096"),
    (["predict", "{good}", "{image}", "--topk", "0"], "--topk must be 1 or more; got 0"),
    (["eval", "{good}", "--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N"),
])
def test_out_of_range_arguments_are_one_line(setup, capsys, argv, says):
    argv = [a.format(good=setup["good"], image=setup["image"]) for a in argv]
    assert says in run_refused(argv, capsys, setup["good"])


def test_a_config_that_is_binary_or_a_folder_is_one_line(tmp_path, capsys):
    binary = tmp_path / "config.toml"
    binary.write_bytes(bytes(range(256)))
    for config in (binary, tmp_path):
        line = run_refused(["train", "--config", str(config), "--print-config"], capsys, binary)
        assert str(config) in line
    line = run_refused(["train", "--resume", str(tmp_path / "nothere"), "--config", str(binary)], capsys, binary)
    assert str(binary) in line and "is not text" in line
    binary.write_text('epochs = "ten"\n')
    assert f"config file {binary}: epochs must be an integer" in run_refused(
        ["train", "--config", str(binary), "--print-config"], capsys, binary)


@pytest.mark.parametrize("content, says", [
    (b'{"type": "epoch", "epoch": 1, "test_acc": 0.5}\n\xff\xfe\x00garbage\n', ":2 is not a JSON line"),
    (b'{"type": "epoch", "test_acc": 0.5}\n', ":1 is an epoch record without a whole epoch number"),
    (b'[1, 2]\n', ":1 is not a JSON object"),
    (b'{"type": "epoch", "epoch": 1, "test_acc": "high"}\n', ":1 has a test_acc that is not a number"),
    (b'{"type": "summary", "confusion": [[1, 2]], "classes": ["a"]}\n', ":1 has a confusion matrix that is not a square"),
    (b"[" * 100_000 + b"\n", ":1 is not a JSON line"),
])
def test_plot_of_a_damaged_metrics_file_names_the_line(tmp_path, capsys, content, says):
    (tmp_path / "metrics.jsonl").write_bytes(content)
    line = run_refused(["plot", str(tmp_path)], capsys, tmp_path / "metrics.jsonl")
    assert f"{tmp_path / 'metrics.jsonl'}{says}" in line and "delete that line" in line


def test_plot_out_must_be_an_image_name(tmp_path, capsys):
    (tmp_path / "metrics.jsonl").write_text('{"type": "epoch", "epoch": 1, "test_acc": 0.5}\n')
    line = run_refused(["plot", str(tmp_path), str(tmp_path), "--out", str(tmp_path / "last.pt")], capsys,
                       tmp_path / "metrics.jsonl")
    assert "is not an image file name" in line


# --- writing: full disks, read-only folders, killed writes --------------------------------------------

def temp_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if ".tmp" in p.name)


def write_fails(code: int, *, like_torch: bool = False):
    """A torch.save that writes some bytes, then fails as the disk does (torch wraps the OSError)."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        if not hasattr(f, "write"):
            return real(obj, f, *args, **kwargs)
        f.write(b"x" * 4096)
        if like_torch:
            try:
                raise OSError(code, os.strerror(code))
            except OSError:
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")
        raise OSError(code, os.strerror(code))

    return save


@pytest.mark.parametrize("like_torch", [False, True])
def test_a_full_disk_while_saving_keeps_the_previous_checkpoint(tmp_path, monkeypatch, like_torch):
    path = checkpoint.save(tmp_path / "last.pt", lenet_payload())
    before = sha(path)
    monkeypatch.setattr(torch, "save", write_fails(errno.ENOSPC, like_torch=like_torch))
    with pytest.raises(ClassicNetsError) as refused:
        checkpoint.save(path, lenet_payload())
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"could not write {path}: no space left on device")
    assert "the previous last.pt is intact" in message
    assert isinstance(refused.value, OSError) and refused.value.errno == errno.ENOSPC  # for the trainer's advice
    monkeypatch.undo()
    assert sha(path) == before and not temp_files(tmp_path)
    assert checkpoint.load(path)["model_name"] == "lenet"


def test_a_read_only_folder_is_one_line_for_save_and_export(setup, tmp_path, monkeypatch, capsys):
    path = checkpoint.save(tmp_path / "last.pt", lenet_payload())
    before = sha(path)

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(checkpoint.tempfile, "mkstemp", read_only)
    with pytest.raises(ClassicNetsError, match=r"^could not write .*last\.pt: the file system is read-only"):
        checkpoint.save(path, lenet_payload())
    line = run_refused(["export", str(path), "--format", "torchscript", "--out", str(tmp_path / "m.pt")], capsys,
                       path)
    assert f"could not write {tmp_path / 'm.pt'}: the file system is read-only" in line
    assert sha(path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]


@pytest.mark.parametrize("fmt", ["torchscript", "pt2", "safetensors"])
def test_an_export_that_fails_mid_write_leaves_no_partial_file(setup, tmp_path, monkeypatch, capsys, fmt):
    from classicnets import export

    out = tmp_path / f"m.{fmt}"
    earlier = b"an earlier export, with its classicnets.export metadata"
    out.write_bytes(earlier)
    real_write = Path.write_bytes

    def full(self, data):
        if ".tmp" in self.name:
            real_write(self, bytes(data)[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(self, data)

    class FullFile(io.FileIO):
        def write(self, data):
            super().write(bytes(data)[:100])
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_bytes", full)  # torchscript and pt2 are serialised, then written
    monkeypatch.setattr(export, "open", lambda path, mode="r": FullFile(path, "wb"), raising=False)  # safetensors
    line = run_refused(["export", str(setup["good"]), "--format", fmt, "--out", str(out)], capsys, out,
                       setup["good"])
    assert f"could not write {out}: no space left on device" in line
    assert out.read_bytes() == earlier and not temp_files(tmp_path)


def test_an_export_below_a_file_is_one_line(setup, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "sub" / "m.safetensors"
    line = run_refused(["export", str(setup["good"]), "--format", "safetensors", "--out", str(out)], capsys,
                       blocker)
    assert f"{blocker} is a file, not a folder" in line


def mount_tmpfs(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
                          capture_output=True, check=False)
    return done.returncode == 0


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    if not mount_tmpfs(disk, "1m"):
        pytest.skip("needs root and tmpfs for a real small disk (the monkeypatched variants ran)")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], capture_output=True, check=False)


def test_a_real_full_disk_keeps_the_previous_checkpoint_and_exports_leave_nothing(setup, small_disk, capsys):
    path = checkpoint.save(small_disk / "last.pt", lenet_payload())
    before = sha(path)
    with pytest.raises(ClassicNetsError) as refused:
        checkpoint.save(path, {**lenet_payload(), "ballast": torch.zeros(400_000)})
    assert "\n" not in str(refused.value) and "no space left on device" in str(refused.value)
    assert sha(path) == before and checkpoint.load(path)["model_name"] == "lenet"
    (small_disk / "filler").write_bytes(b"\0" * (shutil.disk_usage(small_disk).free - 64 * 1024))
    for fmt in ("torchscript", "pt2", "safetensors"):
        out = small_disk / f"m.{fmt}"
        line = run_refused(["export", str(setup["good"]), "--format", fmt, "--out", str(out)], capsys, path)
        assert f"could not write {out}: no space left on device" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "last.pt"]


def test_a_real_read_only_disk_is_one_line(setup, small_disk, capsys):
    path = checkpoint.save(small_disk / "last.pt", lenet_payload())
    before = sha(path)
    done = subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], capture_output=True, check=False)
    if done.returncode:
        pytest.skip("cannot remount the tmpfs read-only here")
    with pytest.raises(ClassicNetsError, match="the file system is read-only"):
        checkpoint.save(path, lenet_payload())
    for out in (small_disk / "m.safetensors", small_disk / "new" / "m.safetensors"):
        line = run_refused(["export", str(setup["good"]), "--format", "safetensors", "--out", str(out)], capsys,
                           path)
        assert "read-only" in line
    assert sha(path) == before


def test_remove_partial_writes_deletes_only_temp_files_of_interrupted_writes(tmp_path):
    keep = ["last.pt", "best.pt", "notes.tmp", ".hidden", ".last.pt.tmp", "metrics.jsonl"]
    stale = [".last.pt.k2x9_ab1.tmp", ".best.pt.0a1b2c3d.tmp", ".m.pt2.abcdefgh.tmp.pt2"]
    for name in keep + stale:
        (tmp_path / name).write_bytes(b"x")
    removed = checkpoint.remove_partial_writes(tmp_path)
    assert sorted(p.name for p in removed) == sorted(stale)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)
    assert checkpoint.remove_partial_writes(tmp_path / "nothere") == []


@pytest.mark.slow
def test_a_write_killed_midway_leaves_a_temp_file_that_remove_partial_writes_deletes(tmp_path):
    path = checkpoint.save(tmp_path / "last.pt", lenet_payload())
    before = sha(path)
    code = textwrap.dedent(f"""
        import sys, time, torch
        from classicnets.training import checkpoint
        real = torch.save
        def slow(obj, f, *a, **k):
            f.write(b"half a checkpoint"); f.flush(); print("writing", flush=True); time.sleep(60)
        torch.save = slow
        checkpoint.save({str(path)!r}, {{"model_name": "lenet"}})
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert len(temp_files(tmp_path)) == 1 and sha(path) == before
    assert checkpoint.remove_partial_writes(tmp_path) and not temp_files(tmp_path)
    assert checkpoint.load(path)["model_name"] == "lenet"


# --- any bytes: a checkpoint or one ClassicNetsError --------------------------------------------------

GOOD = torch_bytes({"format": checkpoint.FORMAT, "version": 1, **lenet_payload()})
_pickle = next(i for i in zipfile.ZipFile(io.BytesIO(GOOD)).infolist() if i.filename.endswith("data.pkl"))
PICKLE = (_pickle.header_offset + 30 + len(_pickle.filename), _pickle.header_offset + 30 + len(_pickle.filename)
          + _pickle.file_size + 64)


def load_or_refuse(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    try:
        ckpt = checkpoint.load(path)
    except ClassicNetsError as e:
        assert "\n" not in str(e) and str(path) in str(e)
        return
    assert isinstance(ckpt, dict) and ckpt["format"] == checkpoint.FORMAT
    checkpoint.build_model(ckpt, path)  # what passed the check builds


mutation = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(GOOD) - 1), st.just(0)),
    st.tuples(st.just("flip"), st.one_of(st.integers(*PICKLE), st.integers(len(GOOD) - 3000, len(GOOD) - 1),
                                         st.integers(0, len(GOOD) - 1)), st.integers(1, 255)),
    st.tuples(st.just("append"), st.integers(1, 4096), st.integers(0, 255)),
)


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.one_of(st.binary(max_size=4096), st.binary(max_size=4096).map(lambda b: b"PK\x03\x04" + b),
                      st.binary(max_size=4096).map(lambda b: b"\x80\x02" + b)))
def test_any_bytes_are_a_checkpoint_or_one_clear_error(tmp_path, data):
    load_or_refuse(tmp_path / "any.pt", data)


@pytest.mark.slow
@settings(max_examples=250, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(changes=st.lists(mutation, min_size=1, max_size=3))
def test_any_damage_to_a_checkpoint_is_the_checkpoint_or_one_clear_error(tmp_path, changes):
    data = bytearray(GOOD)
    for kind, where, value in changes:
        if kind == "truncate":
            data = data[:where]
        elif kind == "flip" and where < len(data):
            data[where] ^= value
        elif kind == "append":
            data += bytes([value]) * where
    load_or_refuse(tmp_path / "damaged.pt", bytes(data))


leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(), st.text(max_size=8),
                 st.builds(torch.zeros, st.integers(0, 3)))
value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner,
                                                                                     max_size=3), max_leaves=8)
KEYS = ["model_name", "model_kwargs", "model", "data", "config", "epoch", "metrics", "version"]
WEIGHT_KEYS = ["model/" + k for k in lenet_payload()["model"]]


@pytest.mark.slow
@settings(max_examples=200, deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.dictionaries(st.sampled_from(KEYS + WEIGHT_KEYS), value, min_size=1, max_size=3))
def test_any_edited_value_is_the_checkpoint_or_one_clear_error(tmp_path, edits):
    payload = {"format": checkpoint.FORMAT, "version": 1, **lenet_payload()}
    for key, new in edits.items():
        if key.startswith("model/"):
            if isinstance(payload["model"], dict):
                payload["model"] = {**payload["model"], key[len("model/"):]: new}
        else:
            payload[key] = new
    load_or_refuse(tmp_path / "edited.pt", torch_bytes(payload))
