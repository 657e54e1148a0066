"""Threads under load: how much of its quiet speed training keeps beside busy programs (issue 15, part 1).

Each trial is one `classicnets train` process: the main job's recipe (fast), one epoch of --images
training images, with the threads either adaptive (no --threads: `training.threads.AdaptiveThreads`) or
fixed. A trial runs quiet, or beside --busy competing processes this script starts (each a Python busy
loop, one core's worth, as a browser tab or a compiler would be) and stops when the trial ends. Quiet and
loaded trials alternate, round after round, so a change in the machine's speed hits both alike.

The figure is the epoch's training images/s as the trainer records it (metrics.jsonl: images over the
time inside the training steps); "kept" is loaded / quiet of the same setting, and "vs quiet default"
is loaded / the adaptive setting's quiet speed (what the user had before the neighbour started).

    .venv/bin/python benchmarks/threads_under_load.py                      # ~6 min on 2 cores
    .venv/bin/python benchmarks/threads_under_load.py --busy 2 --rounds 2
    .venv/bin/python benchmarks/threads_under_load.py --smoke              # seconds: shows it works

Run it with nothing else busy: the script makes the load it measures.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUSY_LOOP = "import os\nparent = os.getppid()\nwhile os.getppid() == parent: pass"  # ends with this script
SETTINGS = {"adaptive": [], "2-threads": ["--threads", "2"], "1-thread": ["--threads", "1"]}


def trial(setting: str, busy: int, images: int, out: Path, extra: list[str]) -> dict:
    """One training epoch in its own process, beside `busy` busy loops; its record and log."""
    run_dir = out / f"{setting}-busy{busy}-{time.strftime('%H%M%S')}-{time.time_ns() % 10**6}"
    cmd = [sys.executable, "-m", "classicnets", "train", "--epochs", "1", "--limit-train", str(images),
           "--limit-test", "2000", "--run-dir", str(run_dir), "--progress", "lines", "--no-plots",
           "--tensorboard", "off", *SETTINGS[setting], *extra]
    loops = [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0)  # the neighbours are running before training starts
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, cwd=REPO)
    finally:
        for p in loops:
            p.kill()
            p.wait()
    if done.returncode != 0:
        raise SystemExit(f"trial failed ({' '.join(cmd)}):\n{done.stderr[-2000:]}")
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    record = [r for r in records if "examples_per_sec" in r][-1]  # the epoch's (the last line ends the run)
    notes = [line for line in (done.stdout + done.stderr).splitlines() if line.startswith("threads:")]
    return {"setting": setting, "busy": busy, "images_per_sec": record["examples_per_sec"],
            "train_seconds": record["train_seconds"], "notes": notes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, default=1, help="competing busy processes in loaded trials")
    parser.add_argument("--rounds", type=int, default=3, help="quiet + loaded trials of each setting")
    parser.add_argument("--images", type=int, default=12800, help="training images per trial (one epoch)")
    parser.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated: " + ", ".join(SETTINGS))
    parser.add_argument("--smoke", action="store_true", help="tiny trials: shows the script works, proves nothing")
    parser.add_argument("--json", type=Path, default=None, help="also write the trials here")
    args, extra = parser.parse_known_args()
    settings = [s.strip() for s in args.settings.split(",")]
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown:
        parser.error(f"unknown setting {unknown[0]!r}; choose from {', '.join(SETTINGS)}")
    for flag in ("busy", "rounds", "images"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag} must be at least 1, got {getattr(args, flag)}")
    if args.smoke:
        args.rounds, args.images = 1, 1024
        extra += ["--batch-size", "128"]
    trials = []
    with tempfile.TemporaryDirectory(prefix="threads-under-load-") as tmp:
        for r in range(args.rounds):
            for setting in settings:
                for busy in (0, args.busy):
                    t = trial(setting, busy, args.images, Path(tmp), extra)
                    trials.append(t)
                    print(f"round {r + 1} {setting:9s} busy {busy}: {t['images_per_sec']:7,.0f} images/s"
                          + (f"  [{t['notes'][0][:110]}...]" if t["notes"] else ""), flush=True)
    print(f"\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.images} images, "
          f"{args.busy} busy process(es), median of {args.rounds} round(s):")
    med = {(s, b): statistics.median(t["images_per_sec"] for t in trials if t["setting"] == s and t["busy"] == b)
           for s in settings for b in (0, args.busy)}
    reference = med.get(("adaptive", 0)) or max(med[(s, 0)] for s in settings)
    print("| setting | quiet images/s | loaded images/s | kept (loaded / quiet) | loaded / quiet default |")
    print("|---|---|---|---|---|")
    for s in settings:
        quiet, loaded = med[(s, 0)], med[(s, args.busy)]
        print(f"| {s} | {quiet:,.0f} | {loaded:,.0f} | {loaded / quiet:.0%} | {loaded / reference:.0%} |")
    if args.json:
        args.json.write_text(json.dumps(trials, indent=1))


if __name__ == "__main__":
    main()
