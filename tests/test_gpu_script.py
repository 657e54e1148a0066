"""benchmarks/gpu.sh: the GPU figures' script stays runnable between GPU sessions (its --dry-run runs every
step, tiny, on the CPU, and writes nothing into the repository)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu.sh"
STEPS = ("vgg16_eager", "tutorials", "to_93", "fp16", "torchrun")


def test_an_unknown_argument_is_a_usage_error():
    proc = subprocess.run(["bash", str(SCRIPT), "--fast"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage: bash benchmarks/gpu.sh [--dry-run]" in proc.stderr


@pytest.mark.slow
@pytest.mark.realdata
def test_the_dry_run_runs_every_step_on_the_cpu_and_leaves_benchmarks_md_alone():
    before = (REPO / "BENCHMARKS.md").read_bytes()
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run"], check=False, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for step in STEPS:
        assert f"== {step}: " in proc.stderr and f"- {step}: " in proc.stdout
    assert "train img/s" in proc.stdout and "completed: best test acc" in proc.stdout
    assert "(cpu)" in proc.stdout and (REPO / "BENCHMARKS.md").read_bytes() == before
