"""PNG plots of training runs, drawn from their metrics.jsonl.

Uses matplotlib's object API (no pyplot), so drawing never changes a notebook's backend or opens a
window. `plot_run` draws one run's loss and accuracy curves (train vs test) and its confusion matrix;
`plot_runs` overlays several runs, one colour each, labelled with the run name; `plot_errors` draws
grouped error bars (the VGG experiment's errors by configuration and protocol).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from classicnets.errors import ClassicNetsError


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """{"name", "start", "epochs": [...], "summary"} from a run dir (or a metrics.jsonl path)."""
    path = Path(run_dir)
    if path.is_dir():
        path = path / "metrics.jsonl"
    if not path.is_file():
        what = "is not a regular file" if path.exists() else "does not exist"
        raise ClassicNetsError(f"{path} {what}; pass a run dir written by `classicnets train`")
    if path.suffix != ".jsonl":
        raise ClassicNetsError(f"{path} is not a metrics.jsonl: pass a run dir written by `classicnets train` "
                               "(or its metrics.jsonl)")
    size = path.stat().st_size
    if size > MAX_METRICS_BYTES:
        raise ClassicNetsError(f"{path} is {size:,} bytes, far more than a run's metrics ({MAX_METRICS_BYTES:,} at "
                               "most): it is not a metrics.jsonl; pass a run dir written by `classicnets train`")
    start, epochs, summary = {}, {}, None
    try:
        with open(path, "rb") as f:  # bytes: a damaged line is named, not a UnicodeDecodeError
            lines = list(enumerate(f, 1))
    except OSError as e:
        raise ClassicNetsError(f"cannot read {path} ({e.strerror or type(e).__name__}): check the path") from None
    for number, raw in lines:
        if not raw.strip():
            continue
        try:
            record = json.loads(raw.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            if number == len(lines) and not raw.endswith(b"\n"):
                continue  # the run was killed while appending this line; --resume rewrites the file
            raise ClassicNetsError(f"{path}:{number} is not a JSON line; the file is damaged: delete that line "
                                   "to plot the others") from None
        problem = _record_problem(record)
        if problem:
            raise ClassicNetsError(f"{path}:{number} {problem}; the file is damaged: delete that line to plot "
                                   "the others")
        kind = record.get("type")
        if kind == "start":
            start = record
        elif kind == "epoch":
            epochs[record["epoch"]] = record  # a later record of the same epoch wins
        elif kind == "summary":
            summary = record
    name = start.get("name") if isinstance(start.get("name"), str) else None
    return {"name": name or path.parent.name, "start": start, "epochs": [epochs[e] for e in sorted(epochs)],
            "summary": summary}


PLOTTED = ("train_loss", "train_acc", "test_loss", "test_acc")  # per epoch record: a number or null


def _record_problem(record: Any) -> str | None:
    """What is wrong with one metrics.jsonl record for plotting, or None."""
    if not isinstance(record, dict):
        return "is not a JSON object"
    kind = record.get("type")
    if kind == "epoch":
        epoch = record.get("epoch")
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            return "is an epoch record without a whole epoch number"
        bad = [k for k in PLOTTED if record.get(k) is not None and not _is_number(record[k])]
        if bad:
            return f"has a {bad[0]} that is not a number"
    elif kind == "summary":
        confusion, classes = record.get("confusion"), record.get("classes")
        if confusion is not None and not (
                isinstance(confusion, list) and all(isinstance(row, list) and len(row) == len(confusion)
                                                    and all(_is_count(v) for v in row) for row in confusion)):
            return "has a confusion matrix that is not a square table of counts"
        if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
            return "has class names that are not a list of strings"
        if confusion and classes and len(classes) != len(confusion):
            return f"has {len(classes)} class names for a {len(confusion)}-class confusion matrix"
        if record.get("final_test_acc") is not None and not _is_number(record["final_test_acc"]):
            return "has a final_test_acc that is not a number"
    elif kind == "start" and record.get("classes") is not None and not (
            isinstance(record["classes"], list) and all(isinstance(c, str) for c in record["classes"])):
        return "has class names that are not a list of strings"
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


# Written into our images, so that `plot --out` may replace an earlier plot but never anyone else's file.
_MARK = {"png": {"Software": "classicnets"}, "pdf": {"Creator": "classicnets"}, "svg": {"Creator": "classicnets"}}
MAX_METRICS_BYTES = 64 * 2**20  # a metrics.jsonl has a line of ~500 bytes per epoch


def _is_our_image(path: Path) -> bool:
    """Whether an image file carries the metadata `save_figure` writes (near its start)."""
    with open(path, "rb") as f:
        return b"classicnets" in f.read(2**16)


def save_figure(fig: Figure, path: str | Path, dpi: int) -> Path:
    """fig to `path` (format from its suffix) through a temp file renamed into place, so a full disk leaves
    no half image; a folder that refuses the write is one ClassicNetsError line."""
    path, tmp = Path(path), None
    try:  # the temp name is the one checkpoint.remove_partial_writes knows
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
        kind = path.suffix.lower().lstrip(".") or "png"
        with warnings.catch_warnings():  # crowded layouts warn; the figure is still drawn
            warnings.simplefilter("ignore", UserWarning)
            fig.savefig(tmp, dpi=dpi, format=kind, metadata=_MARK.get(kind))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
        raise ClassicNetsError(f"could not write {path}: {(e.strerror or type(e).__name__).lower()}; write "
                               "to a folder you can write to") from None
    return path


def _figure(width=6.4, height=4.2):
    return Figure(figsize=(width, height), layout="constrained")


def _curve(ax, epochs, key, **style):
    points = [(r["epoch"], r[key]) for r in epochs if r.get(key) is not None]
    if points:
        ax.plot(*zip(*points), marker="o", markersize=3, **style)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """loss.png, accuracy.png and confusion.png (once the run finished) in `out_dir`, else the run dir."""
    run = read_metrics(run_dir)
    out = Path(out_dir or (run_dir if Path(run_dir).is_dir() else Path(run_dir).parent))
    out.mkdir(parents=True, exist_ok=True)
    if not run["epochs"]:
        raise ClassicNetsError(f"{run_dir} has no finished epoch to plot yet")
    written = []
    for key, ylabel in (("loss", "loss"), ("acc", "accuracy")):
        fig = _figure()
        ax = fig.add_subplot()
        _curve(ax, run["epochs"], f"train_{key}", label="train")
        _curve(ax, run["epochs"], f"test_{key}", label="test")
        ax.set(xlabel="epoch", ylabel=ylabel, title=f"{run['name']}: {ylabel}")
        ax.grid(alpha=0.3)
        ax.legend()
        path = out / ("loss.png" if key == "loss" else "accuracy.png")
        save_figure(fig, path, dpi=110)
        written.append(path)
    summary = run["summary"] or {}
    if summary.get("confusion"):
        path = out / "confusion.png"
        plot_confusion(summary["confusion"], summary.get("classes") or run["start"].get("classes"), path,
                       title=f"{run['name']}: confusion (test acc {summary.get('final_test_acc', 0):.3f})")
        written.append(path)
    return written


def plot_confusion(confusion: list[list[int]], classes: list[str] | None, path: str | Path,
                   title: str = "") -> Path:
    """Rows are true classes, columns predictions; colour is the row fraction, text the count."""
    return save_figure(confusion_figure(confusion, classes, title), path, dpi=110)


MAX_TICK_LABEL = 40  # characters of a class name on the axes; a longer one ends in "..."
LABELLED_CLASSES = 30  # above this many classes the axes carry no names (they would overlap)
TITLE_INCHES_PER_CHAR = 0.1  # a wide character of the 12-point title


def confusion_figure(confusion: list[list[int]], classes: list[str] | None, title: str = "") -> Figure:
    """The confusion matrix figure of `plot_confusion`.

    The cells fill their axes (aspect "auto": constrained layout cannot make room for the labels of an
    axes whose aspect it does not control, and clipped the "true" label), the figure grows with the
    longest class name, so the matrix keeps its size, and a long title wraps: every label stays inside.
    """
    counts = np.asarray(confusion, dtype=np.int64)
    k = counts.shape[0]
    classes = list(classes or [str(i) for i in range(k)])
    names = [c if len(c) <= MAX_TICK_LABEL else c[:MAX_TICK_LABEL - 3] + "..." for c in classes]
    fractions = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.45 * k, 16)
    longest = max(map(len, names), default=0) if k <= LABELLED_CLASSES else 0
    extra = 0.06 * longest  # inches of 8-point text per character: the names beside and (at 45 deg) below
    fig = _figure(side + 1 + extra, side + 0.75 * extra)
    ax = fig.add_subplot()
    image = ax.imshow(fractions, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if k <= LABELLED_CLASSES:
        ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), names, fontsize=8)
        if k <= 20:
            for i in range(k):
                for j in range(k):
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center", fontsize=7,
                            color="white" if fractions[i, j] > 0.5 else "black")
    title = textwrap.fill(title, width=max(20, int((side + 1 + extra - 1) / TITLE_INCHES_PER_CHAR)))
    ax.set(xlabel="predicted", ylabel="true", title=title)
    return fig


def plot_runs(run_dirs: list[str | Path], out: str | Path) -> Path:
    """Overlay runs: loss (train dashed, test solid) and test accuracy, one colour per run. `out` must be
    an image file (.png, .pdf, .svg...) and none of the runs' files."""
    out = Path(out)
    formats = Figure().canvas.get_supported_filetypes()
    if out.suffix.lower().lstrip(".") not in formats:
        raise ClassicNetsError(f"--out {out} is not an image file name: end it in .png, .pdf or .svg")
    if out.is_dir():
        raise ClassicNetsError(f"--out {out} is a folder: pass a file name such as {out / 'comparison.png'}")
    for run_dir in run_dirs:
        folder = Path(run_dir) if Path(run_dir).is_dir() else Path(run_dir).parent
        if out.exists() and any(out.samefile(f) for f in folder.iterdir() if f.is_file()):
            raise ClassicNetsError(f"--out {out} is a file of the run {folder}: writing there would destroy it; "
                                   "pass another --out")
    if out.exists() and not (out.is_file() and _is_our_image(out)):
        raise ClassicNetsError(f"--out {out} already exists and is not an earlier plot: pass another --out, "
                               "or delete the file first")
    runs = [read_metrics(d) for d in run_dirs]
    fig = _figure(12, 4.5)
    loss_ax, acc_ax = fig.subplots(1, 2)
    for index, run in enumerate(runs):
        color = f"C{index % 10}"
        for ax, kind in ((loss_ax, "loss"), (acc_ax, "acc")):
            name = run["name"]
            _curve(ax, run["epochs"], f"train_{kind}", color=color, linestyle="--", label=f"{name} train")
            _curve(ax, run["epochs"], f"test_{kind}", color=color, label=f"{name} test")
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:  # a run without test metrics has none for this panel
            ax.legend(fontsize=8)
    save_figure(fig, out, dpi=110)
    return out


