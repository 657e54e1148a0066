"""Where training events go: console lines, the progress bar, metrics.jsonl, TensorBoard."""

import json
import sys

import pytest

from classicnets.errors import ClassicNetsError
from classicnets.training import sinks

RECORD = {"epoch": 3, "step": 30, "train_loss": 0.4123, "train_acc": 0.8512, "test_loss": 0.39,
          "test_acc": 0.8721, "lr": 0.0123, "epoch_seconds": 23.14, "examples_per_sec": 2612.44}


def test_epoch_line_reads_like_the_tutorials():
    assert sinks.format_epoch(RECORD) == ("epoch 3, loss 0.412, train acc 0.851, test acc 0.872, 23.1 sec, "
                                          "2612.4 examples/sec, lr 0.0123")
    assert "test acc -," in sinks.format_epoch({**RECORD, "test_acc": None})


def test_lines_mode_prints_a_few_steps_per_epoch_and_the_epoch(capsys):
    sink = sinks.LinesSink(every_fraction=0.25)
    for done in range(1, 9):
        sink.step(done, 8, 1.0 / done)
    sink.epoch(RECORD)
    out = capsys.readouterr().out.splitlines()
    assert out == ["  step 2/8, loss 0.500", "  step 4/8, loss 0.250", "  step 6/8, loss 0.167",
                   sinks.format_epoch(RECORD)]


def test_bar_mode_keeps_the_epoch_lines_in_stdout(capsys):
    sink = sinks.BarSink()
    for done in range(1, 5):
        sink.step(done, 4, 0.5)
    sink.epoch(RECORD)
    sink.message("careful", warning=True)
    sink.close()
    captured = capsys.readouterr()
    assert sinks.format_epoch(RECORD) in captured.out
    assert "warning: careful" in captured.err


def test_jsonl_is_rewritten_from_the_history_on_start(tmp_path):
    path = tmp_path / "metrics.jsonl"
    # stale: written after the checkpoint that a resume starts from
    path.write_text('{"type": "epoch", "epoch": 9}\n')
    sink = sinks.JsonlSink(path)
    sink.start({"record": {"name": "r"}, "history": [{**RECORD, "epoch": 1}]})
    sink.epoch({**RECORD, "epoch": 2, "test_loss": float("nan")})
    sink.end({"record": {"stopped": "completed"}})
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(r["type"], r.get("epoch")) for r in records] == [("start", None), ("epoch", 1), ("epoch", 2),
                                                              ("summary", None)]
    assert records[2]["test_loss"] is None  # NaN is not JSON


def test_console_mode_follows_the_terminal(tmp_path):
    assert isinstance(sinks.make_sinks(tmp_path, "auto", "off", is_tty=True)[0], sinks.BarSink)
    lines = sinks.make_sinks(tmp_path, "auto", "off", is_tty=False)[0]
    assert type(lines) is sinks.LinesSink and lines.every_fraction == 0.25


def test_tensorboard_on_without_the_package_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # as if not installed: `import` raises ImportError
    assert not sinks.tensorboard_available()
    assert not any(isinstance(s, sinks.TensorBoardSink) for s in sinks.make_sinks(tmp_path, "none", "auto"))
    with pytest.raises(ClassicNetsError, match="pip install tensorboard"):
        sinks.make_sinks(tmp_path, "none", "on")


def test_tensorboard_events_are_written(tmp_path):
    assert sinks.tensorboard_available()  # a dev install has it: pip install -e '.[dev]'
    sink = sinks.TensorBoardSink(tmp_path / "tb")
    sink.epoch(RECORD)
    sink.close()
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_tensorboard_auto_adds_the_sink_when_the_package_is_there(tmp_path):
    made = sinks.make_sinks(tmp_path, "none", "auto")
    assert any(isinstance(s, sinks.TensorBoardSink) for s in made)
    for sink in made:
        sink.close()
