"""Faults injected into real training runs: kill -9 during a checkpoint write, SIGTERM, a full disk, a
read-only disk, two runs started together in one dir, stale locks. Each ends in one clear line (or a
resume), and nothing the user had is lost."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

import classicnets
from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.training import checkpoint, rundir
from classicnets.training.trainer import SIGNAL_AT_STEP_ENV

pytestmark = pytest.mark.realdata

# VGG-11-BN at 1/8 width on 256 images: 8 steps of 32 an epoch, a few seconds a run on one core.
TINY = {"recipe": "custom", "data": "fashion-mnist", "model": "vgg11_bn", "width": 0.125, "size": 32,
        "init": "xavier", "dropout": 0.0, "epochs": 2, "batch_size": 32, "lr": 0.02, "momentum": 0.9,
        "limit_train": 256, "limit_test": 64, "progress": "none", "plots": False, "tensorboard": "off",
        "threads": 1, "deterministic": True}


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return checkpoint.load(run_dir / "last.pt")["model"]


def same_weights(a: Path, b: Path) -> bool:
    wa, wb = weights(a), weights(b)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def temp_files(folder: Path) -> list[Path]:
    return sorted(folder.glob(".*.tmp"))


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    """The run as it goes when nothing stops it."""
    return classicnets.train(**TINY, run_dir=str(tmp_path_factory.mktemp("whole") / "run")).run_dir


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, **(env or {})}, check=False)


# --- kill -9 and signals -----------------------------------------------------------------------------

@pytest.mark.slow
def test_kill_9_during_a_checkpoint_write_keeps_the_old_one_and_resume_cleans_up(tmp_path, whole, capsys):
    run_dir = tmp_path / "run"
    # Checkpoints are written after steps 3 and 6; the second write is killed halfway through.
    proc = run_python(f"""
        import os, signal, torch
        real_save, calls = torch.save, []
        def save(obj, f, *a, **k):
            calls.append(1)
            if len(calls) == 2:
                f.write(b"half a checkpoint" * 1000)
                f.flush()
                os.kill(os.getpid(), signal.SIGKILL)
            return real_save(obj, f, *a, **k)
        torch.save = save
        import classicnets
        classicnets.train(**{TINY!r}, checkpoint_every=3, run_dir={str(run_dir)!r})
    """)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert temp_files(run_dir), "the killed write should have left its temp file"
    assert checkpoint.load(run_dir / "last.pt")["step"] == 3  # the write before the killed one
    result = classicnets.train(resume=run_dir, progress="lines")
    assert result.stopped == "completed"
    assert "left by a checkpoint write that was interrupted" in capsys.readouterr().out
    assert not temp_files(run_dir)
    assert same_weights(run_dir, whole)


@pytest.mark.slow
def test_sigterm_saves_and_the_resumed_run_equals_one_never_stopped(tmp_path, whole, monkeypatch):
    run_dir = tmp_path / "run"
    monkeypatch.setenv(SIGNAL_AT_STEP_ENV, "5:TERM")
    assert main(["train", "--run-dir", str(run_dir), *flags(TINY)]) == 130
    monkeypatch.delenv(SIGNAL_AT_STEP_ENV)
    assert checkpoint.load(run_dir / "last.pt")["step"] == 6  # the step under way when the signal came
    assert not (run_dir / rundir.LOCK_NAME).exists()  # released on the way out
    assert main(["train", "--resume", str(run_dir), "--progress", "none"]) == 0
    assert same_weights(run_dir, whole)


def flags(settings: dict) -> list[str]:
    out = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        out += ([flag] if value else ["--no-" + flag[2:]]) if isinstance(value, bool) else [flag, str(value)]
    return out


# --- one run per dir ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_two_runs_started_together_in_one_dir_one_trains_and_the_other_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    start = time.time() + 6  # both processes import first, then start training in the same millisecond
    code = (f"import sys, time; from classicnets.cli import main; time.sleep(max(0, {start} - time.time())); "
            f"sys.exit(main(['train', '--run-dir', {str(run_dir)!r}, *{flags(TINY)!r}]))")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    refused = next(err for p, (_, err) in zip(procs, outs, strict=True) if p.returncode == 2)
    lines = refused.strip().splitlines()
    assert len(lines) == 1 and str(run_dir) in lines[0]
    assert "in use by process" in lines[0] or "already holds a run" in lines[0]
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records].count("start") == 1
    assert [r["epoch"] for r in records if r["type"] == "epoch"] == [1, 2]


def test_a_live_runs_lock_refuses_a_second_run_and_is_left_alone(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock = run_dir / rundir.LOCK_NAME
        lock.write_text(f"{sleeper.pid} {os.uname().nodename} 2026-12-02 10:00:00\n")
        before = lock.read_bytes()
        with pytest.raises(ClassicNetsError, match=f"in use by process {sleeper.pid}"):
            classicnets.train(**TINY, run_dir=str(run_dir))
        assert lock.read_bytes() == before
        assert not (run_dir / "last.pt").exists()
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_start_that_fails_before_writing_leaves_no_empty_run_dir_and_keeps_a_users_own(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    bad = {**TINY, "size": 8}  # too small for VGG-11: refused in setup, after the dir was locked
    with pytest.raises(ClassicNetsError, match="needs inputs of at least 32x32"):
        classicnets.train(**bad)  # an automatic name under runs/
    with pytest.raises(ClassicNetsError, match="needs inputs of at least 32x32"):
        classicnets.train(**bad, run_dir=str(tmp_path / "new" / "run"))
    assert list((tmp_path / "runs").iterdir()) == [] and list((tmp_path / "new").iterdir()) == []
    mine = tmp_path / "mine"
    mine.mkdir()  # a folder the user made stays, empty or not
    with pytest.raises(ClassicNetsError, match="needs inputs of at least 32x32"):
        classicnets.train(**bad, run_dir=str(mine))
    assert mine.is_dir() and list(mine.iterdir()) == []


def test_the_lock_of_a_process_that_died_is_taken_over_with_a_note(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run_dir / rundir.LOCK_NAME).write_text(f"{dead.pid} {os.uname().nodename} 2026-12-02 10:00:00\n")
    result = classicnets.train(**{**TINY, "epochs": 1, "limit_train": 64, "progress": "lines"},
                               run_dir=str(run_dir))
    assert result.stopped == "completed"
    assert f"took over the lock of process {dead.pid}" in capsys.readouterr().out
    assert not (run_dir / rundir.LOCK_NAME).exists()


@pytest.mark.slow
def test_a_new_run_never_overwrites_a_dir_that_holds_only_a_best_pt(tmp_path, whole):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    best = run_dir / "best.pt"
    best.write_bytes((whole / "best.pt").read_bytes())
    before = sha(best)
    code = main(["train", "--run-dir", str(run_dir), *flags(TINY)])
    assert code == 2
    assert sha(best) == before and not (run_dir / "last.pt").exists()


# --- full and read-only disks ------------------------------------------------------------------------

def test_a_disk_without_room_for_two_checkpoints_is_refused_before_training(tmp_path, monkeypatch, capsys):
    real = rundir.shutil.disk_usage
    monkeypatch.setattr(rundir.shutil, "disk_usage",
                        lambda path: real(path)._replace(free=1024 * 1024))  # 1 MiB free
    code = main(["train", "--run-dir", str(tmp_path / "run"), *flags(TINY)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "1.0 MiB free" in err[0] and "two must fit" in err[0]
    assert not (tmp_path / "run" / "last.pt").exists()


@pytest.mark.slow
def test_a_full_disk_during_a_save_keeps_the_last_checkpoint_and_says_how_to_resume(tmp_path, whole, monkeypatch):
    run_dir = tmp_path / "run"
    real_save, calls = torch.save, []

    def save(obj, f, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the write after step 6; the one after step 3 went through
            f.write(b"x" * 4096)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    with pytest.raises(ClassicNetsError) as refused:
        classicnets.train(**TINY, checkpoint_every=3, run_dir=str(run_dir))
    message = str(refused.value)
    assert "\n" not in message and "no space left on device" in message.lower()
    assert f"--resume {run_dir}" in message
    assert checkpoint.load(run_dir / "last.pt")["step"] == 3 and not temp_files(run_dir)
    monkeypatch.setattr(torch, "save", real_save)  # room again
    classicnets.train(resume=run_dir, progress="none")
    assert same_weights(run_dir, whole)


@pytest.mark.slow
def test_a_read_only_disk_is_one_line_for_a_new_run_and_for_a_resume(tmp_path, whole, monkeypatch):
    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path))

    monkeypatch.setattr(rundir.tempfile, "mkstemp", read_only)
    with pytest.raises(ClassicNetsError, match="could not write .*: the file system is read-only"):
        classicnets.train(**TINY, run_dir=str(tmp_path / "new"))
    resumable = tmp_path / "old"
    resumable.mkdir()
    (resumable / "last.pt").write_bytes((whole / "last.pt").read_bytes())
    before = sha(resumable / "last.pt")
    with pytest.raises(ClassicNetsError, match="the file system is read-only"):
        classicnets.train(resume=resumable, epochs=3)
    assert sha(resumable / "last.pt") == before


def tmpfs(folder: Path, size: str, *options: str) -> bool:
    """Mount a tmpfs at `folder` (root only); False where this machine does not allow it."""
    folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                           str(folder)], capture_output=True, check=False)
    return done.returncode == 0


def unmount(folder: Path) -> None:
    subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


@pytest.mark.slow
def test_a_real_full_tmpfs_mid_run_keeps_the_last_checkpoint(tmp_path, whole):
    disk = tmp_path / "disk"
    if not tmpfs(disk, "16m"):
        pytest.skip("needs root and tmpfs to fill a real disk")
    try:
        run_dir = disk / "run"
        # Before the second write (after step 6), a neighbour fills the disk.
        proc = run_python(f"""
            import sys
            from classicnets.cli import main
            from classicnets.training import checkpoint
            real, calls = checkpoint.save, []
            def save(path, payload):
                calls.append(1)
                if len(calls) == 2:
                    with open({str(disk / "filler")!r}, "wb") as f:
                        try:
                            while True:
                                f.write(b"\\0" * 65536)
                        except OSError:
                            pass
                return real(path, payload)
            checkpoint.save = save
            sys.exit(main(["train", "--run-dir", {str(run_dir)!r}, "--checkpoint-every", "3", *{flags(TINY)!r}]))
        """)
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == 2 and len(lines) == 1, proc.stderr[-2000:]
        assert "no space left on device" in lines[0].lower() and f"--resume {run_dir}" in lines[0]
        assert checkpoint.load(run_dir / "last.pt")["step"] == 3 and not temp_files(run_dir)
        (disk / "filler").unlink()
        classicnets.train(resume=run_dir, progress="none")
        assert same_weights(run_dir, whole)
    finally:
        unmount(disk)


@pytest.mark.slow
def test_a_real_read_only_mount_is_one_line(tmp_path, capsys):
    disk = tmp_path / "ro"
    if not tmpfs(disk, "4m", "ro"):
        pytest.skip("needs root and tmpfs to mount a read-only disk")
    try:
        code = main(["train", "--run-dir", str(disk / "run"), *flags(TINY)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "the file system is read-only" in err[0]
    finally:
        unmount(disk)


@pytest.mark.slow
def test_a_folder_name_the_terminal_cannot_show_is_escaped_not_a_traceback(tmp_path):
    from PIL import Image

    root = os.fsencode(tmp_path) + b"/caf\xe9-images"
    for label in (b"a", b"b"):
        os.makedirs(root + b"/" + label)
        for k in range(8):
            Image.new("L", (28, 28), color=30 * k).save(os.fsdecode(root + b"/" + label + b"/%d.png" % k))
    env = {**os.environ, "PYTHONIOENCODING": "utf-8:strict"}
    done = subprocess.run([sys.executable, "-m", "classicnets", "train", "--data", "folder:" + os.fsdecode(root),
                           "--model", "lenet", "--size", "28", "--epochs", "1", "--batch-size", "4",
                           "--recipe", "custom", "--progress", "lines", "--no-plots", "--tensorboard", "off",
                           "--run-dir", str(tmp_path / "run")],
                          capture_output=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    assert re.search(rb"caf\\(x|udc)e9-images", done.stdout), done.stdout  # escaped where printed


@pytest.mark.slow
def test_a_metrics_line_cut_by_a_kill_is_skipped_by_plot_and_rewritten_by_resume(tmp_path, whole):
    from classicnets.plots import read_metrics

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "last.pt").write_bytes((whole / "last.pt").read_bytes())
    text = (whole / "metrics.jsonl").read_text()
    (run_dir / "metrics.jsonl").write_text(text + '{"type": "epoch", "epoch": 3, "train_lo')  # killed here
    assert [r["epoch"] for r in read_metrics(run_dir)["epochs"]] == [1, 2]
    classicnets.train(resume=run_dir, epochs=3)
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line) for line in lines)
    assert [json.loads(line).get("epoch") for line in lines if '"epoch"' in line][:3] == [1, 2, 3]


def test_a_net_too_large_for_this_machine_is_refused_before_any_allocation(tmp_path, monkeypatch, capsys):
    from classicnets.training import memory

    monkeypatch.setattr(memory, "total_memory", lambda: 64 * 2**20)  # a 64 MiB machine
    code = main(["train", "--run-dir", str(tmp_path / "run"), *flags({**TINY, "width": 1.0})])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "vgg11_bn (num_classes 10, input_size 32, width 1.0) has 28,148,362 weights" in err[0]
    assert "more than this machine's 64.0 MiB; lower --width" in err[0]
    assert main(["train", "--run-dir", str(tmp_path / "w"), *flags({**TINY, "width": 1e9})]) == 2
    assert "width must be in (0, 64]" in capsys.readouterr().err
