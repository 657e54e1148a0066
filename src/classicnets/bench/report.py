"""What `classicnets bench` prints: the machine, how busy it was, and the side-by-side table."""

from __future__ import annotations

import math
import os
import platform
import statistics
import time
from typing import Any

import torch

from classicnets.training.memory import format_bytes


def machine_info(device: torch.device) -> dict[str, Any]:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        name = _cpu_model() or platform.processor() or platform.machine()
    return {"device": str(device), "name": name, "threads": torch.get_num_threads(),
            "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
            "load_average": _load_average(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d %H:%M")}


def cores_busy(seconds: float = 0.5) -> float | None:
    """How many cores other programs keep busy: /proc/stat sampled over `seconds` while we sleep
    (Linux; None elsewhere). Unlike the load average it is not an average over the last minute."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                values = [int(v) for v in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values[:8]), idle

    first = sample()
    time.sleep(seconds)
    second = sample()
    if first is None or second is None or second[0] == first[0]:
        return None
    total, idle = second[0] - first[0], second[1] - first[1]
    cores = os.cpu_count() or 1
    return round(cores * (total - idle) / total, 2)


def _load_average() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def _cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        return None
    return None


def _rate(x: float | None, unit: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for scale, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M")):
        if unit and x >= scale:
            return f"{x / scale:.1f} {prefix}{unit}"
    return f"{x:,.1f}{' ' + unit if unit else ''}"


def _timed(d: dict, steps_key: str, prefix: str) -> str:
    """'40 steps in 10.2 s (1.9 threads busy)': busy = process CPU time / wall time."""
    seconds, cpu = d[f"{prefix}_seconds"], d[f"{prefix}_cpu_seconds"]
    return f"{d[steps_key]} steps in {seconds:.1f} s ({cpu / seconds:.1f} threads busy)"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def format_report(result) -> str:
    """The human-readable table `classicnets bench` prints, from a `BenchResult`."""
    d = result.to_dict()
    s, m, tut = d["settings"], d["machine"], d["tutorial"] or {}
    how = ", ".join((s["precision"], "channels_last" if s["channels_last"] else "NCHW",
                     "compiled" if s["compile"] else "eager"))
    size = f"{s['channels']}x{s['size']}x{s['size']}"
    lines = [
        (f"{s['model']} width {s['width']:g} at {size}: {d['params'] / 1e6:.2f}M params, "
         f"{d['macs_per_image'] / 1e6:.1f} MMACs/image forward; batch {s['batch']} (eval {d['eval_batch']}), "
         f"{s['data']}"),
        f"{m['name']} ({m['device']}, {m['threads']} threads), torch {m['torch']}, {m['date']}",
        f"timed: train {_timed(d, 'train_steps', 'train')}, eval {_timed(d, 'eval_batches', 'eval')}"
        + (f", tutorials' train {_timed(tut, 'train_steps', 'train')}" if tut else ""),
    ]
    tried = m.get("threads_tried")
    if tried:  # JSON keys are strings
        rates = ", ".join(f"{n} at {rate:,.0f} images/s" for n, rate in tried.items())
        lines.append(f"threads tried before timing: {rates}; timed with {m['threads']} (--threads N fixes it)")
    others = m.get("cores_busy_before")
    if others is not None and others >= 0.25:
        lines.append(f"note: other programs kept {others:g} of {m['cores']} cores busy when the bench "
                     "started, so the absolute figures may be low; the side-by-side ratio holds up better")
    busy = d["train_cpu_seconds"] / d["train_seconds"]
    if m["device"] == "cpu" and busy < 0.75 * m["threads"]:
        why = ("" if m["threads"] == 1 else ", and threads that wait for each other slow down far more "
               "than the share they lose; --threads 1 shows one core's speed")
        lines.append(f"warning: our training kept only {busy:.1f} of {m['threads']} threads busy: other "
                     f"programs took the cores{why}; rerun on a quiet machine for absolute figures")
    lines.append("")
    rows = [
        ("", f"ours ({how})", f"tutorials' way ({tut['model']}, fp32, NCHW)" if tut else "tutorials' way",
         "ours / tutorials"),
        ("train images/s", _rate(d["train_images_per_sec"]), _rate(tut.get("train_images_per_sec")),
         f"{d['speedup']:.2f}x" if d["speedup"] else "-"),
        ("eval images/s", _rate(d["eval_images_per_sec"]), "-", ""),
        ("train FLOP/s", _rate(d["train_flops_per_sec"], "FLOP/s"),
         _rate(tut.get("train_flops_per_sec"), "FLOP/s"), ""),
        ("train MFU", _pct(d["train_mfu"]), _pct(tut.get("train_mfu")), ""),
        ("eval MFU", _pct(d["eval_mfu"]), "-", ""),
        ("train peak memory", format_bytes(d["peak_memory_bytes"]),
         format_bytes(tut["peak_memory_bytes"]) if tut else "-", ""),
        ("eval peak memory", format_bytes(d["eval_peak_memory_bytes"]), "-", ""),
    ]
    if not tut:  # ours alone: no empty columns
        rows = [row[:2] for row in rows]
    widths = [max(len(row[i]) for row in rows) + (0 if i == 0 else 3) for i in range(len(rows[0]))]
    for row in rows:
        cells = (cell.rjust(width) for cell, width in zip(row[1:], widths[1:], strict=True))
        lines.append(row[0].ljust(widths[0]) + "".join(cells))
    if d["matmul_peak_flops"]:
        peaks = ", ".join(f"{p} {_rate(v, 'FLOP/s')}" for p, v in d["matmul_peak_flops"].items())
        lines += ["", f"matmul peak (MFU = achieved / peak of the precision used): {peaks}"]
    turns = tut.get("speedup_per_turn") or []
    if len(turns) > 1:
        spread = (f"min {min(turns):.2f}x, median {statistics.median(turns):.2f}x, "
                  f"max {max(turns):.2f}x")
        lines += ["", f"ours / tutorials per turn ({len(turns)} turns, taken alternately): {spread}"]
    workers = "; the tutorials': main process only, not its workers" if tut and m["device"] == "cpu" else ""
    lines.append(f"memory: {d['memory_measure']}{workers}")
    return "\n".join(lines)


def format_turns(ours: tuple[str, Any], theirs: tuple[str, Any], ratios: list[float], ratio_name: str) -> str:
    """Two (name, Timing) sides measured by `time_in_turns`, a line each, then ours/theirs overall and the
    spread of the per-turn ratios: what the A/B scripts in benchmarks/ print."""
    width = max(len(ours[0]), len(theirs[0]))
    lines = [f"  {name:{width}s} {timing.images_per_sec:7.0f} images/s ({timing.steps} steps)"
             for name, timing in (theirs, ours)]
    ratios = sorted(ratios)
    lines.append(f"  {ratio_name}: {ours[1].images_per_sec / theirs[1].images_per_sec:.3f}x overall; per turn min "
                 f"{ratios[0]:.3f}, median {statistics.median(ratios):.3f}, max {ratios[-1]:.3f}")
    return "\n".join(lines)
