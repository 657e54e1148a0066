"""The experiment's report: report.md, report.json and errors.png from the finished runs, with the
environment and the command line that reproduces them."""

from __future__ import annotations

import dataclasses
import json
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from classicnets.experiments.vgg.paper import (
    CLAIMS,
    DEFAULT_CROP_GRID,
    DEFAULT_GRID_RECIPE,
    GRID_RECIPES,
    PAPER,
    PAPER_BESIDE,
    PAPER_REF,
    PRESENTATION,
    TEST_PROTOCOLS,
    Geometry,
    GridRow,
)
from classicnets.experiments.vgg.settings import GridSettings
from classicnets.experiments.vgg.stats import RULE, cell_errors, format_cell, judge, mean_std
from classicnets.plots import plot_errors
from classicnets.training import checkpoint
from classicnets.training.config import resolve_config

REPORT_FORMAT = "classicnets.reproduce.vgg.report/1"  # report.json's "format": unchanged, for its readers

# What the report shows of the resolved training config (the rest is in each run's config.toml).
_SHOWN = ("optimizer", "lr", "momentum", "weight_decay", "batch_size", "schedule", "warmup_epochs", "dropout",
          "init", "flip", "normalize", "precision")


def write_report(out: Path, s: GridSettings, seeds: int, rows: Sequence[GridRow], geometry: Geometry,
                 results: dict, failures: dict) -> Path:
    """report.md, report.json and errors.png in `out`, from the finished runs; returns report.md's path.

    `results` and `failures` are what `runner.load_results` reads from the run dirs."""
    claims = [{"key": c.key, "claim": c.text, "paper": c.paper, **judge(c, results)} for c in CLAIMS]
    table = {c.key: {p: {"top1": mean_std(list(cell_errors(results, c.key, p).values())),
                         "top5": mean_std(list(cell_errors(results, c.key, p, "top5_error").values())),
                         "seeds": sorted(results[c.key])}
                     for p in TEST_PROTOCOLS} for c in rows}
    report = {
        "format": REPORT_FORMAT, "paper": PAPER_REF,
        "date": time.strftime("%Y-%m-%d %H:%M"), "settings": s.comparable(), "seeds": seeds,
        "geometry": dataclasses.asdict(geometry), "recipe": recipe_options(s),
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
    write_json(out / "report.json", report)
    series = {protocol.title: [table[c.key][p]["top1"] for c in rows] for p, protocol in TEST_PROTOCOLS.items()}
    plot_errors([c.key for c in rows], series, out / "errors.png",
                f"VGG configurations at small scale\n{_subtitle(s, seeds)}")
    path = out / "report.md"
    path.write_text(_markdown(report, rows, results, failures, s, seeds, geometry))
    return path


def recipe_options(s: GridSettings) -> dict[str, Any]:
    """The recipe's overrides with the user's --set ones, without those that only change the display."""
    return {k: v for k, v in {**GRID_RECIPES[s.recipe], **s.train_options}.items() if k not in PRESENTATION}


def _train_config(s: GridSettings) -> dict[str, Any]:
    config = resolve_config(recipe_options(s))
    return {k: getattr(config, k) for k in _SHOWN}


def _environment() -> dict[str, Any]:
    return {"python": platform.python_version(), "torch": torch.__version__, "machine": platform.machine(),
            "cpu_threads": torch.get_num_threads(), "cuda": torch.cuda.get_device_name(0)
            if torch.cuda.is_available() else None}


def _subtitle(s: GridSettings, seeds: int) -> str:
    limit = f"first {s.limit_train} train images" if s.limit_train else "all train images"
    return (f"{s.data}, {limit}, {s.size}x{s.size}, width {s.width:g}, {count(s.epochs, 'epoch')}, "
            f"{seeds} seed{'s' if seeds != 1 else ''}, recipe {s.recipe}{' + BN' if s.bn else ''}")


def _markdown(report: dict, rows: Sequence[GridRow], results: dict, failures: dict,
              s: GridSettings, seeds: int, g: Geometry) -> str:
    env = report["environment"]
    where = env["cuda"] or f"{report['threads'] or 'all'} CPU thread(s)"
    lines = [
        "# The VGG paper's claims at small scale",
        "",
        f"`{command_line(s, seeds)}` — {report['date']}; torch {env['torch']}, {where}.",
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
    header = ["config", "net", "train S"] + [TEST_PROTOCOLS[p].title for p in TEST_PROTOCOLS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in rows:
        lo, hi = g.train_scale(c.scale)
        scale = str(lo) if lo == hi else f"[{lo}, {hi}]"
        cells = []
        for p in TEST_PROTOCOLS:
            top1 = format_cell(cell_errors(results, c.key, p))
            top5 = format_cell(cell_errors(results, c.key, p, "top5_error"))
            cells.append(f"{top1} / {top5}")
        net = c.model + ("_bn" if s.bn else "") + (f" from {c.warm_from}" if c.warm_from else "")
        lines.append(f"| {c.key} | {net} | {scale} | " + " | ".join(cells) + " |")
    lines += ["", "## Beside the paper (ImageNet val, Tables 3-5)", "",
              "| ours | protocol | ours top-1 | ours top-5 | paper | paper top-1 | paper top-5 |",
              "|---|---|---|---|---|---|---|"]
    for c in rows:
        for p, protocol in TEST_PROTOCOLS.items():
            row = PAPER_BESIDE.get((c.key, p))
            if row is None:
                continue
            lines.append(f"| {c.key} | {protocol.title} | {format_cell(cell_errors(results, c.key, p))} | "
                         f"{format_cell(cell_errors(results, c.key, p, 'top5_error'))} | {row.table}: "
                         f"{row.row} | {row.top1} | {row.top5} |")
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


def _setup_lines(report: dict, s: GridSettings, seeds: int, g: Geometry) -> list[str]:
    limit_test = f"the first {s.limit_test}" if s.limit_test else "all"
    limit_train = f"the first {s.limit_train}" if s.limit_train else "all"
    trained = ", ".join(f"{k.replace('_', ' ')} {show_value(v)}" for k, v in report["train_config"].items())
    fixed_q, jitter_q = g.multi_q("fixed"), g.multi_q("jitter")
    return [
        f"- Data: {s.data}, {limit_train} training images; tested on {limit_test} test images.",
        (f"- Nets: Table 1's A, A-LRN, B, C, D, E{' with batch norm (not the paper)' if s.bn else ''}, "
         f"width {s.width:g}, input {s.size}x{s.size}; D also trained with scale jittering, and D "
         "warm-started from the A of the same seed (its first 4 convs and 3 FC layers, Sect. 3.1)."),
        f"- Training, one recipe for all ({s.recipe}): {count(s.epochs, 'epoch')}, {trained}.",
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


def command_line(s: GridSettings, seeds: int) -> str:
    """The `classicnets reproduce vgg` command that trains this grid (display-only --set options left out)."""
    parts = ["classicnets reproduce vgg", f"--data {s.data}", f"--width {s.width:g}", f"--size {s.size}",
             f"--epochs {s.epochs}", f"--seeds {seeds}"]
    parts.append(f"--limit-train {s.limit_train}" if s.limit_train else "--limit-train none")
    parts.append(f"--limit-test {s.limit_test}" if s.limit_test else "--limit-test none")
    if s.recipe != DEFAULT_GRID_RECIPE:
        parts.append(f"--recipe {s.recipe}")
    if s.bn:
        parts.append("--bn")
    if s.grid != DEFAULT_CROP_GRID:
        parts.append(f"--grid {s.grid}")
    parts += [f"--set {k}={show_value(v)}" for k, v in s.train_options.items() if k not in PRESENTATION]
    return " ".join(parts)


# --- small shared helpers: wording and files ---------------------------------------------------------

def count(n: int, noun: str) -> str:
    """count(1, "seed") == "1 seed", count(3, "seed") == "3 seeds"."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def show_value(value: Any) -> str:
    """A setting's value as the command line writes it (booleans in lower case)."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def write_json(path: Path, value: Any) -> None:
    """Written atomically (`checkpoint.atomic_write`), so a kill never leaves half a marker and a full disk
    is one line."""
    text = json.dumps(value, indent=1, default=_plain) + "\n"
    checkpoint.atomic_write(path, lambda tmp: tmp.write_text(text))


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")
