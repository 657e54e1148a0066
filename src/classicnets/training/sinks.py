"""Where training events go: the console (a line per epoch, a bar on a terminal), metrics.jsonl,
TensorBoard. The trainer emits events; each sink decides what to show. Only rank 0 has sinks.

Events: start(info), step(done, total, loss), epoch(record), message(text, warning=False), end(summary).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from classicnets.errors import ClassicNetsError


def format_epoch(r: dict[str, Any]) -> str:
    """The tutorials' per-epoch line, plus the learning rate."""
    test = f"{r['test_acc']:.3f}" if r.get("test_acc") is not None else "-"
    return (f"epoch {r['epoch']}, loss {r['train_loss']:.3f}, train acc {r['train_acc']:.3f}, "
            f"test acc {test}, {r['epoch_seconds']:.1f} sec, {r['examples_per_sec']:.1f} examples/sec, "
            f"lr {r['lr']:.3g}")


class Sink:
    def start(self, info: dict[str, Any]) -> None: ...
    def step(self, done: int, total: int, loss: float | None) -> None: ...
    def epoch(self, record: dict[str, Any]) -> None: ...
    def message(self, text: str, warning: bool = False) -> None: ...
    def end(self, summary: dict[str, Any]) -> None: ...
    def close(self) -> None: ...


class LinesSink(Sink):
    """Plain lines: one per epoch, and with `every_fraction` a few per epoch for long epochs in logs."""

    def __init__(self, stream=None, every_fraction: float | None = None):
        self.stream = stream
        self.every_fraction = every_fraction

    def _print(self, text: str, warning: bool = False) -> None:
        stream = self.stream or (sys.stderr if warning else sys.stdout)
        print(text, file=stream, flush=True)

    def start(self, info):
        self._print(info["banner"])

    def step(self, done, total, loss):
        if self.every_fraction is None or done >= total:
            return
        if done % max(1, round(total * self.every_fraction)) == 0:
            shown = f", loss {loss:.3f}" if loss is not None else ""
            self._print(f"  step {done}/{total}{shown}")

    def epoch(self, record):
        self._print(format_epoch(record))

    def message(self, text, warning=False):
        self._print(f"warning: {text}" if warning else text, warning)

    def end(self, summary):
        self._print(summary["banner"])


class BarSink(LinesSink):
    """A tqdm bar per epoch on a terminal; the epoch lines are printed above it."""

    def __init__(self):
        super().__init__()
        self.bar = None

    def _print(self, text, warning=False):
        tqdm.write(text, file=sys.stderr if warning else sys.stdout)

    def step(self, done, total, loss):
        if self.bar is None or done == 1 or self.bar.total != total:
            self._close_bar()
            self.bar = tqdm(total=total, leave=False, dynamic_ncols=True, unit="step", file=sys.stderr)
            self.bar.n = done - 1
        self.bar.update(done - self.bar.n)
        if loss is not None:
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def _close_bar(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch(self, record):
        self._close_bar()
        super().epoch(record)

    def end(self, summary):
        self._close_bar()
        super().end(summary)

    def close(self):
        self._close_bar()


class JsonlSink(Sink):
    """metrics.jsonl: a start record, one record per epoch, a summary. Rewritten from the checkpoint's
    history on resume, so a kill between the checkpoint and the write never leaves gaps or repeats."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _write(self, records: list[dict], mode: str) -> None:
        with open(self.path, mode) as f:
            f.writelines(json.dumps(_jsonable(r)) + "\n" for r in records)

    def start(self, info):
        epochs = [{"type": "epoch", **r} for r in info["history"]]
        self._write([{"type": "start", **info["record"]}, *epochs], "w")

    def epoch(self, record):
        self._write([{"type": "epoch", **record}], "a")

    def end(self, summary):
        self._write([{"type": "summary", **summary["record"]}], "a")


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


class TensorBoardSink(Sink):
    """Scalars per epoch under the run dir's tb/ folder (TensorBoard must be installed)."""

    def __init__(self, folder: Path):
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(folder))

    def epoch(self, r):
        step = r["step"]
        for key in ("train_loss", "train_acc", "test_loss", "test_acc", "test_top5", "lr",
                    "examples_per_sec"):
            if r.get(key) is not None:
                group, _, name = key.partition("_")
                self.writer.add_scalar(f"{group}/{name}", r[key], step)
        self.writer.flush()

    def close(self):
        self.writer.close()


def tensorboard_available() -> bool:
    try:
        import tensorboard  # noqa: F401
        from torch.utils.tensorboard import SummaryWriter  # noqa: F401
    except ImportError:
        return False
    return True


def make_sinks(run_dir: Path, progress: str, tensorboard: str, is_tty: bool | None = None) -> list[Sink]:
    if is_tty is None:
        is_tty = sys.stdout.isatty()
    mode = ("bar" if is_tty else "lines") if progress == "auto" else progress
    console = {"bar": BarSink, "lines": lambda: LinesSink(every_fraction=0.25), "none": LinesSink}[mode]()
    sinks: list[Sink] = [console, JsonlSink(run_dir / "metrics.jsonl")]
    if tensorboard == "on" and not tensorboard_available():
        raise ClassicNetsError("tensorboard=on but the tensorboard package is missing: "
                               "pip install tensorboard")
    if tensorboard != "off" and tensorboard_available():
        sinks.append(TensorBoardSink(run_dir / "tb"))
    return sinks
