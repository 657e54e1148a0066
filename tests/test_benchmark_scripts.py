"""The benchmark scripts stay runnable: each one's smoke mode runs end to end and prints its table."""

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.realdata
def test_threads_under_load_smoke_runs_quiet_and_loaded_trials_and_stops_its_busy_loops():
    proc = subprocess.run([sys.executable, "benchmarks/threads_under_load.py", "--smoke", "--settings", "adaptive"],
                          cwd=REPO, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "round 1 adaptive  busy 0:" in proc.stdout and "round 1 adaptive  busy 1:" in proc.stdout
    assert "| adaptive |" in proc.stdout
    assert not [p for p in Path("/proc").glob("[0-9]*/cmdline") if b"while os.getppid" in _read(p)]


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError:  # the process ended meanwhile
        return b""


def test_threads_under_load_refuses_an_unknown_setting():
    proc = subprocess.run([sys.executable, "benchmarks/threads_under_load.py", "--settings", "three"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2 and "unknown setting 'three'" in proc.stderr
