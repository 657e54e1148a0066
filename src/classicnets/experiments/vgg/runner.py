"""Running the grid: the command's settings, the schedulers (one run after another, or a pool of worker
processes), training and testing one run, the grid.json check that keeps a re-run consistent, and loading
the finished runs for the report.

Each run lives in OUT/runs/<row>-seed<k>/: reproduce.json there means finished, failed.json failed, a
last.pt alone interrupted (the trainer resumes it).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from classicnets import data
from classicnets.errors import ClassicNetsError
from classicnets.evaluation import evaluate, load_inference_model
from classicnets.experiments.vgg.paper import (
    GRID,
    GRID_RECIPES,
    GRID_ROWS,
    PRESENTATION,
    TEST_PROTOCOLS,
    Geometry,
    GridRow,
)
from classicnets.experiments.vgg.report import count, show_value, write_json, write_report
from classicnets.experiments.vgg.settings import DEFAULT_JOBS, GridSettings
from classicnets.metrics import topk_correct
from classicnets.models.init import SCHEMES
from classicnets.training import checkpoint
from classicnets.training.config import convert
from classicnets.training.runtime import torch_settings
from classicnets.training.trainer import train

# grid.json's "format": unchanged, so older OUT folders still resume
GRID_FORMAT = "classicnets.reproduce.vgg/1"


def parse_train_options(items: Sequence[str]) -> dict[str, Any]:
    """["precision=bf16", "device=cuda"] -> checked trainer settings."""
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
                                   "classicnets.experiments.vgg.paper)")
        options[key] = convert(key, value.strip())
    return options


# --- the command ----------------------------------------------------------------------------------



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

    `settings` are the fields of `GridSettings` (data, width, size, epochs, limit_train, limit_test,
    recipe, bn, grid, train_options). `configs` limits the grid to some rows (their warm-start sources are
    added). With `report_only`, nothing is trained: the report covers the runs finished so far. `threads`
    is the CPU threads of each run (None: all cores); `jobs` runs that many at once, each in its own
    process. One thread per run is the default: these nets are small, and two threads ran 10x slower than
    one here while another process used a core; `jobs=2` uses two cores without that risk.
    """
    log = log or _print
    s = GridSettings(**settings)
    _validate(s, seeds)
    if jobs < 1:
        raise ClassicNetsError(f"--jobs must be 1 or more; got {jobs}")
    if threads is not None and "threads" not in s.train_options:
        s.train_options["threads"] = threads
    if jobs > 1 and "progress" not in s.train_options:
        s.train_options["progress"] = "lines"  # two progress bars on one terminal garble each other
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ClassicNetsError(f"--out {out} is a file: pass a folder for the grid's runs and its report")
    checkpoint.make_folder(out)
    rows = _select(configs)
    _check_grid_file(out, s)
    plan = [(c.key, seed) for seed in range(seeds) for c in rows]
    log(f"reproduce vgg: {len(rows)} configurations x {count(seeds, 'seed')} = {len(plan)} runs "
        f"in {out / 'runs'}")
    todo, skipped = [], 0
    for index, (key, seed) in enumerate(plan, 1):
        run_dir = run_path(out, key, seed)
        tag = f"[{index}/{len(plan)}] {run_dir.name}"
        if (run_dir / "reproduce.json").is_file():
            log(f"{tag}: skipped, finished earlier ({run_dir / 'reproduce.json'})")
            skipped += 1
        elif (run_dir / "failed.json").is_file():
            log(f"{tag}: skipped, it failed earlier ({_read_json(run_dir / 'failed.json').get('error', 'no reason saved')}); "
                f"delete {run_dir} to try again")
            skipped += 1
        elif not report_only:
            todo.append((key, seed, tag))
    settings_now = dataclasses.asdict(s)
    if jobs == 1:
        statuses = _run_serially(todo, out, settings_now, data_dir, log)
    else:
        statuses = _run_in_parallel(todo, out, settings_now, data_dir, jobs)
    results, failures = load_results(out, rows, seeds)
    report = write_report(out, s, seeds, rows, Geometry.for_size(s.size), results, failures)
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
                source = GRID_ROWS[key].warm_from
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
    s = GridSettings(**settings)
    row = GRID_ROWS[key]
    geometry = Geometry.for_size(s.size)
    run_dir = run_path(out, key, seed)
    try:
        outcome = _train(row, seed, run_dir, Path(out), s, geometry, data_dir, tag, log)
    except ClassicNetsError as e:
        write_json(run_dir / "failed.json", {"config": key, "seed": seed, "error": str(e)})
        log(f"{tag}: failed: {e}")
        return "failed"
    if outcome is None:
        return "interrupted"
    test_key = (s.data, s.limit_test, data_dir)
    if test_key not in _TEST_SETS:
        _TEST_SETS[test_key] = _test_set(s, data_dir)
    test_set = _TEST_SETS[test_key]
    log(f"{tag}: testing with {', '.join(TEST_PROTOCOLS)} on {len(test_set.labels)} test images")
    with torch_settings(threads=s.train_options.get("threads") or None):
        evaluation = _evaluate(run_dir / "last.pt", row, geometry, test_set, s)
    write_json(run_dir / "reproduce.json", {"config": key, "seed": seed, "model": outcome["model"],
                                            "train": outcome, "eval": evaluation})
    errors = evaluation["protocols"]
    log(f"{tag}: top-1 error {100 * errors['single']['top1_error']:.2f}% single-scale, "
        f"{100 * errors['multi-crop+dense']['top1_error']:.2f}% multi-crop + dense")
    return "trained"


