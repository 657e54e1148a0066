"""Training runs end to end on real Fashion-MNIST (first 512 images), with a tiny VGG at 32x32."""

import json
import math
import os
import re
from pathlib import Path

import pytest
import torch

import classicnets
from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.training import checkpoint, memory
from classicnets.training.config import parse_bytes
from classicnets.training.trainer import SIGNAL_AT_STEP_ENV

pytestmark = pytest.mark.realdata

# A VGG-11 with batch norm and 1/8 of the channels: 0.45M parameters, ~1000 images/s on one core.
TINY = {"recipe": "custom", "data": "fashion-mnist", "model": "vgg11_bn", "width": 0.125, "size": 32,
        "init": "xavier", "dropout": 0.0, "epochs": 2, "batch_size": 32, "lr": 0.02, "momentum": 0.9,
        "limit_train": 512, "limit_test": 256, "progress": "none", "plots": False, "tensorboard": "off",
        "threads": 1}
# Without batch norm, dropout or augmentation a step is a pure function of the weights and the batch,
# so different ways of computing it must agree.
PLAIN = {**TINY, "model": "vgg11", "epochs": 1, "lr": 0.01}


def cli_args(settings: dict) -> list[str]:
    args = []
    for key, value in settings.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            args.append(flag if value else "--no-" + flag[2:])
        else:
            args += [flag, str(value)]
    return args


def _weights(run_dir) -> dict:
    return checkpoint.load(Path(run_dir) / "last.pt")["model"]


def _same_training(run_a, run_b) -> bool:
    """Both runs moved every tensor from the seeded initial weights the same way, up to float rounding."""
    from classicnets.models import create_model

    saved = checkpoint.load(Path(run_a) / "last.pt")
    torch.manual_seed(saved["config"]["seed"])
    initial = create_model(saved["model_name"], **saved["model_kwargs"]).state_dict()
    a, b = saved["model"], _weights(run_b)
    assert a.keys() == b.keys()
    return all((a[k] - b[k]).norm() <= 1e-2 * (a[k] - initial[k]).norm() + 1e-8 for k in a
               if a[k].is_floating_point())


@pytest.fixture(scope="module")
def learned(tmp_path_factory):
    """One tiny run of 3 epochs with its plots, shared by the tests that only read it."""
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    fast_like = {"precision": "bf16", "channels_last": True, "crop_padding": 2, "flip": True}
    result = classicnets.train(**{**TINY, "epochs": 3, "plots": True, **fast_like}, run_dir=str(run_dir))
    return result


@pytest.mark.slow
def test_a_tiny_run_learns_well_above_chance(learned):
    assert learned.stopped == "completed"
    assert learned.best_test_acc > 0.5  # chance is 0.1
    assert [r["epoch"] for r in learned.history] == [1, 2, 3]
    assert learned.history[-1]["train_loss"] < learned.history[0]["train_loss"]


@pytest.mark.slow
def test_run_dir_holds_config_metrics_checkpoints_and_plots(learned):
    run = learned.run_dir
    for name in ("config.toml", "metrics.jsonl", "last.pt", "best.pt", "loss.png", "accuracy.png",
                 "confusion.png"):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["type"] for r in records] == ["start", "epoch", "epoch", "epoch", "summary"]
    summary = records[-1]
    assert summary["stopped"] == "completed" and summary["best_test_acc"] == learned.best_test_acc
    assert len(summary["confusion"]) == 10 and sum(map(sum, summary["confusion"])) == 256
    assert summary["classes"][0] == "T-shirt/top"


@pytest.mark.slow
def test_best_checkpoint_rebuilds_the_net_with_clean_keys(learned):
    best = checkpoint.load(learned.run_dir / "best.pt")
    assert not any(k.startswith(("module.", "_orig_mod.")) for k in best["model"])
    assert best["data"]["classes"][1] == "Trouser" and best["data"]["input_size"] == 32
    assert best["config"]["model"] == "vgg11_bn" and best["epoch"] == learned.best_epoch
    model = checkpoint.build_model(best)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.slow
