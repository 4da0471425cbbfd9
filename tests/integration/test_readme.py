"""The README's code runs as printed."""

import re
from pathlib import Path

import numpy as np
import pytest

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_python_blocks_run(index):
    code = BLOCKS[index]
    if "import torch" in code:
        pytest.importorskip("torch")
    if "import dask" in code:
        pytest.importorskip("dask.array")
    if "from scipy" in code or "import scipy" in code:
        pytest.importorskip("scipy")
    if "import pandas" in code:
        pytest.importorskip("pandas")
    namespace = {"my_scan": _my_scan}  # the reader's code that the testing pattern tests
    exec(compile(code, f"README.md block {index}", "exec"), namespace)
    for name, test in namespace.items():  # the pattern's tests run, and pass on right code
        if name.startswith("test_") and callable(test):
            test()


def _my_scan(a, x):
    """A reader's recurrence as the README's testing pattern has it: float32 arrays of one
    shape, the last axis."""
    assert a.dtype == x.dtype == np.float32 and a.shape == x.shape
    h = np.empty_like(x)
    state = np.zeros(x.shape[:-1], np.float32)
    for t in range(x.shape[-1]):
        state = a[..., t] * state + x[..., t]
        h[..., t] = state
    return h
