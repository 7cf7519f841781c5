"""Shared test setup.

Without CUDA the Triton kernels run through Triton's CPU interpreter; the variable must
be set before ``fastssim.kernels.ssim`` (the module defining the kernels) is imported.

One intra-op thread per test process (and its subprocesses) unless ``OMP_NUM_THREADS``
says otherwise: pytest-xdist already runs one worker per core, and the OpenMP threads of
two processes sharing the cores wait on each other. Measured on the 2-core machine beside one busy process: the float64
gradchecks of tests/test_reference.py took 190 s with PyTorch's default two threads and
6 s with one.
"""
import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # the user's setting, if any
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402


def correlated_pair(shape, dtype=torch.float32, seed=0, device="cpu"):
    """Two inputs in [0, 1] that are similar but not equal (SSIM well inside (0, 1))."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(shape, generator=gen, dtype=torch.float64)
    y = (0.7 * x + 0.3 * torch.rand(shape, generator=gen, dtype=torch.float64))
    return x.to(device=device, dtype=dtype), y.to(device=device, dtype=dtype)


@pytest.fixture
def pair():
    return correlated_pair


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
