"""Time to accuracy: wall time until Fashion-MNIST test accuracy first reaches 93% (issue 5, point 2).

Each job is one `classicnets.train(...)` run with `stop_at_accuracy` (the run stops after the first
epoch whose test accuracy reaches the target) and `max_minutes` (it stops after the epoch that passes
the budget). The time to accuracy is the trainer's run clock at the end of that epoch, test pass
included; the wall time around `train()` (data loading and setup too) is printed beside it.

Jobs:
    main    `classicnets train` with no flags: the fast recipe (the main job)
    former  the fast recipe as it was until 2026-12-03 (10 epochs, batch 256, every setting spelled out),
            the reference of issue 15's "time to 93% cut to 0.6x"
    d2l32   the tutorials' recipe (`--recipe d2l`) at 32x32 instead of 224

    .venv/bin/python benchmarks/time_to_accuracy.py                  # main and d2l32; up to ~25 min on 2 CPU cores
    .venv/bin/python benchmarks/time_to_accuracy.py --jobs main
    .venv/bin/python benchmarks/time_to_accuracy.py --jobs main,former --rounds 2   # in turns: main, former, main, former
    .venv/bin/python benchmarks/time_to_accuracy.py --jobs main,former --rounds 2 --set main.head=gap  # a lever, one side
    .venv/bin/python benchmarks/time_to_accuracy.py --smoke          # seconds: shows it works, proves nothing

Run it on a quiet machine: other programs on the same cores stretch every figure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

import classicnets
from classicnets.bench import cores_busy, machine_info
from classicnets.errors import ClassicNetsError
from classicnets.training.config import convert

# The fast recipe until 2026-12-03 (training.config.RECIPES["fast"] then), spelled out so that it stays
# what it was when the recipe changes. It is laid over the "custom" recipe, not "fast": a setting the
# current fast recipe adds (its head, say) must not leak into the reference. The code of that day computed
# every conv weight gradient with oneDNN's kernel: `small_map_conv_grad` off (on for the code since, which
# `--set former.small_map_conv_grad=true` measures).
FORMER_FAST = {
    "model": "vgg11_bn", "width": 0.25, "size": 32, "dropout": 0.5, "init": "kaiming",
    "epochs": 10, "batch_size": 256, "optimizer": "sgd", "lr": 0.2, "momentum": 0.9,
    "nesterov": True, "weight_decay": 5e-4, "schedule": "onecycle", "onecycle_pct": 0.25,
    "label_smoothing": 0.1, "crop_padding": 0, "flip": True, "test_flip": True,
    "normalize": "meanstd", "precision": "bf16", "channels_last": True, "eval_every": 1,
    "small_map_conv_grad": False,
}
JOBS = {
    "main": {"what": "`classicnets train` (fast recipe)", "settings": {}, "max_minutes": 10.0},
    "former": {"what": "the fast recipe until 2026-12-03", "settings": {"recipe": "custom", **FORMER_FAST},
               "max_minutes": 10.0},
    "d2l32": {"what": "the tutorials' recipe at 32x32 (`--recipe d2l --size 32`)",
              "settings": {"recipe": "d2l", "size": 32}, "max_minutes": 15.0},
}
# A run that only shows the script works end to end: a slice of the data, one short epoch.
SMOKE = {"limit_train": 1024, "limit_test": 256, "epochs": 1, "batch_size": 128}


def run_job(name: str, target: float, max_minutes: float, extra: dict, runs_dir: Path) -> dict:
    job = JOBS[name]
    stamp = time.strftime("%Y%m%d-%H%M%S")
    settings = {**job["settings"], "stop_at_accuracy": target, "max_minutes": max_minutes,
                "run_dir": str(runs_dir / f"tta-{name}-{stamp}"), "progress": "lines", **extra}
    start = time.perf_counter()
    result = classicnets.train(**settings)
    wall = time.perf_counter() - start
    reached = next((r for r in result.history if r["test_acc"] is not None and r["test_acc"] >= target), None)
    c = result.config
    return {
        "job": name, "what": job["what"], "model": c.model, "width": c.width, "size": c.size,
        "precision": c.precision, "channels_last": c.channels_last, "batch_size": c.batch_size,
        "target": target, "max_minutes": max_minutes, "reached": reached is not None,
        "time_to_target_seconds": reached["elapsed"] if reached else None,
        "epoch_reached": reached["epoch"] if reached else None,
        "best_test_acc": result.best_test_acc, "best_epoch": result.best_epoch,
        "epochs_done": len(result.history), "train_seconds": result.seconds, "wall_seconds": wall,
        "stopped": result.stopped, "run_dir": str(result.run_dir),
        "command": "classicnets train " + " ".join(_flags({**job["settings"], **extra},
                                                          target, max_minutes)),
    }


def _flags(settings: dict, target: float, max_minutes: float) -> list[str]:
    out = []
    for key, value in {**settings, "stop_at_accuracy": target, "max_minutes": max_minutes}.items():
        flag = key.replace("_", "-")
        out += [f"--{flag}" if value else f"--no-{flag}"] if isinstance(value, bool) else [f"--{flag}", str(value)]
    return out


def describe(r: dict) -> str:
    head = f"{r['job']:6s} {r['model']} w{r['width']:g} {r['size']}x{r['size']} {r['precision']}" + (
        " channels_last" if r["channels_last"] else "")
    if r["reached"]:
        body = (f"{100 * r['target']:.0f}% test accuracy at epoch {r['epoch_reached']} after "
                f"{r['time_to_target_seconds'] / 60:.2f} min")
    else:
        body = (f"{100 * r['target']:.0f}% not reached in {r['train_seconds'] / 60:.1f} min "
                f"({r['epochs_done']} epochs, {r['stopped']}); best {r['best_test_acc']:.4f} "
                f"at epoch {r['best_epoch']}")
    return f"{head}: {body} (wall {r['wall_seconds'] / 60:.2f} min with data loading and setup)"


def parse_set(items: list[str], jobs: list[str]) -> dict[str, dict]:
    """--set KEY=VALUE for every job, --set JOB.KEY=VALUE for one: {job: settings}."""
    out: dict[str, dict] = {name: {} for name in jobs}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--set wants KEY=VALUE or JOB.KEY=VALUE, got {item!r}")
        job, dot, key = key.strip().rpartition(".")
        if dot and job not in out:
            raise ValueError(f"--set {item!r}: {job!r} is not one of the jobs run ({', '.join(jobs)})")
        for name in [job] if dot else jobs:
            out[name][key] = convert(key, value.strip())
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", default="main,d2l32", help="comma-separated: " + ", ".join(JOBS))
    parser.add_argument("--target", type=float, default=0.93, help="test accuracy to reach (default 0.93)")
    parser.add_argument("--max-minutes", type=float, default=None,
                        help="budget per job (default: main 10, d2l32 15); a job stops after the epoch "
                             "that passes it")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override a training setting for every job (--set threads=2) or for one "
                             "(--set main.epochs=6)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the job list this many times, in turns (side by side on a drifting machine)")
    parser.add_argument("--smoke", action="store_true", help="a tiny run that only shows the script works")
    parser.add_argument("--runs-dir", default="runs", help="where the run folders go (default: runs)")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON to FILE")
    args = parser.parse_args(argv)
    names = [n.strip() for n in args.jobs.split(",") if n.strip()]
    unknown = [n for n in names if n not in JOBS]
    if unknown:
        parser.error(f"unknown job {unknown[0]!r}; choose from {', '.join(JOBS)}")
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")
    try:
        per_job = parse_set(args.set, names)
    except (ValueError, ClassicNetsError) as e:
        parser.error(str(e))
    extra = {name: {**(SMOKE if args.smoke else {}), **settings} for name, settings in per_job.items()}
    if args.smoke and args.max_minutes is None:
        args.max_minutes = 0.05
    m = machine_info(torch.device("cpu"))
    m["cores_busy_before"] = cores_busy()
    print(f"machine: {m['name']}, {m['cores']} cores ({m['cores_busy_before']} busy with other programs), "
          f"torch {m['torch']}, {m['date']}", flush=True)
    results = []
    for name in names * args.rounds:
        budget = args.max_minutes if args.max_minutes is not None else JOBS[name]["max_minutes"]
        print(f"\n== {name}: {JOBS[name]['what']}, target {args.target}, budget {budget:g} min", flush=True)
        results.append(run_job(name, args.target, budget, extra[name], Path(args.runs_dir)))
    print("\ntime to accuracy:")
    for r in results:
        print("  " + describe(r))
        print(f"         command: {r['command']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"machine": m, "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
