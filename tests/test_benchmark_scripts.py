"""The benchmark scripts stay runnable: each one's smoke mode runs end to end and prints its table."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.realdata
def test_threads_under_load_smoke_runs_quiet_and_loaded_trials_and_stops_its_busy_loops():
    proc = subprocess.run([sys.executable, "benchmarks/threads_under_load.py", "--smoke", "--settings", "adaptive"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "round 1 adaptive  busy 0:" in proc.stdout and "round 1 adaptive  busy 1:" in proc.stdout
    assert "| adaptive |" in proc.stdout
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"while os.getppid" in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_threads_under_load_refuses_an_unknown_setting():
    proc = subprocess.run([sys.executable, "benchmarks/threads_under_load.py", "--settings", "three"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown setting 'three'" in proc.stderr


@pytest.mark.parametrize("flag", ["--busy", "--rounds", "--images"])
def test_threads_under_load_refuses_a_count_below_one(flag):
    proc = subprocess.run([sys.executable, "benchmarks/threads_under_load.py", flag, "0"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and f"{flag} must be at least 1, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def _time_to_accuracy():
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import time_to_accuracy
    finally:
        sys.path.remove(str(REPO / "benchmarks"))
    return time_to_accuracy


def test_the_former_recipe_of_time_to_accuracy_does_not_take_settings_from_the_current_fast_recipe(monkeypatch):
    """The reference of issue 15's side-by-side must stay the recipe as it was, whatever `fast` becomes."""
    time_to_accuracy = _time_to_accuracy()
    from classicnets.training.config import RECIPES, resolve_config

    before = resolve_config(**time_to_accuracy.JOBS["former"]["settings"])
    monkeypatch.setitem(RECIPES, "fast", {**RECIPES["fast"], "head": "gap", "fc_width": 64, "crop_padding": 4,
                                          "random_resized_crop": "0.5,1"})
    after = resolve_config(**time_to_accuracy.JOBS["former"]["settings"])
    assert after == before
    assert (before.head, before.dropout, before.epochs, before.lr, before.crop_padding) == (None, 0.5, 10, 0.2, 0)


def test_time_to_accuracy_set_applies_to_every_job_or_to_the_one_named():
    per_job = _time_to_accuracy().parse_set(["threads=1", "main.epochs=6", "former.head=gap"], ["main", "former"])
    assert per_job == {"main": {"threads": 1, "epochs": 6}, "former": {"threads": 1, "head": "gap"}}


@pytest.mark.parametrize("setting, says", [
    ("main.epochs=x", "epochs must be an integer"), ("d2l32.epochs=3", "'d2l32' is not one of the jobs run"),
    ("epochs", "wants KEY=VALUE"), ("bogus=3", "unknown config key 'bogus'")])
def test_time_to_accuracy_refuses_a_bad_set_in_one_line_with_exit_2(setting, says):
    _refused(["--set", setting], says)


def test_time_to_accuracy_refuses_zero_rounds():
    _refused(["--rounds", "0"], "--rounds must be at least 1")


def _refused(args: list[str], says: str) -> None:
    proc = subprocess.run([sys.executable, "benchmarks/time_to_accuracy.py", "--jobs", "main,former", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_bench_conv_grad_times_each_conv_and_the_step_both_ways():
    proc = subprocess.run([sys.executable, "benchmarks/bench_conv_grad.py", "--seconds", "0.5", "--threads", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    convs = [line for line in proc.stdout.splitlines() if " on " in line and " / " in line]
    assert len(convs) == 8  # VGG-11's eight convs, each with both timings
    assert "ours / oneDNN's:" in proc.stdout and "per turn min" in proc.stdout


@pytest.mark.parametrize("args, says", [
    (["--set", "bogus=3"], "unknown config key 'bogus'"), (["--set", "epochs"], "--set wants KEY=VALUE"),
    (["--set", "epochs=x"], "epochs must be an integer"), (["--seconds", "0"], "--seconds must be more than 0")])
def test_bench_conv_grad_refuses_bad_options_in_one_line_with_exit_2(args, says):
    proc = subprocess.run([sys.executable, "benchmarks/bench_conv_grad.py", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=120, check=False)
    assert proc.returncode == 2 and says in proc.stderr and "Traceback" not in proc.stderr
