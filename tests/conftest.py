"""Shared test settings.

Tests use tiny nets; on 2 cores the second intra-op thread costs more in synchronisation than it
gains (measured ~100x slower for tiny convs on a busy machine), so the whole suite runs on one thread.
"""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