def run_path(out: Path, key: str, seed: int) -> Path:
    return Path(out) / "runs" / f"{key}-seed{seed}"


def _validate(s: GridSettings, seeds: int) -> None:
    if seeds < 1:
        raise ClassicNetsError(f"--seeds must be 1 or more; got {seeds}")
    if s.recipe not in GRID_RECIPES:
        raise ClassicNetsError(f"unknown reproduce recipe {s.recipe!r}; choose one of {', '.join(GRID_RECIPES)}")
    if s.size < 32:
        raise ClassicNetsError(f"VGG needs inputs of at least 32x32 (5 max-pools of 2); got --size {s.size}")
    if s.epochs < 1 or s.grid < 1 or s.width <= 0:
        raise ClassicNetsError("--epochs, --grid and --width must be positive")
    for key in ("limit_train", "limit_test"):
        value = getattr(s, key)
        if value is not None and value < 1:
            raise ClassicNetsError(f"--{key.replace('_', '-')} must be positive; got {value}")
    init = {**GRID_RECIPES[s.recipe], **s.train_options}.get("init")
    if init is not None and init not in SCHEMES:
        raise ClassicNetsError(
            f"the {s.recipe} recipe initialises with {init!r}, a scheme this classicnets lacks (it has "
            f"{', '.join(SCHEMES)}): update classicnets, or pass --set init=NAME (narrow plain nets then "
            "learn slowly) or --bn")


def _select(configs: Sequence[str] | None) -> list[GridRow]:
    if not configs:
        return list(GRID)
    unknown = [k for k in configs if k not in GRID_ROWS]
    if unknown:
        raise ClassicNetsError(f"unknown configuration {unknown[0]!r}; the grid has {', '.join(GRID_ROWS)}")
    wanted = set(configs)
    wanted |= {GRID_ROWS[k].warm_from for k in configs if GRID_ROWS[k].warm_from}
    return [c for c in GRID if c.key in wanted]


def _check_grid_file(out: Path, s: GridSettings) -> None:
    """OUT/grid.json pins the settings, so a re-run never mixes runs trained differently."""
    path = out / "grid.json"
    wanted = s.comparable()
    if path.is_file():
        saved = _read_json(path).get("settings", {})
        for key, value in wanted.items():
            if key == "train_options":
                saved_value = {k: v for k, v in saved.get(key, {}).items() if k not in PRESENTATION}
                value = {k: v for k, v in value.items() if k not in PRESENTATION}
            else:
                saved_value = saved.get(key)
            if saved_value != value:
                flag = "--" + key.replace("_", "-") if key != "train_options" else "--set"
                raise ClassicNetsError(
                    f"{out} holds a grid run with {key} {saved_value!r}, not {value!r}: pass {flag} "
                    f"{_show(saved_value)} to continue it, or choose another --out")
        return
    write_json(path, {"format": GRID_FORMAT, "settings": wanted})


def _show(value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k}={show_value(v)}" for k, v in value.items()) or "(none)"
    return str(value)


# --- one run ----------------------------------------------------------------------------------------

def train_settings(row: GridRow, seed: int, run_dir: Path, out: Path, s: GridSettings, geometry: Geometry,
                   data_dir: str | None) -> dict[str, Any]:
    """The classicnets.train keywords of one run."""
    lo, hi = geometry.train_scale(row.scale)
    values = {
        **GRID_RECIPES[s.recipe], **s.train_options,
        "model": row.model + ("_bn" if s.bn else ""), "data": s.data, "data_dir": data_dir,
        "width": s.width, "size": s.size, "epochs": s.epochs, "seed": seed, "scale_jitter": f"{lo},{hi}",
        "limit_train": s.limit_train, "limit_test": s.limit_test, "run_dir": str(run_dir),
        "name": run_dir.name,
    }
    if row.warm_from:
        values["warm_start"] = str(run_path(out, row.warm_from, seed) / "last.pt")
    return values


