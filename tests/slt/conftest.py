import pytest

from tests.helpers import one_torch_thread


@pytest.fixture(autouse=True)
def single_torch_thread():
    """The models here are tiny: intra-op threading only adds overhead and, on a shared machine,
    oversubscription (we measured 10x slowdowns). Restored after each test."""
    with one_torch_thread():
        yield