def test_resuming_with_another_model_is_refused(learned):
    with pytest.raises(ClassicNetsError, match="cannot resume with model='vgg13_bn'"):
        classicnets.train(resume=learned.run_dir, model="vgg13_bn")


def test_resuming_a_finished_run_says_how_to_train_longer(learned):
    with pytest.raises(ClassicNetsError, match="already finished its 3 epochs"):
        classicnets.train(resume=learned.run_dir, progress="none")


def test_a_used_run_dir_is_not_overwritten(learned):
    with pytest.raises(ClassicNetsError, match=r"already holds a run \(last.pt, best.pt, metrics.jsonl, "
                                               r"config.toml\): resume it with --resume"):
        classicnets.train(**TINY, run_dir=str(learned.run_dir))


@pytest.mark.slow
def test_cli_prints_the_tutorials_epoch_line(tmp_path, capsys):
    settings = {**TINY, "epochs": 1, "limit_train": 128}
    code = main(["train", *cli_args(settings), "--run-dir", str(tmp_path / "r")])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"^epoch 1, loss \d\.\d{3}, train acc 0\.\d{3}, test acc 0\.\d{3}, \d+\.\d sec, "
                     r"\d+\.\d examples/sec, lr 0\.02$", out, re.MULTILINE), out


def test_a_closed_pipe_on_stdout_does_not_stop_training(tmp_path):
    """`classicnets train | head -2`: once head exits, the epoch lines go nowhere, the run still finishes."""
    import subprocess
    import sys

    settings = {**TINY, "epochs": 1, "limit_train": 128, "progress": "lines"}
    proc = subprocess.Popen([sys.executable, "-m", "classicnets", "train", *cli_args(settings),
                             "--run-dir", str(tmp_path / "r")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=300) == 0 and "Traceback" not in err, err
    assert checkpoint.load(tmp_path / "r" / "last.pt")["epoch"] == 1


def test_ceil_mode_trains_vgg_on_fashion_mnists_own_28x28_and_is_offered_when_28_is_refused(tmp_path, capsys):
    settings = {**TINY, "epochs": 1, "limit_train": 128, "size": 28}
    code = main(["train", *cli_args(settings), "--run-dir", str(tmp_path / "floor")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and not (tmp_path / "floor" / "last.pt").exists(), err
    assert "vgg11_bn needs inputs of at least 32x32 but --size 28 is too small: pass --size 32" in err
    assert "--ceil-mode" in err
    result = classicnets.train(**settings, ceil_mode=True, run_dir=str(tmp_path / "ceil"))
    saved = checkpoint.load(result.run_dir / "last.pt")
    assert saved["model_kwargs"]["ceil_mode"] is True and saved["data"]["input_size"] == 28
    model = checkpoint.build_model(saved)  # the checkpoint rebuilds the net with its rounding-up pools
    assert [m.ceil_mode for m in model.features if isinstance(m, torch.nn.MaxPool2d)] == [True] * 5
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


@pytest.mark.slow
def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from classicnets.training import setup

    build = setup.create_model

    def create_model_that_turns_nan(*args, **kwargs):
        model = build(*args, **kwargs)
        calls = {"n": 0}

        def hook(module, inputs, output):
            if module.training:
                calls["n"] += 1
                if calls["n"] == 3:  # the third training step
                    return output * float("nan")
            return output

        model.register_forward_hook(hook)
        return model

    monkeypatch.setattr(setup, "create_model", create_model_that_turns_nan)
    run_dir = tmp_path / "nan"
    message = r"loss became nan at step 3 .*last good checkpoint .*--lr 0\.002"
    with pytest.raises(ClassicNetsError, match=message):
        classicnets.train(**TINY, run_dir=str(run_dir), checkpoint_every=1)
    saved = checkpoint.load(run_dir / "last.pt")
    assert saved["step"] == 2
    assert all(torch.isfinite(t).all() for t in saved["model"].values() if t.is_floating_point())


@pytest.mark.slow
def test_ctrl_c_saves_exits_130_and_resume_finishes(tmp_path, capsys, monkeypatch):
    run_dir = tmp_path / "int"
    monkeypatch.setenv(SIGNAL_AT_STEP_ENV, "5:INT")
    assert main(["train", *cli_args(TINY), "--run-dir", str(run_dir)]) == 130
    out = capsys.readouterr().out
    assert f"continue with: classicnets train --resume {run_dir}" in out
    assert checkpoint.load(run_dir / "last.pt")["step"] == 6  # the step running when Ctrl-C came was finished
    monkeypatch.delenv(SIGNAL_AT_STEP_ENV)
    assert main(["train", "--resume", str(run_dir), "--progress", "none"]) == 0
    assert checkpoint.load(run_dir / "last.pt")["step"] == 2 * 512 // 32


@pytest.mark.slow
def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    whole = classicnets.train(**PLAIN, run_dir=str(tmp_path / "whole"))
    accumulated = classicnets.train(**PLAIN, accum_steps=4, run_dir=str(tmp_path / "accum"))
    assert _same_training(whole.run_dir, accumulated.run_dir)
    assert accumulated.history[0]["train_loss"] == pytest.approx(whole.history[0]["train_loss"], rel=1e-5)


@pytest.mark.slow
def test_activation_checkpointing_gives_the_same_weights(tmp_path):
    plain = classicnets.train(**PLAIN, run_dir=str(tmp_path / "plain"))
    recomputed = classicnets.train(**PLAIN, activation_checkpointing=True, run_dir=str(tmp_path / "ckpt"))
    assert _same_training(plain.run_dir, recomputed.run_dir)  # also: the same state_dict keys


@pytest.mark.slow
def test_a_net_stuck_at_chance_gets_a_warning_with_the_fix(tmp_path, capsys):
    classicnets.train(**{**TINY, "model": "vgg11", "init": "normal", "lr": 1e-6, "limit_train": 128},
                      run_dir=str(tmp_path / "stuck"))
    err = capsys.readouterr().err
    assert "still at chance" in err and "ln 10 = 2.303" in err and "--model vgg11_bn" in err


@pytest.mark.slow
def test_test_flip_reports_the_papers_flip_protocol_each_epoch(tmp_path, capsys):
    import dataclasses

    import torch.nn.functional as F

    from classicnets import data
    from classicnets.evaluation import evaluate

    run_dir = tmp_path / "r"
    settings = {**TINY, "flip": True, "test_flip": True}
    assert main(["train", *cli_args(settings), "--run-dir", str(run_dir)]) == 0
    assert "test with flips" in capsys.readouterr().out
    epoch = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[-2])  # the last epoch: last.pt
    assert main(["eval", str(run_dir / "last.pt"), "--limit", "256", "--json"]) == 0  # its default: flip
    report = json.loads(capsys.readouterr().out)
    # One image of 256 may differ: the trainer's test data is normalised at 28x28 and then resized to 32
    # (transforms._normalize_then_resize), eval resizes and then normalises. Equal in exact arithmetic, not
    # in the last bits; on AMD EPYC (2026-12-02) that flips one borderline image, on Intel it did not.
    assert "centre 32x32 crop + its flip" in report["protocol"]
    assert abs(epoch["test_acc"] - report["top1"]) <= 1 / 256 + 1e-9
    test = data.load("fashion-mnist", "test")
    test = dataclasses.replace(test, images=test.images[:256], labels=test.labels[:256])

    def nll(crops: str) -> float:
        result = evaluate(run_dir / "last.pt", test, crops=crops, device="cpu")
        return F.nll_loss(result.posteriors.log(), test.labels.long()).item()

    flip, centre = nll("flip"), nll("center")
    # evaluate() rescales the uint8 images (rounded), the trainer rescales after normalising: ~1e-3 apart
    assert epoch["test_loss"] == pytest.approx(flip, rel=2e-3)
    assert abs(centre - flip) > 5 * abs(epoch["test_loss"] - flip)


@pytest.mark.slow
def test_stop_at_accuracy_ends_the_run_and_records_the_time(tmp_path):
    result = classicnets.train(**{**TINY, "epochs": 5}, stop_at_accuracy=0.2,
                               run_dir=str(tmp_path / "target"))
    assert result.stopped == "accuracy target" and len(result.history) < 5
    summary = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert summary["time_to_target"] == pytest.approx(result.history[-1]["elapsed"])


@pytest.mark.slow
def test_auto_batch_within_a_generous_budget_takes_the_whole_batch(tmp_path, capsys):
    budget = memory.format_bytes(memory.process_rss() + 2**31).replace(" ", "")
    result = classicnets.train(**{**TINY, "epochs": 1}, max_memory=budget, run_dir=str(tmp_path / "auto"))
    out = capsys.readouterr().out
    assert "auto batch: micro-batch 32 " in out
    assert result.stopped == "completed"
    # The end of the run reports training's own peak against the budget, and metrics.jsonl keeps it.
    assert re.search(r"memory: training peaked at [\d.]+ [KMG]iB, within the [\d.]+ GiB budget", out)
    summary = json.loads((result.run_dir / "metrics.jsonl").read_text().splitlines()[-1])
    assert 0 < summary["peak_memory"] < parse_bytes(budget)


@pytest.mark.slow
def test_auto_batch_below_what_one_image_needs_is_a_clear_error(tmp_path):
    with pytest.raises(ClassicNetsError, match=r"a micro-batch of 1 needs .* but the budget is 1\.0 MiB"):
        classicnets.train(**{**TINY, "batch_size": "auto"}, max_memory="1MiB",
                          run_dir=str(tmp_path / "tight"))


@pytest.mark.slow
def test_find_micro_batch_keeps_the_largest_divisor_under_the_budget():
    mib = 2**20
    memory.release_free_memory()  # as build() does: freed memory the search would trim is not in the baseline
    baseline = memory.process_rss()

    def try_step(m):  # needs m x 8 MiB, touched so that it is resident
        torch.ones(m * 8 * mib // 4).add_(1)

    micro, peaks = memory.find_micro_batch(try_step, 32, 100 * mib, torch.device("cpu"), baseline)
    assert micro == 8  # 8 x 8 MiB fits 90% of 100 MiB, 16 x 8 MiB does not
    assert 56 * mib <= peaks[8] <= 90 * mib
    assert 16 not in peaks  # predicted from 4 and 8 to need ~128 MiB: never tried, so never allocated


@pytest.mark.slow
def test_find_micro_batch_tries_a_size_only_when_its_predicted_peak_fits(monkeypatch):
    """Simulated memory: peak = 1 GiB + m x 100 MiB. Under 3 GiB (limit 2.7 GiB) 16 fits (2.56 GiB) and
    32 (4.1 GiB, on the line through 8 and 16) is skipped without running its step."""
    gib, mib = 2**30, 2**20
    tried, current = [], {}
    monkeypatch.setattr(memory, "reset_peak", lambda device: None)
    monkeypatch.setattr(memory, "peak", lambda device: current["peak"])

    def try_step(m):
        tried.append(m)
        current["peak"] = gib + m * 100 * mib

    micro, peaks = memory.find_micro_batch(try_step, 64, 3 * gib, torch.device("cpu"), baseline=0)
    assert micro == 16 and tried == [1, 2, 4, 8, 16]
    # Under 2.7 GiB the 10% headroom decides: 16 (2.56 GiB) is predicted over the 2.43 GiB limit and not
    # tried; with no headroom it fits.
    tried.clear()
    assert memory.find_micro_batch(try_step, 64, int(2.7 * gib), torch.device("cpu"))[0] == 8
    assert tried == [1, 2, 4, 8]
    tried.clear()
    assert memory.find_micro_batch(try_step, 64, int(2.7 * gib), torch.device("cpu"), headroom=0.0)[0] == 16
    assert tried == [1, 2, 4, 8, 16]
    # With one size measured there is no line yet: 2 is tried, measures over the limit, and ends the search.
    tried.clear()
    micro, peaks = memory.find_micro_batch(try_step, 64, 1300 * mib, torch.device("cpu"))
    assert micro == 1 and tried == [1, 2] and peaks[2] > 1300 * mib * 0.9


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("CLASSICNETS_SKIP_SUBPROCESS") == "1", reason="subprocess tests disabled")
def test_killed_at_any_step_and_resumed_equals_never_stopped(tmp_path):
    """kill -9 mid-epoch, resume: the weights are bitwise those of a run that was never stopped."""
    import subprocess
    import sys

    settings = {**TINY, "model": "vgg11_bn", "dropout": 0.5, "crop_padding": 2, "flip": True,
                "precision": "bf16", "schedule": "onecycle", "checkpoint_every": 3, "deterministic": True}
    killed_dir = tmp_path / "killed"
    code = f"import classicnets; classicnets.train(**{settings!r}, run_dir={str(killed_dir)!r})"
    env = {**os.environ, SIGNAL_AT_STEP_ENV: "23"}  # epoch 2, step 7 of 16; last checkpoint at step 21
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert proc.returncode == -9, proc.stderr[-2000:]
    assert checkpoint.load(killed_dir / "last.pt")["step"] == 21
    resumed = classicnets.train(resume=killed_dir, progress="none")
    never_stopped = classicnets.train(**settings, run_dir=str(tmp_path / "whole"))
    a, b = _weights(killed_dir), _weights(never_stopped.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in never_stopped.history]


@pytest.mark.slow
def test_warm_start_copies_the_trained_net_a_into_a_deeper_vgg(learned, tmp_path, capsys):
    result = classicnets.train(**{**TINY, "model": "vgg13_bn", "epochs": 1, "limit_train": 64},
                               warm_start=str(learned.run_dir / "best.pt"), run_dir=str(tmp_path / "b"))
    assert re.search(r"warm start: \d+ tensors copied from .*best\.pt", capsys.readouterr().out)
    assert result.stopped == "completed"


@pytest.mark.slow
def test_fp16_trains_on_a_cpu_keeps_its_scaler_in_checkpoints_and_resumes_bitwise(tmp_path, capsys, monkeypatch):
    """The GPU's fp16 path (autocast + GradScaler) runs on a CPU, so its logic is tested here."""
    settings = {**TINY, "model": "vgg11_bn", "precision": "fp16", "deterministic": True}
    run_dir = tmp_path / "stopped"
    monkeypatch.setenv(SIGNAL_AT_STEP_ENV, "20:INT")  # epoch 2, step 4 of 16
    assert main(["train", *cli_args(settings), "--run-dir", str(run_dir)]) == 130
    out = capsys.readouterr().out
    assert "precision fp16 on a CPU" in out and ", fp16," in out  # said, and the header shows what runs
    saved = checkpoint.load(run_dir / "last.pt")
    scaler = saved["scaler"]
    assert saved["step"] == 21 and scaler["scale"] > 0 and set(scaler) >= {"scale", "_growth_tracker"}
    monkeypatch.delenv(SIGNAL_AT_STEP_ENV)
    resumed = classicnets.train(resume=run_dir, progress="none")
    whole = classicnets.train(**settings, run_dir=str(tmp_path / "whole"))
    a, b = _weights(run_dir), _weights(whole.run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert checkpoint.load(run_dir / "last.pt")["scaler"] == checkpoint.load(whole.run_dir / "last.pt")["scaler"]
    assert [r["train_loss"] for r in resumed.history] == [r["train_loss"] for r in whole.history]
    assert all(math.isfinite(r["train_loss"]) for r in whole.history)
