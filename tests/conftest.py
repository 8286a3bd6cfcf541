import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # Tests run in parallel workers on a 2-core machine: one intra-op thread each, and a fixed seed.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
