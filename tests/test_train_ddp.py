"""Two processes under torchrun (gloo, CPU) train like one process with the same global batch.

The loaders split each global batch between the ranks, so the union of the ranks' batches is the batch
a single process sees; DDP averages the gradients. Without batch norm, dropout or augmentation the two
runs therefore compute the same steps, up to the order of float additions.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import classicnets
from classicnets.training import checkpoint
from test_train import PLAIN, cli_args

pytestmark = pytest.mark.realdata

# LeNet has neither batch norm nor dropout, and learns within two epochs.
SETTINGS = {**{k: v for k, v in PLAIN.items() if k != "width"}, "model": "lenet", "size": 28, "epochs": 2,
            "lr": 0.02, "checkpoint_every": 5}


def _torchrun() -> list[str]:
    script = Path(sys.executable).with_name("torchrun")
    return [str(script)] if script.exists() else [sys.executable, "-m", "torch.distributed.run"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("true") is None, reason="needs a POSIX system")
def test_two_gloo_processes_follow_the_single_process_loss_curve(tmp_path):
    ddp_dir = tmp_path / "ddp"
    command = [*_torchrun(), "--standalone", "--nproc_per_node", "2", "-m", "classicnets", "train",
               *cli_args(SETTINGS), "--run-dir", str(ddp_dir)]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, [line for line in proc.stderr.splitlines() if "error" in line][:3]
    assert proc.stdout.count("epoch 1,") == 1  # only rank 0 prints
    assert "2 x cpu" in proc.stdout

    single = classicnets.train(**SETTINGS, run_dir=str(tmp_path / "single"))
    ddp = checkpoint.load(ddp_dir / "last.pt")
    assert ddp["progress"]["world_size"] == 2 and ddp["progress"]["micro_batch"] == 16
    for d, s in zip(ddp["metrics"], single.history, strict=True):
        assert d["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
        assert d["test_loss"] == pytest.approx(s["test_loss"], rel=5e-3)
        assert d["test_acc"] == pytest.approx(s["test_acc"], abs=2 / 256)
    assert single.history[-1]["train_loss"] < single.history[0]["train_loss"]  # it did train
    ranks_rng = ddp["rng"]
    assert len(ranks_rng) == 2 and len(ddp["loader"]) == 2
