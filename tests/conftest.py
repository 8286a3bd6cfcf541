import pytest
import torch

import config_schema  # noqa: F401  the config groups' schemas, for the tests that compose configs directly


@pytest.fixture(autouse=True)
def _one_thread_and_seed():
    # Tests run in parallel workers on a 2-core machine: one intra-op thread each, and a fixed seed.
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
