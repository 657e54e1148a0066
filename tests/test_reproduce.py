"""`classicnets reproduce vgg`: the whole grid on a tiny setting, its report, resume and skip; the rules."""

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from classicnets import reproduce
from classicnets.cli import main
from classicnets.reproduce import CLAIMS, FAILS, GRID, HOLDS, UNSURE, Geometry, judge, verdict
from classicnets.training.trainer import SIGNAL_AT_STEP_ENV

HAVE_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist").is_dir()
needs_data = pytest.mark.skipif(not HAVE_FASHION_MNIST,
                                reason="needs real Fashion-MNIST (Debian package dataset-fashion-mnist)")

# One epoch of 256 images (4 steps of 64) at 1/16 of the width, 64 test images, a 2x2 crop grid, one seed,
# one process with one thread. Xavier init keeps the test independent of the recipe's learning settings.
TINY = ["--width", "0.0625", "--epochs", "1", "--seeds", "1", "--limit-train", "256", "--limit-test", "64",
        "--grid", "2", "--jobs", "1", "--threads", "1", "--set", "init=xavier", "--set", "progress=none",
        "--set", "plots=false", "--set", "tensorboard=off"]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    """The tiny grid, Ctrl-C'd in its first run, then re-run to the end, then re-run once more."""
    out = tmp_path_factory.mktemp("reproduce") / "vgg"
    command = ["reproduce", "vgg", "--out", str(out), *TINY]
    os.environ[SIGNAL_AT_STEP_ENV] = "2:INT"  # the trainer's test hook: Ctrl-C right after step 2
    try:
        interrupted = _run(command)
    finally:
        del os.environ[SIGNAL_AT_STEP_ENV]
    finished = _run(command)
    markers = {p: p.stat().st_mtime_ns for p in out.glob("runs/*/reproduce.json")}
    again = _run(command)
    return {"out": out, "interrupted": interrupted, "finished": finished, "again": again, "markers": markers}


@needs_data
def test_ctrl_c_stops_the_grid_and_the_next_run_resumes_it(grid):
    code, stdout, _ = grid["interrupted"]
    assert code == 130
    assert "interrupted: run the same command again to resume; A-seed0 will continue" in stdout
    first = grid["out"] / "runs" / "A-seed0"
    assert (first / "last.pt").is_file()
    code, stdout, stderr = grid["finished"]
    assert code == 0, stderr
    assert "A-seed0: resuming at epoch 1 of 1" in stdout
    assert json.loads((first / "reproduce.json").read_text())["train"]["stopped"] == "completed"


@needs_data
def test_every_configuration_is_trained_once_per_seed_with_its_scale_and_warm_start(grid):
    runs = grid["out"] / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{c.key}-seed0" for c in GRID)
    jitter = (runs / "D-jitter-seed0" / "config.toml").read_text()
    assert 'scale_jitter = "37,73"' in jitter
    warm = (runs / "D-warm-seed0" / "config.toml").read_text()
    assert f'warm_start = "{runs / "A-seed0" / "last.pt"}"' in warm
    assert 'scale_jitter = "37,37"' in warm


