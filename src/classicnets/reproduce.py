"""Reproduce the VGG paper's claims at small scale: `classicnets reproduce vgg`.

The experiment is data, written out below: GRID (which nets and how each is trained), PROTOCOLS (how
each is tested), PAPER (Simonyan & Zisserman's Tables 3-5) and CLAIMS (what is compared with what).
`reproduce_vgg` trains every (configuration, seed) with `classicnets.train`, tests the final weights
with `classicnets.evaluation.evaluate`, and writes report.md, report.json and errors.png.

Each run lives in OUT/runs/<config>-seed<k>/. A run with reproduce.json there is finished and is not
touched again; a run with only last.pt was interrupted and is resumed by the trainer; so the command
is simply re-run until it is done. A run that fails (say, diverges) leaves failed.json and the grid
goes on; delete that run dir to try it again.

Scale. The paper trains 224x224 crops from images rescaled to a short side S = 256 (or S drawn from
[256, 512]) and tests at Q = S, at Q = {S-32, S, S+32}, or Q = {256, 384, 512} for jittered S. We keep
those ratios to the crop size: with --size 32 the crop is 32, S = 37, jittered S in [37, 73], Q = 37
(55 for jittered S), multi-scale Q = {32, 37, 42} (and {37, 55, 73}).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from classicnets.errors import ClassicNetsError

PAPER_REF = ("Simonyan & Zisserman, Very Deep Convolutional Networks for Large-Scale Image Recognition, "
             "arXiv:1409.1556v6 (ICLR 2015)")

# --- scale: the paper's pixel sizes, scaled by our crop size / 224 -------------------------------------

PAPER_CROP = 224  # training crop (Sect. 2.1)
PAPER_FIXED_S = 256  # fixed training scale (Sect. 3.1; 384 was the other)
PAPER_JITTER = (256, 512)  # S_min, S_max of scale jittering (Sect. 3.1)
PAPER_Q_STEP = 32  # multi-scale test Q = {S-32, S, S+32} for fixed S (Sect. 4.2)


@dataclass(frozen=True)
class Geometry:
    """Train and test scales (short sides, pixels) for one crop size."""

    size: int  # the training crop = the net's input size
    fixed_s: int
    jitter: tuple[int, int]
    q_step: int

    @classmethod
    def for_size(cls, size: int) -> Geometry:
        def scaled(pixels: int) -> int:
            return max(size, round(pixels * size / PAPER_CROP))

        return cls(size, scaled(PAPER_FIXED_S), (scaled(PAPER_JITTER[0]), scaled(PAPER_JITTER[1])),
                   max(1, round(PAPER_Q_STEP * size / PAPER_CROP)))

    def train_scale(self, kind: str) -> tuple[int, int]:
        """(S_min, S_max) for the trainer's scale_jitter: a fixed S is the range [S, S]."""
        return (self.fixed_s, self.fixed_s) if kind == "fixed" else self.jitter

    def single_q(self, kind: str) -> int:
        """Sect. 4.1: Q = S for fixed S, Q = (S_min + S_max) / 2 for jittered S (the trainer's test scale)."""
        lo, hi = self.train_scale(kind)
        return (lo + hi) // 2

    def multi_q(self, kind: str) -> tuple[int, ...]:
        """Sect. 4.2: {S-32, S, S+32} for fixed S; {S_min, (S_min + S_max) / 2, S_max} for jittered S."""
        if kind == "fixed":
            s = self.fixed_s
            return tuple(sorted({max(self.size, s - self.q_step), s, s + self.q_step}))
        lo, hi = self.jitter
        return (lo, (lo + hi) // 2, hi)


# --- the grid ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """One row of the experiment: a net of Table 1 and how it is trained."""

    key: str  # the paper's name for it
    model: str  # classicnets model name (without _bn)
    scale: str  # "fixed" S or "jitter" S in [S_min, S_max]
    about: str
    warm_from: str | None = None  # key of the config whose trained net (same seed) initialises this one


GRID: tuple[Config, ...] = (
    Config("A", "vgg11", "fixed", "11 weight layers"),
    Config("A-LRN", "vgg11_lrn", "fixed", "A with local response normalisation after conv 1"),
    Config("B", "vgg13", "fixed", "13 weight layers"),
    Config("C", "vgg16_c", "fixed", "16 weight layers, three of them 1x1 convs"),
    Config("D", "vgg16", "fixed", "16 weight layers, all 3x3 convs"),
    Config("E", "vgg19", "fixed", "19 weight layers"),
    Config("D-jitter", "vgg16", "jitter", "D trained with scale jittering"),
    Config("D-warm", "vgg16", "fixed", "D whose first 4 convs and 3 FC layers start from the trained A",
           warm_from="A"),
)
CONFIGS = {c.key: c for c in GRID}

# Training recipes: a trainer recipe (classicnets.training.RECIPES) plus overrides. Scales, width, epochs,
# seed and data come from the command.
RECIPES: dict[str, dict[str, Any]] = {
    # The paper's recipe (Sect. 3.1: SGD momentum 0.9, weight decay 5e-4, dropout 0.5, flips, mean
    # subtraction, no batch norm) with what makes plain VGG learn in a few epochs at 1/8 of the width:
    # He init for every conv and FC layer (Glorot init, the paper's later note, left E at loss ln 10 for
    # 470 steps here, and torchvision's N(0, 0.01) FC layers shrink the logits of narrow nets), lr 0.02 at
    # batch 64 after a half-epoch linear warm-up, then a cosine decay instead of waiting for plateaus.
    "small": {"recipe": "paper", "init": "he", "batch_size": 64, "lr": 0.02, "warmup_epochs": 0.5,
              "schedule": "cosine", "precision": "fp32"},
    # The paper's recipe as the trainer has it (N(0, 0.01) init, lr 0.01 at batch 256, drops on plateaus):
    # for long runs on a GPU; the deep nets may need their warm start to leave chance.
    "paper": {"recipe": "paper"},
}
DEFAULT_RECIPE = "small"


@dataclass(frozen=True)
class Protocol:
    """A test protocol of Sect. 3.2 / 4.1-4.3, as arguments of classicnets.evaluation.evaluate."""

    title: str
    multi_scale: bool
    crops: str | None = "center"
    dense: bool = False
    combine: tuple[str, ...] = ()  # average the posteriors of these protocols instead of evaluating


PROTOCOLS: dict[str, Protocol] = {
    "single": Protocol("single-scale", multi_scale=False),
    "multi-scale": Protocol("multi-scale", multi_scale=True),
    "multi-crop": Protocol("multi-crop", multi_scale=True, crops="multi"),
    "dense": Protocol("dense", multi_scale=True, crops=None, dense=True),
    # evaluate(crops="multi", dense=True) averages the two kinds' posteriors with equal weight; averaging
    # the two results above gives the same numbers without running every view again.
    "multi-crop+dense": Protocol("multi-crop + dense", multi_scale=True, combine=("multi-crop", "dense")),
}


# --- the paper's numbers ---------------------------------------------------------------------------

@dataclass(frozen=True)
class PaperRow:
    table: str
    row: str  # as the paper labels it: config, train S, test Q / method
    top1: float  # ILSVRC-2012 validation error, %
    top5: float
    ours: tuple[tuple[str, str], ...] = ()  # (config, protocol) cells it stands beside


# arXiv:1409.1556v6. Table 3: one test scale; Table 4: three test scales; Table 5: multi-crop vs dense,
# S in [256;512], Q = {256, 384, 512}. Tables 3-4 use dense evaluation: Table 5's dense row for D
# equals Table 4's D [256;512] row. The paper's B-E were warm-started from A (Sect. 3.1).
PAPER: tuple[PaperRow, ...] = (
    PaperRow("Table 3", "A, S=256, Q=256", 29.6, 10.4, (("A", "single"),)),
    PaperRow("Table 3", "A-LRN, S=256, Q=256", 29.7, 10.5, (("A-LRN", "single"),)),
    PaperRow("Table 3", "B, S=256, Q=256", 28.7, 9.9, (("B", "single"),)),
    PaperRow("Table 3", "C, S=256, Q=256", 28.1, 9.4, (("C", "single"),)),
    PaperRow("Table 3", "C, S=384, Q=384", 28.1, 9.3),
    PaperRow("Table 3", "C, S=[256;512], Q=384", 27.3, 8.8),
    PaperRow("Table 3", "D, S=256, Q=256", 27.0, 8.8, (("D", "single"), ("D-warm", "single"))),
    PaperRow("Table 3", "D, S=384, Q=384", 26.8, 8.7),
    PaperRow("Table 3", "D, S=[256;512], Q=384", 25.6, 8.1, (("D-jitter", "single"),)),
    PaperRow("Table 3", "E, S=256, Q=256", 27.3, 9.0, (("E", "single"),)),
    PaperRow("Table 3", "E, S=384, Q=384", 26.9, 8.7),
    PaperRow("Table 3", "E, S=[256;512], Q=384", 25.5, 8.0),
    PaperRow("Table 4", "B, S=256, Q={224,256,288}", 28.2, 9.6, (("B", "multi-scale"),)),
    PaperRow("Table 4", "C, S=256, Q={224,256,288}", 27.7, 9.2, (("C", "multi-scale"),)),
    PaperRow("Table 4", "C, S=384, Q={352,384,416}", 27.8, 9.2),
    PaperRow("Table 4", "C, S=[256;512], Q={256,384,512}", 26.3, 8.2),
    PaperRow("Table 4", "D, S=256, Q={224,256,288}", 26.6, 8.6,
             (("D", "multi-scale"), ("D-warm", "multi-scale"))),
    PaperRow("Table 4", "D, S=384, Q={352,384,416}", 26.5, 8.6),
    PaperRow("Table 4", "D, S=[256;512], Q={256,384,512}", 24.8, 7.5, (("D-jitter", "multi-scale"),)),
    PaperRow("Table 4", "E, S=256, Q={224,256,288}", 26.9, 8.7, (("E", "multi-scale"),)),
    PaperRow("Table 4", "E, S=384, Q={352,384,416}", 26.7, 8.6),
    PaperRow("Table 4", "E, S=[256;512], Q={256,384,512}", 24.8, 7.5),
    PaperRow("Table 5", "D, dense", 24.8, 7.5, (("D-jitter", "dense"),)),
    PaperRow("Table 5", "D, multi-crop", 24.6, 7.5, (("D-jitter", "multi-crop"),)),
    PaperRow("Table 5", "D, multi-crop & dense", 24.4, 7.2, (("D-jitter", "multi-crop+dense"),)),
    PaperRow("Table 5", "E, dense", 24.8, 7.5),
    PaperRow("Table 5", "E, multi-crop", 24.6, 7.4),
    PaperRow("Table 5", "E, multi-crop & dense", 24.4, 7.1),
)
PAPER_BESIDE = {cell: row for row in PAPER for cell in row.ours}


# --- the claims ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Claim:
    key: str
    text: str
    paper: str  # the paper's evidence
    kind: str  # lower | not-lower | depth | protocol-lower | combined | warm (see _CHECKS)
    a: str  # the config (or protocol) that should have the lower error
    b: tuple[str, ...]  # what it is compared with
    protocol: str = "single"


CLAIMS: tuple[Claim, ...] = (
    Claim("depth", "depth lowers error (A -> B -> D -> E: 11, 13, 16, 19 layers)",
          "Table 3, S=Q=256: top-1 29.6 (A), 28.7 (B), 27.0 (D), 27.3 (E); saturates at 19 layers",
          "depth", "E", ("A", "B", "D")),
    Claim("lrn", "LRN does not help (A-LRN is no better than A)",
          "Table 3: A 29.6 / 10.4, A-LRN 29.7 / 10.5", "not-lower", "A-LRN", ("A",)),
    Claim("1x1", "1x1 convs are worse than 3x3 at the same depth (C worse than D)",
          "Table 3, S=Q=256: C 28.1 / 9.4, D 27.0 / 8.8", "lower", "D", ("C",)),
    Claim("jitter", "scale jittering in training helps (D-jitter better than D)",
          "Table 3: D S=256 27.0 / 8.8, D S=[256;512] 25.6 / 8.1", "lower", "D-jitter", ("D",)),
    Claim("multi-scale", "multi-scale testing helps (three test scales better than one)",
          "Table 4 vs 3: D 27.0 -> 26.6, D-jitter 25.6 -> 24.8",
          "protocol-lower", "multi-scale", ("single",)),
    Claim("dense+crop", "dense + multi-crop helps (better than either alone)",
          "Table 5: dense 24.8, multi-crop 24.6, both 24.4 (D, S=[256;512])",
          "combined", "multi-crop+dense", ("multi-crop", "dense")),
    Claim("warm", "warm start from A helps D (at least as good in the end, and better or faster)",
          "Sect. 3.1: B-E started from A's first 4 convs and 3 FC layers; no table compares it",
          "warm", "D-warm", ("D",)),
)

HOLDS, FAILS, UNSURE = "holds", "does not hold at this scale", "inconclusive"
RULE = ("For each seed k, d_k = (error of the compared net or protocol) - (error of the one the paper says "
        "is better), in top-1 percentage points on the same test images; m = mean of d_k, s = their sample "
        "standard deviation (the spread across seeds). A claim that X lowers the error holds if m > s, does "
        "not hold at this scale if m < -s, and is inconclusive if |m| <= s or there are fewer than 2 seeds. "
        "'No better' claims (LRN) hold unless X is better by more than s. Claims over protocols average d_k "
        "over all configurations first. Top-5 error is shown, not judged: with 10 classes it is near 0.")


# --- settings -------------------------------------------------------------------------------------

@dataclass
class Settings:
    """What the command was asked for. Everything but seeds must match to continue a grid in OUT.

    The defaults finish in about an hour on a 2-core CPU: 3 seeds x 8 runs x 240k image-epochs at about
    5.3 ms of CPU per image-epoch for the 8 runs, plus about 0.12 s of CPU per test image for their 5
    protocols, = about 76 CPU-minutes, 40 minutes on two free cores (jobs=2). Measured (RESULTS.md,
    2026-12-02): 37 minutes, 54 CPU-minutes.
    """

    data: str = "fashion-mnist"
    width: float = 0.125
    size: int = 32
    epochs: int = 4
    limit_train: int | None = None
    limit_test: int | None = 2000
    recipe: str = DEFAULT_RECIPE
    bn: bool = False
    grid: int = 3  # multi-crop grid per side (the paper: 5)
    train_options: dict[str, Any] = field(default_factory=dict)  # extra trainer fields (--set KEY=VALUE)

    def comparable(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Trainer fields that change how a run is shown or where it runs, not what it computes.
_PRESENTATION = {"progress", "tensorboard", "plots", "threads", "device", "data_dir", "checkpoint_every",
                 "checkpoint_seconds"}


def parse_train_options(items: Sequence[str]) -> dict[str, Any]:
    """["precision=bf16", "device=cuda"] -> checked trainer settings."""
    from classicnets.training.config import convert

    options = {}
    own_option = {"data", "data_dir", "width", "size", "epochs", "limit_train", "limit_test", "recipe"}
    per_run = {"model", "seed", "scale_jitter", "warm_start", "run_dir", "name"}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise ClassicNetsError(f"--set takes KEY=VALUE, e.g. --set precision=bf16; got {item!r}")
        if key in own_option:
            raise ClassicNetsError(f"--set {key}: use --{key.replace('_', '-')} instead")
        if key in per_run:
            raise ClassicNetsError(f"--set {key}: the grid sets {key} for each run (see GRID in "
                                   "classicnets.reproduce)")
        options[key] = convert(key, value.strip())
    return options


# --- the command ----------------------------------------------------------------------------------

DEFAULT_JOBS = 2  # runs at once: both cores of a 2-core CPU, one thread each


@dataclass
class GridResult:
    out: Path
    report: Path
    trained: int
    skipped: int
    failed: int
    stopped: str  # completed | interrupted


def reproduce_vgg(out: str | Path = "runs/reproduce-vgg", *, seeds: int = 3, data_dir: str | None = None,
                  threads: int | None = 1, jobs: int = DEFAULT_JOBS, configs: Sequence[str] | None = None,
                  report_only: bool = False, log: Callable[[str], None] | None = None,
                  **settings: Any) -> GridResult:
    """Train and test the grid in `out` (resuming what is there) and write the report.

    `settings` are the fields of `Settings` (data, width, size, epochs, limit_train, limit_test, recipe,
    bn, grid, train_options). `configs` limits the grid to some rows (their warm-start sources are added).
    With `report_only`, nothing is trained: the report covers the runs finished so far. `threads` is the
    CPU threads of each run (None: all cores); `jobs` runs that many at once, each in its own process.
    One thread per run is the default: these nets are small, and two threads ran 10x slower than one here
    while another process used a core; `jobs=2` uses two cores without that risk.
    """
    log = log or _print
    s = Settings(**settings)
    _validate(s, seeds)
    if jobs < 1:
        raise ClassicNetsError(f"--jobs must be 1 or more; got {jobs}")
    if threads is not None and "threads" not in s.train_options:
        s.train_options["threads"] = threads
    if jobs > 1 and "progress" not in s.train_options:
        s.train_options["progress"] = "lines"  # two progress bars on one terminal garble each other
    out = Path(out)
    rows = _select(configs)
    _check_grid_file(out, s)
    plan = [(c.key, seed) for seed in range(seeds) for c in rows]
    log(f"reproduce vgg: {len(rows)} configurations x {_count(seeds, 'seed')} = {len(plan)} runs "
        f"in {out / 'runs'}")
    todo, skipped = [], 0
    for index, (key, seed) in enumerate(plan, 1):
        run_dir = run_path(out, key, seed)
        tag = f"[{index}/{len(plan)}] {run_dir.name}"
        if (run_dir / "reproduce.json").is_file():
            log(f"{tag}: skipped, finished earlier ({run_dir / 'reproduce.json'})")
            skipped += 1
        elif (run_dir / "failed.json").is_file():
            log(f"{tag}: skipped, it failed earlier ({_read_json(run_dir / 'failed.json')['error']}); "
                f"delete {run_dir} to try again")
            skipped += 1
        elif not report_only:
            todo.append((key, seed, tag))
    settings_now = dataclasses.asdict(s)
    if jobs == 1:
        statuses = _run_serially(todo, out, settings_now, data_dir, log)
    else:
        statuses = _run_in_parallel(todo, out, settings_now, data_dir, jobs)
    report = write_report(out, s, seeds, rows, Geometry.for_size(s.size))
    log(f"report: {report} (+ report.json, errors.png)")
    stopped = "interrupted" if "interrupted" in statuses.values() else "completed"
    if stopped == "interrupted":
        names = ", ".join(run_path(out, k, seed).name for (k, seed), v in statuses.items()
                          if v == "interrupted")
        log(f"interrupted: run the same command again to resume; {names} will continue from their last "
            "checkpoint")
    counts = list(statuses.values())
    return GridResult(out, report, counts.count("trained"), skipped, counts.count("failed"), stopped)


def _print(text: str) -> None:
    print(text, flush=True)


def _run_serially(todo: list, out: Path, settings: dict, data_dir: str | None,
                  log: Callable[[str], None]) -> dict[tuple[str, int], str]:
    statuses: dict[tuple[str, int], str] = {}
    for key, seed, tag in todo:
        statuses[key, seed] = run_one(out, key, seed, settings, data_dir, tag, log)
        if statuses[key, seed] == "interrupted":
            break
    return statuses


def _run_in_parallel(todo: list, out: Path, settings: dict, data_dir: str | None,
                     jobs: int) -> dict[tuple[str, int], str]:
    """`jobs` worker processes (they print their own lines); a warm-started run waits until the run it
    starts from is done."""
    import multiprocessing
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    statuses: dict[tuple[str, int], str] = {}
    waiting = list(todo)
    pending = {(key, seed) for key, seed, _ in todo}
    running: dict = {}
    # spawn, not fork: a forked child inherits torch's thread pools and can hang in them
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"))
    try:
        while waiting or running:
            for task in list(waiting):
                key, seed, tag = task
                source = CONFIGS[key].warm_from
                if len(running) >= jobs or (source and (source, seed) in pending):
                    continue
                waiting.remove(task)
                running[pool.submit(run_one, out, key, seed, settings, data_dir, tag)] = (key, seed)
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                key, seed = running.pop(future)
                statuses[key, seed] = future.result()
                pending.discard((key, seed))
                if statuses[key, seed] == "interrupted":
                    waiting.clear()  # let the others finish their step and save, start nothing new
    except KeyboardInterrupt:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)
    return statuses


_TEST_SETS: dict = {}  # one test set per process, loaded once


def run_one(out: Path, key: str, seed: int, settings: dict, data_dir: str | None, tag: str,
            log: Callable[[str], None] = _print) -> str:
    """Train (or resume) and test one run, leaving reproduce.json or failed.json; returns trained, failed
    or interrupted. A module-level function of plain arguments, so a worker process can run it."""
    s = Settings(**settings)
    config = CONFIGS[key]
    geometry = Geometry.for_size(s.size)
    run_dir = run_path(out, key, seed)
    try:
        outcome = _train(config, seed, run_dir, Path(out), s, geometry, data_dir, tag, log)
    except ClassicNetsError as e:
        _write_json(run_dir / "failed.json", {"config": key, "seed": seed, "error": str(e)})
        log(f"{tag}: failed: {e}")
        return "failed"
    if outcome is None:
        return "interrupted"
    test_key = (s.data, s.limit_test, data_dir)
    if test_key not in _TEST_SETS:
        _TEST_SETS[test_key] = _test_set(s, data_dir)
    test_set = _TEST_SETS[test_key]
    log(f"{tag}: testing with {', '.join(PROTOCOLS)} on {len(test_set.labels)} test images")
    with _torch_threads(s.train_options.get("threads")):
        evaluation = _evaluate(run_dir / "last.pt", config, geometry, test_set, s)
    _write_json(run_dir / "reproduce.json", {"config": key, "seed": seed, "model": outcome["model"],
                                             "train": outcome, "eval": evaluation})
    errors = evaluation["protocols"]
    log(f"{tag}: top-1 error {100 * errors['single']['top1_error']:.2f}% single-scale, "
        f"{100 * errors['multi-crop+dense']['top1_error']:.2f}% multi-crop + dense")
    return "trained"


@contextmanager
def _torch_threads(n: int | None):
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_path(out: Path, key: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{key}-seed{seed}"


def _validate(s: Settings, seeds: int) -> None:
    if seeds < 1:
        raise ClassicNetsError(f"--seeds must be 1 or more; got {seeds}")
    if s.recipe not in RECIPES:
        raise ClassicNetsError(f"unknown reproduce recipe {s.recipe!r}; choose one of {', '.join(RECIPES)}")
    if s.size < 32:
        raise ClassicNetsError(f"VGG needs inputs of at least 32x32 (5 max-pools of 2); got --size {s.size}")
    if s.epochs < 1 or s.grid < 1 or s.width <= 0:
        raise ClassicNetsError("--epochs, --grid and --width must be positive")
    for key in ("limit_train", "limit_test"):
        value = getattr(s, key)
        if value is not None and value < 1:
            raise ClassicNetsError(f"--{key.replace('_', '-')} must be positive; got {value}")
    from classicnets.models.init import SCHEMES

    init = {**RECIPES[s.recipe], **s.train_options}.get("init")
    if init is not None and init not in SCHEMES:
        raise ClassicNetsError(
            f"the {s.recipe} recipe initialises with {init!r}, a scheme this classicnets lacks (it has "
            f"{', '.join(SCHEMES)}): update classicnets, or pass --set init=NAME (narrow plain nets then "
            "learn slowly) or --bn")


def _select(configs: Sequence[str] | None) -> list[Config]:
    if not configs:
        return list(GRID)
    unknown = [k for k in configs if k not in CONFIGS]
    if unknown:
        raise ClassicNetsError(f"unknown configuration {unknown[0]!r}; the grid has {', '.join(CONFIGS)}")
    wanted = set(configs)
    wanted |= {CONFIGS[k].warm_from for k in configs if CONFIGS[k].warm_from}
    return [c for c in GRID if c.key in wanted]


def _check_grid_file(out: Path, s: Settings) -> None:
    """OUT/grid.json pins the settings, so a re-run never mixes runs trained differently."""
    path = out / "grid.json"
    wanted = s.comparable()
    if path.is_file():
        saved = _read_json(path).get("settings", {})
        for key, value in wanted.items():
            if key == "train_options":
                saved_value = {k: v for k, v in saved.get(key, {}).items() if k not in _PRESENTATION}
                value = {k: v for k, v in value.items() if k not in _PRESENTATION}
            else:
                saved_value = saved.get(key)
            if saved_value != value:
                flag = "--" + key.replace("_", "-") if key != "train_options" else "--set"
                raise ClassicNetsError(
                    f"{out} holds a grid run with {key} {saved_value!r}, not {value!r}: pass {flag} "
                    f"{_show(saved_value)} to continue it, or choose another --out")
        return
    _write_json(path, {"format": "classicnets.reproduce.vgg/1", "settings": wanted})


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _show_value(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={_show_value(v)}" for k, v in value.items()) or "(none)"
    return str(value)


def train_settings(config: Config, seed: int, run_dir: Path, out: Path, s: Settings, geometry: Geometry,
                   data_dir: str | None) -> dict[str, Any]:
    """The classicnets.train keywords of one run."""
    lo, hi = geometry.train_scale(config.scale)
    values = {
        **RECIPES[s.recipe], **s.train_options,
        "model": config.model + ("_bn" if s.bn else ""), "data": s.data, "data_dir": data_dir,
        "width": s.width, "size": s.size, "epochs": s.epochs, "seed": seed, "scale_jitter": f"{lo},{hi}",
        "limit_train": s.limit_train, "limit_test": s.limit_test, "run_dir": str(run_dir),
        "name": run_dir.name,
    }
    if config.warm_from:
        values["warm_start"] = str(run_path(out, config.warm_from, seed) / "last.pt")
    return values


def _train(config: Config, seed: int, run_dir: Path, out: Path, s: Settings, geometry: Geometry,
           data_dir: str | None, tag: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Train (or resume, or pick up) one run; its summary, or None when it was interrupted."""
    from classicnets.training import checkpoint, train

    last = run_dir / "last.pt"
    values = train_settings(config, seed, run_dir, out, s, geometry, data_dir)
    cpu = time.process_time()
    if last.is_file():
        ckpt = checkpoint.load(last)
        if ckpt["epoch"] >= s.epochs:  # trained to the end; stopped before it was tested
            log(f"{tag}: trained earlier, testing it")
            return _summary(values["model"], ckpt["metrics"], "completed", values.get("warm_start"), None)
        log(f"{tag}: resuming at epoch {ckpt['epoch'] + 1} of {s.epochs}")
        presentation = {k: v for k, v in s.train_options.items() if k in _PRESENTATION}
        result = train(resume=run_dir, **presentation)
    else:
        if config.warm_from:
            source = Path(values["warm_start"])
            if not source.is_file():
                raise ClassicNetsError(f"{config.key} starts from the trained {config.warm_from} of seed "
                                       f"{seed}, but {source} does not exist")
        log(f"{tag}: training {values['model']} ({config.about})")
        result = train(values)
    if result.stopped == "interrupted":
        return None
    return _summary(values["model"], result.history, result.stopped, values.get("warm_start"),
                    time.process_time() - cpu)


def _summary(model: str, history: list[dict], stopped: str, warm_start: str | None,
             cpu_seconds: float | None) -> dict[str, Any]:
    """What the report needs of a training run. cpu_seconds: of this process's last stint (None: unknown)."""
    keep = ("epoch", "train_loss", "train_acc", "test_acc", "test_loss", "elapsed")
    return {"model": model, "stopped": stopped, "warm_start": warm_start,
            "seconds": history[-1]["elapsed"] if history else 0.0, "cpu_seconds": cpu_seconds,
            "history": [{k: r.get(k) for k in keep} for r in history]}


def _test_set(s: Settings, data_dir: str | None):
    from classicnets import data

    split = "val" if s.data.startswith("folder:") else "test"
    test = data.load(s.data, split, root=data_dir)
    if s.limit_test is not None and s.limit_test < len(test.labels):
        import torch

        test = test.subset(torch.arange(s.limit_test))
    return test


def _evaluate(checkpoint_path: Path, config: Config, geometry: Geometry, test_set,
              s: Settings) -> dict[str, Any]:
    """Every protocol of PROTOCOLS on the final weights; errors as fractions."""
    from classicnets.evaluation import evaluate, load_inference_model

    clock, cpu = time.monotonic(), time.process_time()
    net = load_inference_model(checkpoint_path)
    done: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, p in PROTOCOLS.items():
        if p.combine:
            top1, top5 = combined_errors([done[k].posteriors for k in p.combine], test_set.labels)
            results[name] = {"top1_error": top1, "top5_error": top5,
                             "views": sum(done[k].views for k in p.combine),
                             "scales": list(done[p.combine[0]].scales),
                             "description": " and ".join(p.combine) + ": soft-max posteriors averaged"}
            continue
        scales = geometry.multi_q(config.scale) if p.multi_scale else (geometry.single_q(config.scale),)
        r = evaluate(net, test_set, scales=scales, crops=p.crops, dense=p.dense, grid=s.grid, batch_size=256)
        done[name] = r
        results[name] = {"top1_error": r.top1_error, "top5_error": r.top5_error, "views": r.views,
                         "scales": list(r.scales), "description": r.protocol}
    return {"seconds": time.monotonic() - clock, "cpu_seconds": time.process_time() - cpu,
            "count": len(test_set.labels), "classes": len(test_set.classes), "protocols": results}


def combined_errors(posteriors: Sequence, labels) -> tuple[float, float]:
    """Top-1 / top-5 error of equally averaged soft-max posteriors (N x K each)."""
    mean = sum(posteriors) / len(posteriors)
    labels = labels.to(mean.device).long()
    k = min(5, mean.shape[1])
    n = max(int(labels.numel()), 1)
    top1 = (mean.argmax(1) == labels).sum().item() / n
    top5 = (mean.topk(k, dim=1).indices == labels[:, None]).any(1).sum().item() / n
    return 1.0 - top1, 1.0 - top5


# --- aggregation and claims -----------------------------------------------------------------------

def load_results(out: Path, rows: Sequence[Config], seeds: int) -> tuple[dict, dict]:
    """({config: {seed: record}}, {config: {seed: error}}) from the run dirs."""
    results: dict[str, dict[int, dict]] = {c.key: {} for c in rows}
    failures: dict[str, dict[int, str]] = {c.key: {} for c in rows}
    for c in rows:
        for seed in range(seeds):
            run = run_path(out, c.key, seed)
            if (run / "reproduce.json").is_file():
                results[c.key][seed] = _read_json(run / "reproduce.json")
            elif (run / "failed.json").is_file():
                failures[c.key][seed] = _read_json(run / "failed.json")["error"]
    return results, failures


def _errors(results: dict, config: str, protocol: str, metric: str = "top1_error") -> dict[int, float]:
    """{seed: error in %} of one cell."""
    return {seed: 100 * r["eval"]["protocols"][protocol][metric]
            for seed, r in results.get(config, {}).items()}


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else None)


def paired(worse: dict[int, float], better: dict[int, float]) -> tuple[float | None, float | None, int]:
    """(m, s, n) of d_k = worse_k - better_k over the seeds both have."""
    d = [worse[k] - better[k] for k in sorted(set(worse) & set(better))]
    m, s = _mean_std(d)
    return m, s, len(d)


def verdict(m: float | None, s: float | None, n: int, *, no_better: bool = False) -> str:
    """The rule of RULE. For `no_better` claims, m is the advantage the claim says does not exist."""
    if m is None or n < 2 or s is None:
        return UNSURE
    if no_better:
        return FAILS if m > s else HOLDS
    if m > s:
        return HOLDS
    if m < -s:
        return FAILS
    return UNSURE


def _fmt_diff(m: float | None, s: float | None, n: int) -> str:
    if m is None:
        return "no seeds to compare"
    if s is None:
        return f"difference {m:+.2f} pp (1 seed: no spread)"
    return f"difference {m:+.2f} pp (spread {s:.2f} over {n} seeds)"


def _fmt_cell(values: dict[int, float]) -> str:
    m, s = _mean_std(list(values.values()))
    if m is None:
        return "-"
    return f"{m:.2f}" + (f" ± {s:.2f}" if s is not None else "")


def judge(claim: Claim, results: dict) -> dict[str, Any]:
    """{"verdict", "details": [lines], ...} for one claim. Nets that did not learn prove nothing."""
    named = [] if claim.kind in ("protocol-lower", "combined") else [claim.a, *claim.b]
    stuck = [k for k in named if at_chance(results, k)]
    if stuck:
        line = f"{', '.join(stuck)} did not learn (single-scale error at chance level): nothing to compare"
        return {"verdict": UNSURE, "details": [line]}
    return _CHECKS[claim.kind](claim, results)


def at_chance(results: dict, config: str) -> bool:
    """Mean single-scale accuracy below 1.5 / classes, the trainer's test for a net that is not learning."""
    runs = results.get(config, {})
    if not runs:
        return False
    classes = next(iter(runs.values()))["eval"]["classes"]
    return statistics.fmean(_errors(results, config, "single").values()) >= 100 * (1 - 1.5 / classes)


def _check_lower(claim: Claim, results: dict) -> dict[str, Any]:
    better = _errors(results, claim.a, claim.protocol)
    worse = _errors(results, claim.b[0], claim.protocol)
    m, s, n = paired(worse, better)
    v = verdict(m, s, n)
    line = (f"{claim.b[0]} {_fmt_cell(worse)} % vs {claim.a} {_fmt_cell(better)} % top-1 error "
            f"({PROTOCOLS[claim.protocol].title}); {claim.b[0]} - {claim.a}: {_fmt_diff(m, s, n)}")
    return {"verdict": v, "details": [line], "m": m, "s": s, "n": n}


def _check_not_lower(claim: Claim, results: dict) -> dict[str, Any]:
    candidate = _errors(results, claim.a, claim.protocol)
    base = _errors(results, claim.b[0], claim.protocol)
    m, s, n = paired(base, candidate)  # how much the candidate lowers the error
    v = verdict(m, s, n, no_better=True)
    line = (f"{claim.b[0]} {_fmt_cell(base)} % vs {claim.a} {_fmt_cell(candidate)} % top-1 error "
            f"({PROTOCOLS[claim.protocol].title}); {claim.b[0]} - {claim.a}: {_fmt_diff(m, s, n)}")
    return {"verdict": v, "details": [line], "m": m, "s": s, "n": n}


def _check_depth(claim: Claim, results: dict) -> dict[str, Any]:
    chain = [*claim.b, claim.a]
    errors = {k: _errors(results, k, claim.protocol) for k in chain}
    m, s, n = paired(errors[chain[0]], errors[claim.a])
    v = verdict(m, s, n)
    cells = ", ".join(f"{k} {_fmt_cell(errors[k])} %" for k in chain)
    lines = [f"top-1 error ({PROTOCOLS[claim.protocol].title}): {cells}",
             f"{chain[0]} - {claim.a}: {_fmt_diff(m, s, n)}"]
    for shallow, deep in itertools.pairwise(chain):
        sm, ss, sn = paired(errors[shallow], errors[deep])
        lines.append(f"step {shallow} -> {deep}: {verdict(sm, ss, sn)}, {_fmt_diff(sm, ss, sn)}")
    return {"verdict": v, "details": lines, "m": m, "s": s, "n": n}


def _protocol_diffs(results: dict, worse: str, better: str) -> tuple[dict[int, float], list[str]]:
    """Per seed, the difference worse - better averaged over configurations; and one line per config."""
    per_seed: dict[int, list[float]] = {}
    lines = []
    for config in results:
        if at_chance(results, config):
            lines.append(f"{config}: left out, it did not learn")
            continue
        w, b = _errors(results, config, worse), _errors(results, config, better)
        m, s, n = paired(w, b)
        if n:
            lines.append(f"{config}: {PROTOCOLS[worse].title} {_fmt_cell(w)} % vs {PROTOCOLS[better].title} "
                         f"{_fmt_cell(b)} %, {_fmt_diff(m, s, n)}")
        for seed in set(w) & set(b):
            per_seed.setdefault(seed, []).append(w[seed] - b[seed])
    return {seed: statistics.fmean(v) for seed, v in per_seed.items()}, lines


def _check_protocol_lower(claim: Claim, results: dict) -> dict[str, Any]:
    diffs, lines = _protocol_diffs(results, claim.b[0], claim.a)
    m, s = _mean_std(list(diffs.values()))
    n = len(diffs)
    v = verdict(m, s, n)
    head = (f"{PROTOCOLS[claim.b[0]].title} - {PROTOCOLS[claim.a].title}, averaged over configurations: "
            f"{_fmt_diff(m, s, n)}")
    return {"verdict": v, "details": [head, *lines], "m": m, "s": s, "n": n}


def _check_combined(claim: Claim, results: dict) -> dict[str, Any]:
    lines, verdicts, numbers = [], [], {}
    for other in claim.b:
        diffs, per_config = _protocol_diffs(results, other, claim.a)
        m, s = _mean_std(list(diffs.values()))
        n = len(diffs)
        verdicts.append(verdict(m, s, n))
        numbers[other] = {"m": m, "s": s, "n": n}
        lines.append(f"{PROTOCOLS[other].title} - {PROTOCOLS[claim.a].title}, averaged over configurations: "
                     f"{verdicts[-1]}, {_fmt_diff(m, s, n)}")
        lines += [f"  - {line}" for line in per_config]
    if all(v == HOLDS for v in verdicts):
        v = HOLDS
    elif FAILS in verdicts:
        v = FAILS
    else:
        v = UNSURE
    return {"verdict": v, "details": lines, "versus": numbers}


def _check_warm(claim: Claim, results: dict) -> dict[str, Any]:
    """At least as good in the end, and better in the end or after the first epoch (faster)."""
    warm, cold = claim.a, claim.b[0]
    mf, sf, nf = paired(_errors(results, cold, claim.protocol), _errors(results, warm, claim.protocol))
    early = {k: _first_epoch_error(results, k) for k in (warm, cold)}
    me, se, ne = paired(early[cold], early[warm])
    final_v, early_v = verdict(mf, sf, nf), verdict(me, se, ne)
    if final_v == FAILS or (early_v == FAILS and final_v != HOLDS):
        v = FAILS
    elif HOLDS in (final_v, early_v):
        v = HOLDS
    else:
        v = UNSURE
    end = {k: _errors(results, k, claim.protocol) for k in (warm, cold)}
    lines = [(f"end ({PROTOCOLS[claim.protocol].title}): {cold} {_fmt_cell(end[cold])} % vs {warm} "
              f"{_fmt_cell(end[warm])} %; {cold} - {warm}: {final_v}, {_fmt_diff(mf, sf, nf)}"),
             (f"after epoch 1 (the trainer's test, centre crop): {cold} {_fmt_cell(early[cold])} % vs {warm} "
              f"{_fmt_cell(early[warm])} %; {cold} - {warm}: {early_v}, {_fmt_diff(me, se, ne)}")]
    return {"verdict": v, "details": lines, "m": mf, "s": sf, "n": nf}


def _first_epoch_error(results: dict, config: str) -> dict[int, float]:
    out = {}
    for seed, r in results.get(config, {}).items():
        history = r["train"]["history"]
        if history and history[0].get("test_acc") is not None:
            out[seed] = 100 * (1 - history[0]["test_acc"])
    return out


_CHECKS: dict[str, Callable[[Claim, dict], dict[str, Any]]] = {
    "lower": _check_lower, "not-lower": _check_not_lower, "depth": _check_depth,
    "protocol-lower": _check_protocol_lower, "combined": _check_combined, "warm": _check_warm,
}


# --- the report -----------------------------------------------------------------------------------

def write_report(out: Path, s: Settings, seeds: int, rows: Sequence[Config], geometry: Geometry) -> Path:
    """report.md, report.json and errors.png in `out`, from the finished runs; returns report.md's path."""
    results, failures = load_results(out, rows, seeds)
    claims = [{"key": c.key, "claim": c.text, "paper": c.paper, **judge(c, results)} for c in CLAIMS]
    table = {c.key: {p: {"top1": _mean_std(list(_errors(results, c.key, p).values())),
                         "top5": _mean_std(list(_errors(results, c.key, p, "top5_error").values())),
                         "seeds": sorted(results[c.key])}
                     for p in PROTOCOLS} for c in rows}
    report = {
        "format": "classicnets.reproduce.vgg.report/1", "paper": PAPER_REF,
        "date": time.strftime("%Y-%m-%d %H:%M"), "settings": s.comparable(), "seeds": seeds,
        "geometry": dataclasses.asdict(geometry), "recipe": _recipe(s),
        "train_config": _train_config(s), "threads": s.train_options.get("threads"), "rule": RULE,
        "claims": claims,
        "table": {k: {p: {"top1_error_mean": v["top1"][0], "top1_error_std": v["top1"][1],
                          "top5_error_mean": v["top5"][0], "top5_error_std": v["top5"][1],
                          "seeds": v["seeds"]}
                      for p, v in row.items()} for k, row in table.items()},
        "paper_rows": [dataclasses.asdict(r) for r in PAPER],
        "runs": {k: {str(seed): r for seed, r in v.items()} for k, v in results.items()},
        "failures": {k: {str(seed): e for seed, e in v.items()} for k, v in failures.items() if v},
        "environment": _environment(),
    }
    _write_json(out / "report.json", report)
    plot_errors(table, rows, out / "errors.png", _subtitle(s, seeds))
    path = out / "report.md"
    path.write_text(_markdown(report, rows, results, failures, s, seeds, geometry))
    return path


# What the report shows of the resolved training config (the rest is in each run's config.toml).
_SHOWN = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "schedule", "warmup_epochs", "dropout",
          "init", "flip", "normalize", "precision")


def _recipe(s: Settings) -> dict[str, Any]:
    """The recipe's overrides with the user's --set ones, without those that only change the display."""
    return {k: v for k, v in {**RECIPES[s.recipe], **s.train_options}.items() if k not in _PRESENTATION}


def _train_config(s: Settings) -> dict[str, Any]:
    from classicnets.training import resolve_config

    config = resolve_config(_recipe(s))
    return {k: getattr(config, k) for k in _SHOWN}


def _environment() -> dict[str, Any]:
    import torch

    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def _subtitle(s: Settings, seeds: int) -> str:
    limit = f"first {s.limit_train} train images" if s.limit_train else "all train images"
    return (f"{s.data}, {limit}, {s.size}x{s.size}, width {s.width:g}, {_count(s.epochs, 'epoch')}, "
            f"{seeds} seed{'s' if seeds != 1 else ''}, recipe {s.recipe}{' + BN' if s.bn else ''}")


def plot_errors(table: dict, rows: Sequence[Config], path: Path, subtitle: str) -> Path:
    """Grouped bars: top-1 error per configuration and protocol, mean with the seeds' std as error bars."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(7.0, 1.1 * len(rows) + 2), 4.4), layout="constrained")
    ax = fig.add_subplot()
    names = list(PROTOCOLS)
    width = 0.8 / len(names)
    lows, highs = [], []
    for i, name in enumerate(names):
        bars = [(j, *table[c.key][name]["top1"]) for j, c in enumerate(rows)
                if table[c.key][name]["top1"][0] is not None]
        if not bars:
            continue
        xs = [j + (i - (len(names) - 1) / 2) * width for j, _, _ in bars]
        means, stds = [m for _, m, _ in bars], [sd or 0.0 for _, _, sd in bars]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=PROTOCOLS[name].title)
        lows += [m - sd for m, sd in zip(means, stds, strict=True)]
        highs += [m + sd for m, sd in zip(means, stds, strict=True)]
    ax.set_xticks(range(len(rows)), [c.key for c in rows])
    ylabel = "top-1 test error (%)"
    if lows and min(lows) > 0.5 * max(highs):  # the differences are what matter: zoom in on them
        span = max(highs) - min(lows)
        ax.set_ylim(max(0.0, min(lows) - 0.5 * span - 0.5), max(highs) + 0.3 * span + 0.5)
        ylabel += ", axis not from 0"
    ax.set_ylabel(ylabel)
    ax.set_title(f"VGG configurations at small scale\n{subtitle}", fontsize=10)
    if lows:
        ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    fig.savefig(path, dpi=120)
    return path


def _markdown(report: dict, rows: Sequence[Config], results: dict, failures: dict,
              s: Settings, seeds: int, g: Geometry) -> str:
    env = report["environment"]
    where = env["cuda"] or f"{report['threads'] or 'all'} CPU thread(s)"
    lines = [
        "# The VGG paper's claims at small scale",
        "",
        f"`{_command(s, seeds)}` — {report['date']}; torch {env['torch']}, {where}.",
        "",
        (f"Paper: {PAPER_REF}. Its numbers are ImageNet (1000 classes) validation errors at 224x224; ours "
         f"are {s.data} test errors of nets with {s.width:g} of the channels at {s.size}x{s.size}, so "
         "compare directions and gaps, not levels."),
        "",
        "## Setup",
        "",
        *_setup_lines(report, s, seeds, g),
        "",
        "## Claims",
        "",
        f"Rule: {RULE}",
        "",
    ]
    for c in report["claims"]:
        lines.append(f"- **{c['claim']}: {c['verdict']}.** Paper: {c['paper']}.")
        lines += [f"  {d}" if d.startswith("  - ") else f"  - {d}" for d in c["details"]]
    lines += ["", "## Top-1 / top-5 error (%) by configuration and protocol", ""]
    header = ["config", "net", "train S"] + [PROTOCOLS[p].title for p in PROTOCOLS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in rows:
        lo, hi = g.train_scale(c.scale)
        scale = str(lo) if lo == hi else f"[{lo}, {hi}]"
        cells = []
        for p in PROTOCOLS:
            top1 = _fmt_cell(_errors(results, c.key, p))
            top5 = _fmt_cell(_errors(results, c.key, p, "top5_error"))
            cells.append(f"{top1} / {top5}")
        net = c.model + ("_bn" if s.bn else "") + (f" from {c.warm_from}" if c.warm_from else "")
        lines.append(f"| {c.key} | {net} | {scale} | " + " | ".join(cells) + " |")
    lines += ["", "## Beside the paper (ImageNet val, Tables 3-5)", "",
              "| ours | protocol | ours top-1 | ours top-5 | paper | paper top-1 | paper top-5 |",
              "|---|---|---|---|---|---|---|"]
    for c in rows:
        for p, protocol in PROTOCOLS.items():
            row = PAPER_BESIDE.get((c.key, p))
            if row is None:
                continue
            lines.append(f"| {c.key} | {protocol.title} | {_fmt_cell(_errors(results, c.key, p))} | "
                         f"{_fmt_cell(_errors(results, c.key, p, 'top5_error'))} | {row.table}: {row.row} | "
                         f"{row.top1} | {row.top5} |")
    lines += ["", "## Runs", "",
              "| run | net | epochs | train min | test min | trainer's test acc by epoch |",
              "|---|---|---|---|---|---|"]
    for c in rows:
        for seed, r in sorted(results[c.key].items()):
            accs = ", ".join(f"{h['test_acc']:.3f}" for h in r["train"]["history"]
                             if h.get("test_acc") is not None)
            lines.append(f"| {c.key}-seed{seed} | {r['model']} | {len(r['train']['history'])} | "
                         f"{r['train']['seconds'] / 60:.1f} | {r['eval']['seconds'] / 60:.1f} | {accs} |")
        for seed, error in sorted(failures[c.key].items()):
            lines.append(f"| {c.key}-seed{seed} | failed | | | | {error} |")
    missing = [f"{c.key}-seed{k}" for c in rows for k in range(seeds)
               if k not in results[c.key] and k not in failures[c.key]]
    if missing:
        lines += ["", f"Not finished yet ({len(missing)}): {', '.join(missing)}.",
                  "Re-run the command to finish them."]
    lines += ["", "![top-1 error by configuration and protocol](errors.png)", ""]
    return "\n".join(lines)


def _setup_lines(report: dict, s: Settings, seeds: int, g: Geometry) -> list[str]:
    limit_test = f"the first {s.limit_test}" if s.limit_test else "all"
    limit_train = f"the first {s.limit_train}" if s.limit_train else "all"
    trained = ", ".join(f"{k.replace('_', ' ')} {_show_value(v)}" for k, v in report["train_config"].items())
    fixed_q, jitter_q = g.multi_q("fixed"), g.multi_q("jitter")
    return [
        f"- Data: {s.data}, {limit_train} training images; tested on {limit_test} test images.",
        (f"- Nets: Table 1's A, A-LRN, B, C, D, E{' with batch norm (not the paper)' if s.bn else ''}, "
         f"width {s.width:g}, input {s.size}x{s.size}; D also trained with scale jittering, and D "
         "warm-started from the A of the same seed (its first 4 convs and 3 FC layers, Sect. 3.1)."),
        f"- Training, one recipe for all ({s.recipe}): {_count(s.epochs, 'epoch')}, {trained}.",
        (f"- Scales, the paper's scaled by {s.size}/224: training crop {g.size}, fixed S = {g.fixed_s}, "
         f"jittered S in [{g.jitter[0]}, {g.jitter[1]}] (paper: 224, 256, [256, 512])."),
        (f"- Protocols, on the final weights: single-scale = centre crop at Q = S ({g.single_q('fixed')}; "
         f"{g.single_q('jitter')} for jittered S); multi-scale = centre crops at Q = "
         f"{{{', '.join(map(str, fixed_q))}}} ({{{', '.join(map(str, jitter_q))}}} for jittered S), "
         f"posteriors averaged; multi-crop = a {s.grid}x{s.grid} grid of crops and their flips at each of "
         "those Q (paper: 5x5); dense = the fully convolutional net on the whole image and its flip at each "
         "Q; multi-crop + dense = the two averaged. The paper's Tables 3-4 are dense evaluations; our "
         "single- and multi-scale rows use centre crops, because at this size a dense net's score map is "
         "mostly 1x1."),
        f"- Seeds: {', '.join(map(str, range(seeds)))}; cells are mean ± std over seeds, in %.",
    ]


def _command(s: Settings, seeds: int) -> str:
    parts = ["classicnets reproduce vgg", f"--data {s.data}", f"--width {s.width:g}", f"--size {s.size}",
             f"--epochs {s.epochs}", f"--seeds {seeds}"]
    parts.append(f"--limit-train {s.limit_train}" if s.limit_train else "--limit-train none")
    parts.append(f"--limit-test {s.limit_test}" if s.limit_test else "--limit-test none")
    if s.recipe != DEFAULT_RECIPE:
        parts.append(f"--recipe {s.recipe}")
    if s.bn:
        parts.append("--bn")
    if s.grid != Settings.grid:
        parts.append(f"--grid {s.grid}")
    parts += [f"--set {k}={_show_value(v)}" for k, v in s.train_options.items() if k not in _PRESENTATION]
    return " ".join(parts)


# --- files ----------------------------------------------------------------------------------------

def _write_json(path: Path, value: Any) -> None:
    """Written to a temp file and renamed, so a kill never leaves half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(value, indent=1, default=_plain) + "\n")
    tmp.replace(path)


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ClassicNetsError(f"{path} is unreadable ({e}); delete it to redo that step") from None

