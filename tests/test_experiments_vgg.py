"""`classicnets reproduce vgg`: the whole grid on a tiny setting, its report, resume and skip; the rules."""

import contextlib
import io
import json
import os
from pathlib import Path

import pytest
import torch

from classicnets.cli import main
from classicnets.data import ArrayDataset
from classicnets.evaluation import evaluate
from classicnets.experiments.vgg import (
    CLAIMS,
    DEFAULT_GRID_RECIPE,
    FAILS,
    GRID,
    GRID_RECIPES,
    HOLDS,
    TEST_PROTOCOLS,
    UNSURE,
    Geometry,
    judge,
    verdict,
)
from classicnets.experiments.vgg.runner import combined_errors
from classicnets.models import create_model
from classicnets.models.init import SCHEMES
from classicnets.plots import plot_errors
from classicnets.training.trainer import SIGNAL_AT_STEP_ENV

needs_data = pytest.mark.realdata

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


@pytest.mark.slow
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


@pytest.mark.slow
@needs_data
def test_every_configuration_is_trained_once_per_seed_with_its_scale_and_warm_start(grid):
    runs = grid["out"] / "runs"
    assert sorted(p.name for p in runs.iterdir()) == sorted(f"{c.key}-seed0" for c in GRID)
    jitter = (runs / "D-jitter-seed0" / "config.toml").read_text()
    assert 'scale_jitter = "37,73"' in jitter
    warm = (runs / "D-warm-seed0" / "config.toml").read_text()
    assert f'warm_start = "{runs / "A-seed0" / "last.pt"}"' in warm
    assert 'scale_jitter = "37,37"' in warm


