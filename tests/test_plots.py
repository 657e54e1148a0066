"""Plots drawn from metrics.jsonl: one run's curves and confusion matrix, several runs overlaid."""

import json

import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg

from classicnets.cli import main
from classicnets.errors import ClassicNetsError
from classicnets.plots import confusion_figure, plot_run, plot_runs, read_metrics

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _write_run(folder, name, accuracies, classes=("T-shirt/top", "Trouser", "Pullover")):
    folder.mkdir(parents=True)
    k = len(classes)
    records = [{"type": "start", "name": name, "classes": list(classes)}]
    for epoch, acc in enumerate(accuracies, 1):
        records.append({"type": "epoch", "epoch": epoch, "step": 10 * epoch, "train_loss": 1.0 / epoch,
                        "train_acc": acc - 0.02, "test_loss": 1.1 / epoch, "test_acc": acc, "lr": 0.1})
    confusion = [[8 if i == j else 1 for j in range(k)] for i in range(k)]
    records.append({"type": "summary", "final_test_acc": accuracies[-1], "confusion": confusion,
                    "classes": list(classes)})
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return folder


def _is_png(path):
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_one_run_gives_loss_accuracy_and_confusion_pngs(tmp_path):
    run = _write_run(tmp_path / "a", "a", [0.5, 0.7, 0.8])
    written = plot_run(run)
    assert sorted(p.name for p in written) == ["accuracy.png", "confusion.png", "loss.png"]
    assert all(_is_png(p) for p in written)


def test_a_repeated_epoch_record_counts_once(tmp_path):
    run = _write_run(tmp_path / "a", "a", [0.5, 0.7])
    with open(run / "metrics.jsonl", "a") as f:
        record = {"type": "epoch", "epoch": 2, "train_loss": 0.3, "train_acc": 0.9, "test_acc": 0.91}
        f.write(json.dumps(record) + "\n")
    epochs = read_metrics(run)["epochs"]
    assert [r["epoch"] for r in epochs] == [1, 2] and epochs[1]["test_acc"] == 0.91


def test_overlay_of_several_runs_is_one_png(tmp_path):
    a = _write_run(tmp_path / "a", "fast", [0.8, 0.9])
    b = _write_run(tmp_path / "b", "d2l", [0.3, 0.6, 0.7])
    out = plot_runs([a, b], tmp_path / "cmp.png")
    assert _is_png(out)


def test_cli_plot_redraws_one_run_and_overlays_several(tmp_path, capsys):
    a = _write_run(tmp_path / "a", "fast", [0.8, 0.9])
    b = _write_run(tmp_path / "b", "d2l", [0.3, 0.6])
    assert main(["plot", str(a)]) == 0
    assert "loss.png" in capsys.readouterr().out and _is_png(a / "loss.png")
    assert main(["plot", str(a), str(b), "--out", str(tmp_path / "both.png")]) == 0
    assert _is_png(tmp_path / "both.png")


def test_plotting_a_folder_without_metrics_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(ClassicNetsError, match="metrics.jsonl does not exist"):
        plot_run(tmp_path)
    assert main(["plot", str(tmp_path)]) == 2
    assert "pass a run dir written by `classicnets train`" in capsys.readouterr().err


@pytest.mark.parametrize("k", [2, 10, 30])
@pytest.mark.parametrize("names", ["short", "long"])
def test_confusion_plot_keeps_every_label_inside_the_figure(k, names):
    """The "true" label was clipped at the left edge (10 Fashion-MNIST classes, or 2 with long names)."""
    classes = [f"c{i}" if names == "short" else f"class {i} with a rather long folder name, like this" for i in range(k)]
    confusion = [[(i * 7 + j * 3) % 11 for j in range(k)] for i in range(k)]
    fig = confusion_figure(confusion, classes, title="vgg11_bn-fashion-mnist-fast-20260101-120000: confusion "
                                                     "(test acc 0.936)")
    FigureCanvasAgg(fig)
    fig.set_dpi(110)  # as plot_confusion saves it
    renderer = fig.canvas.get_renderer()
    fig.draw(renderer)
    ax = fig.axes[0]
    inside = fig.bbox.padded(0.5)
    for label in (ax.yaxis.label, ax.xaxis.label, ax.title, *ax.get_xticklabels(), *ax.get_yticklabels()):
        box = label.get_window_extent(renderer)
        assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), (label.get_text(), box)
    assert ax.yaxis.label.get_text() == "true" and len(ax.get_yticklabels()) == k
    assert ax.bbox.width > 300 and ax.bbox.height > 300  # the matrix keeps its room