@needs_data
def test_report_covers_all_rows_protocols_and_claims(grid):
    out = grid["out"]
    markdown = (out / "report.md").read_text()
    for config in GRID:
        assert f"\n| {config.key} | {config.model}" in markdown, config.key
    for protocol in reproduce.PROTOCOLS.values():
        assert protocol.title in markdown
    for claim in CLAIMS:
        assert any(f"**{claim.text}: {v}.**" in markdown for v in (HOLDS, FAILS, UNSURE)), claim.key
    assert "Table 5: D, multi-crop & dense | 24.4 | 7.2" in markdown
    report = json.loads((out / "report.json").read_text())
    assert [c["key"] for c in report["claims"]] == [c.key for c in CLAIMS]
    assert set(report["table"]) == {c.key for c in GRID}
    cell = report["table"]["D"]["multi-crop+dense"]
    assert 0.0 <= cell["top1_error_mean"] <= 100.0 and cell["seeds"] == [0]
    png = (out / "errors.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


@needs_data
def test_a_second_run_skips_finished_runs_and_rewrites_only_the_report(grid):
    code, stdout, stderr = grid["again"]
    assert code == 0, stderr
    assert stdout.count("skipped, finished earlier") == len(GRID)
    assert "training" not in stdout
    after = {p: p.stat().st_mtime_ns for p in grid["out"].glob("runs/*/reproduce.json")}
    assert after == grid["markers"] and len(after) == len(GRID)


@needs_data
def test_continuing_a_grid_with_another_setting_is_refused(grid):
    wider = ["0.125" if arg == "0.0625" else arg for arg in TINY]
    code, _, stderr = _run(["reproduce", "vgg", "--out", str(grid["out"]), *wider])
    assert code == 2
    assert "holds a grid run with width 0.0625, not 0.125: pass --width 0.0625" in stderr


@needs_data
def test_two_jobs_train_in_parallel_and_a_warm_start_waits_for_its_source(tmp_path):
    out = tmp_path / "vgg"
    code, stdout, stderr = _run(["reproduce", "vgg", "--out", str(out), "--configs", "D-warm", *TINY,
                                 "--jobs", "2"])
    assert code == 0, stderr
    assert "2 configurations x 1 seed = 2 runs" in stdout
    runs = sorted(p.parent.name for p in out.glob("runs/*/reproduce.json"))
    assert runs == ["A-seed0", "D-warm-seed0"]
    # D-warm read A's final weights, so A's training ended before D-warm's began
    a_end = json.loads((out / "runs" / "A-seed0" / "reproduce.json").read_text())
    assert a_end["train"]["stopped"] == "completed"
    assert (out / "runs" / "A-seed0" / "last.pt").stat().st_mtime < (out / "runs" / "D-warm-seed0" /
                                                                       "config.toml").stat().st_mtime


def test_paper_scales_follow_the_crop_size():
    paper = Geometry.for_size(224)
    assert (paper.fixed_s, paper.jitter) == (256, (256, 512))
    assert paper.multi_q("fixed") == (224, 256, 288) and paper.multi_q("jitter") == (256, 384, 512)
    assert paper.single_q("jitter") == 384
    small = Geometry.for_size(32)
    assert (small.fixed_s, small.jitter, small.multi_q("fixed")) == (37, (37, 73), (32, 37, 42))
    assert (small.single_q("fixed"), small.single_q("jitter")) == (37, 55)
    assert small.multi_q("jitter") == (37, 55, 73)


def test_verdict_needs_the_mean_difference_to_exceed_the_seeds_spread():
    assert verdict(1.0, 0.5, 3) == HOLDS
    assert verdict(-1.0, 0.5, 3) == FAILS
    assert verdict(0.4, 0.5, 3) == UNSURE
    assert verdict(2.0, None, 1) == UNSURE  # one seed has no spread
    assert verdict(0.4, 0.5, 3, no_better=True) == HOLDS  # "LRN does not help": within the spread
    assert verdict(1.0, 0.5, 3, no_better=True) == FAILS


def _results(errors: dict[str, list[float]]) -> dict:
    """Fake finished runs: top-1 error (%) per config and seed, the same for every protocol."""
    def record(error):
        protocols = {p: {"top1_error": error / 100, "top5_error": 0.0} for p in reproduce.PROTOCOLS}
        return {"eval": {"protocols": protocols, "classes": 10},
                "train": {"history": [{"test_acc": 1 - error / 100}]}}

    return {key: {seed: record(e) for seed, e in enumerate(values)} for key, values in errors.items()}


def test_claims_are_judged_on_paired_seed_differences():
    results = _results({"A": [12.0, 13.0, 12.5], "A-LRN": [12.1, 12.9, 12.6], "B": [11.0, 11.8, 11.1],
                        "C": [10.0, 10.2, 10.1], "D": [11.0, 11.1, 11.2], "E": [10.0, 9.0, 11.5],
                        "D-warm": [11.1, 11.0, 11.2]})
    by_key = {c.key: judge(c, results)["verdict"] for c in CLAIMS}
    assert by_key["depth"] == HOLDS  # A - E = 2.0, 4.0, 1.0: mean 2.33 > spread 1.53
    assert by_key["lrn"] == HOLDS  # A-LRN is no better than A
    assert by_key["1x1"] == FAILS  # here C beats D in every seed: reported, not hidden
    assert by_key["jitter"] == UNSURE  # no D-jitter runs to compare
    assert by_key["warm"] == UNSURE  # equal within the spread
    assert by_key["multi-scale"] == UNSURE  # identical protocols: no difference


def test_nets_that_did_not_learn_make_a_claim_inconclusive():
    results = _results({"A": [90.0, 89.5, 90.2], "A-LRN": [90.0, 89.5, 90.2]})  # both at chance (10 classes)
    lrn = next(c for c in CLAIMS if c.key == "lrn")
    judged = judge(lrn, results)
    assert judged["verdict"] == UNSURE
    assert "did not learn" in judged["details"][0]


def test_multi_crop_plus_dense_equals_evaluating_both_kinds_at_once():
    from classicnets.data import ArrayDataset
    from classicnets.evaluation import evaluate
    from classicnets.models import create_model

    torch.manual_seed(0)
    net = create_model("vgg11", num_classes=10, in_channels=1, input_size=32, width=0.0625).eval()
    data = ArrayDataset(torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8), torch.arange(24) % 10,
                        [str(i) for i in range(10)], "random", "test")
    common = {"scales": (32, 37), "grid": 2, "mean": [0.5], "std": None}
    crops = evaluate(net, data, crops="multi", **common)
    dense = evaluate(net, data, crops=None, dense=True, **common)
    both = evaluate(net, data, crops="multi", dense=True, **common)
    top1, top5 = reproduce.combined_errors([crops.posteriors, dense.posteriors], data.labels)
    assert torch.allclose((crops.posteriors + dense.posteriors) / 2, both.posteriors, atol=1e-6)
    assert (top1, top5) == pytest.approx((both.top1_error, both.top5_error))


def test_the_default_recipe_uses_an_init_scheme_classicnets_has():
    from classicnets.models.init import SCHEMES

    assert reproduce.RECIPES[reproduce.DEFAULT_RECIPE]["init"] in SCHEMES, (
        "the small recipe needs the 'he' scheme (He et al. 2015 for every conv and FC layer) in "
        "classicnets.models.init")
