"""Shared test settings and markers.

Tests use tiny nets; on 2 cores the second intra-op thread costs more in synchronisation than it
gains (measured ~100x slower for tiny convs on a busy machine), so the whole suite runs on one thread.

Markers (pyproject.toml): `slow` for tests of more than about a second on 2 cores, so that
`pytest -m "not slow"` is the quick subset to run while working; `realdata` for tests that read the real
Fashion-MNIST files of Debian's dataset-fashion-mnist, skipped with the fix when they are missing.

No test touches the network or the user's own torch hub cache: TORCH_HOME points at an empty folder of the
session and CLASSICNETS_OFFLINE=1 (tests of the download path turn it off and download from file:// URLs).
"""

import os
from pathlib import Path

import pytest
import torch

FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def pytest_collection_modifyitems(config, items):
    if FASHION_MNIST.is_file():
        return
    skip = pytest.mark.skip(reason="needs real Fashion-MNIST: apt-get install dataset-fashion-mnist "
                                   "(or bash scripts/setup.sh as root)")
    for item in items:
        if "realdata" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True, scope="session")
def _private_offline_hub(tmp_path_factory):
    saved = {k: os.environ.get(k) for k in ("TORCH_HOME", "CLASSICNETS_OFFLINE")}
    os.environ["TORCH_HOME"] = str(tmp_path_factory.mktemp("torch_home"))
    os.environ["CLASSICNETS_OFFLINE"] = "1"
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