@pytest.mark.slow
@needs_data
def test_the_tiny_grid_writes_a_report_of_every_row_protocol_and_claim(grid):
    out = grid["out"]
    markdown = (out / "report.md").read_text()
    for config in GRID:
        assert f"\n| {config.key} | {config.model}" in markdown, config.key
    report = json.loads((out / "report.json").read_text())
    assert [c["key"] for c in report["claims"]] == [c.key for c in CLAIMS]
    assert set(report["table"]) == {c.key for c in GRID}
    assert report["table"]["D"]["multi-crop+dense"]["seeds"] == [0]
    png = (out / "errors.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


# Finished runs written by hand: top-1 error (%) of the single-scale protocol per grid row and seed (None:
# that run failed). Every other protocol is single-scale minus GAIN[protocol][seed] (E's multi-scale gains
# 0.7 more on seed 0); A-LRN is at chance (90 % error of 10 classes) and gains 5 on every other protocol,
# so a claim over protocols that counted it would come out different. Top-5 error is half of top-1.
SINGLE = {"A": [20.0, 22.0, 21.0], "A-LRN": [90.0, 89.0, 91.0], "B": [19.0, 20.0, None],
          "C": [16.0, 17.0, 16.4], "D": [17.0, 18.0, 17.5], "E": [16.0, 19.0, 16.5],
          "D-jitter": [16.0, 18.5, 17.0], "D-warm": [17.0, 18.5, 17.0]}
GAIN = {"single": [0.0, 0.0, 0.0], "multi-scale": [0.5, 1.0, 0.9], "multi-crop": [1.0, 1.2, 1.1],
        "dense": [0.8, 1.7, 1.0], "multi-crop+dense": [1.3, 1.6, 1.2]}
FIRST_EPOCH = {"D": [40.0, 42.0, 41.0], "D-warm": [30.0, 31.0, 33.0]}  # the trainer's test after epoch 1


def _top1(key: str, protocol: str, seed: int) -> float:
    if key == "A-LRN":
        return SINGLE[key][seed] - (0.0 if protocol == "single" else 5.0)
    extra = 0.7 if (key, protocol, seed) == ("E", "multi-scale", 0) else 0.0
    return SINGLE[key][seed] - GAIN[protocol][seed] - extra


def _write_finished_grid(out: Path) -> None:
    models = {c.key: c.model for c in GRID}
    for key, errors in SINGLE.items():
        for seed, error in enumerate(errors):
            run = out / "runs" / f"{key}-seed{seed}"
            run.mkdir(parents=True)
            if error is None:
                (run / "failed.json").write_text(json.dumps({"config": key, "seed": seed, "error": "diverged"}))
                continue
            first = FIRST_EPOCH.get(key, [50.0] * 3)[seed]
            protocols = {p: {"top1_error": _top1(key, p, seed) / 100, "top5_error": _top1(key, p, seed) / 200,
                             "views": 1, "scales": [37], "description": p} for p in TEST_PROTOCOLS}
            history = [{"epoch": 1, "test_acc": 1 - first / 100}, {"epoch": 2, "test_acc": 1 - error / 100}]
            record = {"config": key, "seed": seed, "model": models[key],
                      "train": {"model": models[key], "stopped": "completed", "warm_start": None,
                                "seconds": 60.0, "cpu_seconds": 50.0, "history": history},
                      "eval": {"seconds": 30.0, "cpu_seconds": 25.0, "count": 2000, "classes": 10,
                               "protocols": protocols}}
            (run / "reproduce.json").write_text(json.dumps(record))


def test_report_tables_and_verdicts_equal_the_hand_computed_ones(tmp_path):
    out = tmp_path / "vgg"
    _write_finished_grid(out)
    code, stdout, stderr = _run(["reproduce", "vgg", "--out", str(out), "--report-only", "--seeds", "3",
                                 "--jobs", "1"])
    assert code == 0, stderr
    assert stdout.count("skipped, finished earlier") == 23
    assert "B-seed2: skipped, it failed earlier (diverged)" in stdout
    report = json.loads((out / "report.json").read_text())
    markdown = (out / "report.md").read_text()
    approx = pytest.approx

    # Table cells: mean and sample std over the seeds that finished.
    table = report["table"]
    assert set(table) == {c.key for c in GRID}
    d = table["D"]["single"]  # 17, 18, 17.5; top-5 8.5, 9, 8.75
    assert (d["top1_error_mean"], d["top1_error_std"]) == (approx(17.5), approx(0.5))
    assert (d["top5_error_mean"], d["top5_error_std"]) == (approx(8.75), approx(0.25))
    e = table["E"]["multi-scale"]  # 16 - 1.2, 19 - 1.0, 16.5 - 0.9 = 14.8, 18.0, 15.6
    assert (e["top1_error_mean"], e["top1_error_std"]) == (approx(16.1333, abs=1e-4), approx(1.6653, abs=1e-4))
    b = table["B"]["single"]  # seed 2 failed: 19, 20
    assert (b["top1_error_mean"], b["top1_error_std"], b["seeds"]) == (approx(19.5), approx(0.7071, abs=1e-4),
                                                                         [0, 1])
    lrn = table["A-LRN"]["dense"]  # 85, 84, 86
    assert (lrn["top1_error_mean"], lrn["top1_error_std"]) == (approx(85.0), approx(1.0))
    assert report["failures"] == {"B": {"2": "diverged"}}
    assert "\n| D | vgg16 | 37 | 17.50 ± 0.50 / 8.75 ± 0.25 | 16.70 ± 0.26 / 8.35 ± 0.13 |" in markdown
    assert "\n| D-jitter | vgg16 | [37, 73] | 17.17 ± 1.26 / 8.58 ± 0.63 |" in markdown
    assert "\n| D-warm | vgg16 from A | 37 | 17.50 ± 0.87 / 8.75 ± 0.43 |" in markdown
    assert ("| D-jitter | multi-crop + dense | 15.80 ± 1.10 | 7.90 ± 0.55 | Table 5: D, multi-crop & dense | "
            "24.4 | 7.2 |") in markdown
    assert "\n| B-seed2 | failed | | | | diverged |" in markdown
    assert "\n| D-warm-seed2 | vgg16 | 2 | 1.0 | 0.5 | 0.670, 0.830 |" in markdown

    # Claims: m = mean of the paired differences d_k, s = their sample std; holds if m > s, fails if m < -s.
    claims = {c["key"]: c for c in report["claims"]}
    assert list(claims) == [c.key for c in CLAIMS]
    expected = {
        "depth": (HOLDS, 3.8333, 0.7638, 3),  # A - E = 4, 3, 4.5
        "1x1": (FAILS, -1.0333, 0.0577, 3),  # C - D = -1, -1, -1.1: C beats D in every seed
        "jitter": (UNSURE, 0.3333, 0.7638, 3),  # D - D-jitter = 1, -0.5, 0.5
        # single - multi-scale averaged over the 7 rows that learned (A-LRN left out; B has no seed 2):
        # seed 0 (6 x 0.5 + E's 1.2) / 7 = 0.6, seed 1 1.0, seed 2 0.9
        "multi-scale": (HOLDS, 0.8333, 0.2082, 3),
        # the end: D - D-warm = 0, -0.5, 0.5 (inconclusive); after epoch 1: 10, 11, 8 (holds): faster
        "warm": (HOLDS, 0.0, 0.5, 3),
    }
    for key, (want, m, s, n) in expected.items():
        got = claims[key]
        assert (got["verdict"], got["m"], got["s"], got["n"]) == (want, approx(m, abs=1e-4), approx(s, abs=1e-4),
                                                                   n), key
    assert claims["lrn"]["verdict"] == UNSURE  # A-LRN at chance: 10 % accuracy <= 1.5 / 10 classes
    assert claims["lrn"]["details"] == [
        "A-LRN did not learn (single-scale error at chance level): nothing to compare"]
    # multi-crop - both = 0.3, 0.4, 0.1 (holds); dense - both = 0.5, -0.1, 0.2 (within its spread 0.3)
    versus = claims["dense+crop"]["versus"]
    assert (versus["multi-crop"]["m"], versus["multi-crop"]["s"]) == (approx(0.2667, abs=1e-4),
                                                                       approx(0.1528, abs=1e-4))
    assert (versus["dense"]["m"], versus["dense"]["s"]) == (approx(0.2), approx(0.3))
    assert claims["dense+crop"]["verdict"] == UNSURE
    assert ("after epoch 1 (the trainer's test, centre crop): D 41.00 ± 1.00 % vs D-warm 31.33 ± 1.53 %; "
            "D - D-warm: holds, difference +9.67 pp (spread 1.53 over 3 seeds)") in claims["warm"]["details"]
    assert "A-LRN: left out, it did not learn" in claims["multi-scale"]["details"]
    for claim in CLAIMS:
        assert f"**{claim.text}: {claims[claim.key]['verdict']}.**" in markdown, claim.key
    assert "  - A - E: difference +3.83 pp (spread 0.76 over 3 seeds)" in markdown
    png = (out / "errors.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000


def test_error_bars_skip_missing_cells_and_series(tmp_path):
    path = plot_errors(["A", "B"], {"one": [(20.0, 1.0), (None, None)], "none": [(None, None)] * 2,
                                    "no spread": [(18.0, None), (19.0, None)]}, tmp_path / "e.png", "title")
    assert path.read_bytes().startswith(b"\x89PNG")


@pytest.mark.slow
@needs_data
def test_a_second_run_skips_finished_runs_and_rewrites_only_the_report(grid):
    code, stdout, stderr = grid["again"]
    assert code == 0, stderr
    assert stdout.count("skipped, finished earlier") == len(GRID)
    assert "training" not in stdout
    after = {p: p.stat().st_mtime_ns for p in grid["out"].glob("runs/*/reproduce.json")}
    assert after == grid["markers"] and len(after) == len(GRID)


@pytest.mark.slow
@needs_data
def test_continuing_a_grid_with_another_setting_is_refused(grid):
    wider = ["0.125" if arg == "0.0625" else arg for arg in TINY]
    code, _, stderr = _run(["reproduce", "vgg", "--out", str(grid["out"]), *wider])
    assert code == 2
    assert "holds a grid run with width 0.0625, not 0.125: pass --width 0.0625" in stderr


@pytest.mark.slow
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
        protocols = {p: {"top1_error": error / 100, "top5_error": 0.0} for p in TEST_PROTOCOLS}
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
    torch.manual_seed(0)
    net = create_model("vgg11", num_classes=10, in_channels=1, input_size=32, width=0.0625).eval()
    data = ArrayDataset(torch.randint(0, 256, (24, 1, 28, 28), dtype=torch.uint8), torch.arange(24) % 10,
                        [str(i) for i in range(10)], "random", "test")
    common = {"scales": (32, 37), "grid": 2, "mean": [0.5], "std": None}
    crops = evaluate(net, data, crops="multi", **common)
    dense = evaluate(net, data, crops=None, dense=True, **common)
    both = evaluate(net, data, crops="multi", dense=True, **common)
    top1, top5 = combined_errors([crops.posteriors, dense.posteriors], data.labels)
    assert torch.allclose((crops.posteriors + dense.posteriors) / 2, both.posteriors, atol=1e-6)
    assert (top1, top5) == pytest.approx((both.top1_error, both.top5_error))


def test_the_default_recipe_uses_an_init_scheme_classicnets_has():
    assert GRID_RECIPES[DEFAULT_GRID_RECIPE]["init"] in SCHEMES, (
        "the small recipe needs the 'he' scheme (He et al. 2015 for every conv and FC layer) in "
        "classicnets.models.init")
