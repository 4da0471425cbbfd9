"""Build CUDA sources for the host (``host_cuda.h``: each GPU thread a fiber) into a shared
library the tests call through ctypes (``test_cuda_host.py``, ``test_cuda_matrix.py``)."""

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def build(folder: Path, wrapper: str, kernels: str) -> ctypes.CDLL:
    """``tests/cuda/<wrapper>`` (C++ with a ``// @KERNELS@`` line) with ``kernels`` (assembled
    CUDA source) pasted there below ``host_cuda.h``, compiled in ``folder`` and loaded; the
    test is skipped without a C++ compiler (C++20)."""
    compiler = shutil.which("g++") or shutil.which("clang++")
    if compiler is None:
        pytest.skip("no C++ compiler to build the kernels for the host")
    text = (HERE / wrapper).read_text()
    text = text.replace("// @KERNELS@", '#include "host_cuda.h"\n' + kernels)
    code = folder / wrapper
    code.write_text(text)
    built = code.with_suffix(".so")
    done = subprocess.run(
        [compiler, "-std=c++20", "-O1", "-pthread", "-shared", "-fPIC", "-I", str(HERE),
         "-o", str(built), str(code)],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-5000:]
    return ctypes.CDLL(str(built))
