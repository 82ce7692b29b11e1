import pytest
import torch


@pytest.fixture(autouse=True)
def single_torch_thread():
    """The models here are tiny: intra-op threading only adds overhead and, on a shared machine,
    oversubscription (we measured 10x slowdowns). Restored after each test."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