def plot_errors(groups: Sequence[str], series: Mapping[str, Sequence[tuple[float | None, float | None]]],
                path: str | Path, title: str, ylabel: str = "top-1 test error (%)") -> Path:
    """Grouped bars: one group per label in `groups`, in it one bar per series (named in the legend).

    Each series has one (mean, std) per group; the std is drawn as an error bar. A None mean draws no bar,
    a None std no error bar. When every bar is well above 0 the y axis is zoomed on the differences.
    """
    fig = _figure(max(7.0, 1.1 * len(groups) + 2), 4.4)
    ax = fig.add_subplot()
    width = 0.8 / len(series)
    lows, highs = [], []
    for i, (name, cells) in enumerate(series.items()):
        bars = [(j, m, sd) for j, (m, sd) in enumerate(cells) if m is not None]
        if not bars:
            continue
        xs = [j + (i - (len(series) - 1) / 2) * width for j, _, _ in bars]
        means, stds = [m for _, m, _ in bars], [sd or 0.0 for _, _, sd in bars]
        ax.bar(xs, means, width, yerr=stds, capsize=2, label=name)
        lows += [m - sd for m, sd in zip(means, stds, strict=True)]
        highs += [m + sd for m, sd in zip(means, stds, strict=True)]
    ax.set_xticks(range(len(groups)), list(groups))
    if lows and min(lows) > 0.5 * max(highs):  # the differences are what matter: zoom in on them
        span = max(highs) - min(lows)
        ax.set_ylim(max(0.0, min(lows) - 0.5 * span - 0.5), max(highs) + 0.3 * span + 0.5)
        ylabel += ", axis not from 0"
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if lows:
        ax.legend(fontsize=8, ncols=3)
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path, dpi=120)