def _train(row: GridRow, seed: int, run_dir: Path, out: Path, s: GridSettings, geometry: Geometry,
           data_dir: str | None, tag: str, log: Callable[[str], None]) -> dict[str, Any] | None:
    """Train (or resume, or pick up) one run; its summary, or None when it was interrupted."""
    last = run_dir / "last.pt"
    values = train_settings(row, seed, run_dir, out, s, geometry, data_dir)
    cpu = time.process_time()
    if last.is_file():
        ckpt = checkpoint.load(last)
        if ckpt["epoch"] >= s.epochs:  # trained to the end; stopped before it was tested
            log(f"{tag}: trained earlier, testing it")
            return _summary(values["model"], ckpt["metrics"], "completed", values.get("warm_start"), None)
        log(f"{tag}: resuming at epoch {ckpt['epoch'] + 1} of {s.epochs}")
        presentation = {k: v for k, v in s.train_options.items() if k in PRESENTATION}
        result = train(resume=run_dir, **presentation)
    else:
        if row.warm_from:
            source = Path(values["warm_start"])
            if not source.is_file():
                raise ClassicNetsError(f"{row.key} starts from the trained {row.warm_from} of seed "
                                       f"{seed}, but {source} does not exist")
        log(f"{tag}: training {values['model']} ({row.about})")
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


def _test_set(s: GridSettings, data_dir: str | None):
    test = data.load(s.data, data.test_split(s.data), root=data_dir)
    if s.limit_test is not None and s.limit_test < len(test.labels):
        test = test.subset(torch.arange(s.limit_test))
    return test


def _evaluate(checkpoint_path: Path, row: GridRow, geometry: Geometry, test_set,
              s: GridSettings) -> dict[str, Any]:
    """Every protocol of TEST_PROTOCOLS on the final weights; errors as fractions."""
    clock, cpu = time.monotonic(), time.process_time()
    net = load_inference_model(checkpoint_path)
    done: dict[str, Any] = {}
    results: dict[str, dict[str, Any]] = {}
    for name, p in TEST_PROTOCOLS.items():
        if p.combine:
            top1, top5 = combined_errors([done[k].posteriors for k in p.combine], test_set.labels)
            results[name] = {"top1_error": top1, "top5_error": top5,
                             "views": sum(done[k].views for k in p.combine),
                             "scales": list(done[p.combine[0]].scales),
                             "description": " and ".join(p.combine) + ": soft-max posteriors averaged"}
            continue
        scales = geometry.multi_q(row.scale) if p.multi_scale else (geometry.single_q(row.scale),)
        r = evaluate(net, test_set, scales=scales, crops=p.crops, dense=p.dense, grid=s.grid, batch_size=256,
                     adapt_threads=not s.train_options.get("threads"))  # --threads all: follow busy programs
        done[name] = r
        results[name] = {"top1_error": r.top1_error, "top5_error": r.top5_error, "views": r.views,
                         "scales": list(r.scales), "description": r.protocol}
    return {"seconds": time.monotonic() - clock, "cpu_seconds": time.process_time() - cpu,
            "count": len(test_set.labels), "classes": len(test_set.classes), "protocols": results}


def combined_errors(posteriors: Sequence, labels) -> tuple[float, float]:
    """Top-1 / top-5 error of equally averaged soft-max posteriors (N x K each)."""
    mean = sum(posteriors) / len(posteriors)
    labels = labels.to(mean.device).long()
    n = max(int(labels.numel()), 1)
    top1 = (mean.argmax(1) == labels).sum().item() / n
    top5 = topk_correct(mean, labels, 5).item() / n
    return 1.0 - top1, 1.0 - top5


# --- the finished runs ------------------------------------------------------------------------------

def load_results(out: Path, rows: Sequence[GridRow], seeds: int) -> tuple[dict, dict]:
    """({row key: {seed: record}}, {row key: {seed: error}}) from the run dirs."""
    results: dict[str, dict[int, dict]] = {c.key: {} for c in rows}
    failures: dict[str, dict[int, str]] = {c.key: {} for c in rows}
    for c in rows:
        for seed in range(seeds):
            run = run_path(out, c.key, seed)
            if (run / "reproduce.json").is_file():
                results[c.key][seed] = _read_json(run / "reproduce.json")
            elif (run / "failed.json").is_file():
                failures[c.key][seed] = _read_json(run / "failed.json").get("error", "no reason saved")
    return results, failures


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: not JSON, or not text at all
        raise ClassicNetsError(f"{path} is unreadable ({str(e).splitlines()[0][:100]}); delete it to redo "
                               "that step") from None
    if not isinstance(value, dict):
        raise ClassicNetsError(f"{path} holds no JSON object; delete it to redo that step")
    return value
