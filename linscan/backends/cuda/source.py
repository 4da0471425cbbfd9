"""The CUDA sources in ``kernels_cu/``: finding them, assembling them, compiling them.

The sources ship inside the wheel as ``linscan/kernels_cu``; in a checkout (and an editable
install) they are the top-level ``kernels_cu/`` beside the package. Local headers are pasted
into the source before compiling, because CuPy's disk cache keys on the source text and would
not see a changed ``#include``d file. The list of template instantiations is generated from
the tables in ``plan``, never written by hand.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import numpy as np

from ... import _dtypes
from . import plan

FILE = "scan.cu"
#: The kernels' storage type for each dtype (kernels_cu/numeric.cuh).
C_TYPES = {
    _dtypes.FLOAT16: "linscan::half_t",
    _dtypes.BFLOAT16: "linscan::bf16_t",
    _dtypes.FLOAT32: "float",
    _dtypes.FLOAT64: "double",
    _dtypes.COMPLEX64: "linscan::Complex<float>",
    _dtypes.COMPLEX128: "linscan::Complex<double>",
}
OPTIONS = ("--std=c++17",)
_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]*"([^"]+)"[ \t]*$', re.M)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.M)


def kernel_dir() -> Path:
    """Where the ``.cu`` files are: inside the installed package, else beside it."""
    package = Path(__file__).resolve().parents[2]  # linscan/, from linscan/backends/cuda/
    for candidate in (package / "kernels_cu", package.parent / "kernels_cu"):
        if (candidate / FILE).is_file():
            return candidate
    raise FileNotFoundError(
        f"linscan's CUDA sources ({FILE}) are neither in {package / 'kernels_cu'} nor in "
        f"{package.parent / 'kernels_cu'}: the installation is incomplete"
    )


def assemble(name: str = FILE, directory: Path | None = None) -> str:
    """The source of ``name`` with its local ``#include "..."`` headers pasted in, each once."""
    directory = kernel_dir() if directory is None else directory
    seen: set = set()

    def expand(file: str) -> str:
        if file in seen:
            return ""
        seen.add(file)
        text = _PRAGMA_ONCE.sub("", (directory / file).read_text())
        return _INCLUDE.sub(lambda m: expand(m.group(1)), text)

    return expand(name)


def name_expressions(dtype, mode: int) -> list:
    """Every kernel of one dtype and mode: ``tile_scan`` per channel width, the lean
    ``row_scan`` and ``chan_scan`` (in their modes) and ``serial_scan``."""
    ctype = C_TYPES[np.dtype(dtype)]
    names = [f"linscan::tile_scan<{ctype}, {cw}, {mode}>" for cw in plan.CHANNEL_WIDTHS]
    if mode in plan.ROW_MODES:
        names.append(f"linscan::row_scan<{ctype}, {mode}>")
    if mode in plan.CHAN_MODES:
        names.append(f"linscan::chan_scan<{ctype}, {mode}>")
    return names + [f"linscan::serial_scan<{ctype}, {mode}>"]


def kernel_name(dtype, mode: int, launch: plan.Launch) -> str:
    ctype = C_TYPES[np.dtype(dtype)]
    if launch.kernel == "tile_scan":
        return f"linscan::tile_scan<{ctype}, {launch.cw}, {mode}>"
    return f"linscan::{launch.kernel}<{ctype}, {mode}>"


def all_name_expressions() -> list:
    return [n for dtype in C_TYPES for mode in plan.MODES for n in name_expressions(dtype, mode)]


class CompileError(RuntimeError):
    """linscan's CUDA sources failed to compile; the CPU backend is unaffected."""


_lock = threading.Lock()
_modules: dict = {}  # (device id, dtype, mode) -> cupy.RawModule
#: (device id, dtype, mode, kernel, channel width) -> [cupy.RawKernel, dynamic smem limit set]
_functions: dict = {}


def function(dtype, mode: int, launch: plan.Launch, device_id: int):
    """The compiled kernel for a launch; its module compiles on first use (then from CuPy's
    disk cache). Raises ``CompileError`` with the compiler's log."""
    key = (device_id, dtype, mode, launch.kernel, launch.cw)  # (no name formatted per call)
    entry = _functions.get(key)
    if entry is None:
        with _lock:
            entry = _functions.get(key)
            if entry is None:
                name = kernel_name(dtype, mode, launch)
                entry = [_module(dtype, mode, device_id).get_function(name), plan.DEFAULT_SMEM]
                _functions[key] = entry
    if launch.smem > entry[1]:
        with _lock:
            if launch.smem > entry[1]:
                entry[0].max_dynamic_shared_size_bytes = launch.smem
                entry[1] = launch.smem
    return entry[0]


def _module(dtype, mode: int, device_id: int):
    import cupy

    key = (device_id, np.dtype(dtype), mode)
    module = _modules.get(key)
    if module is None:
        try:
            module = cupy.RawModule(
                code=assemble(), options=OPTIONS, name_expressions=name_expressions(dtype, mode)
            )
            module.compile()
        except cupy.cuda.compiler.CompileException as exc:
            raise CompileError(f"compiling {kernel_dir() / FILE} failed:\n{exc}") from exc
        _modules[key] = module
    return module


def _warm_one(key) -> float:
    import time

    dtype, mode = key
    start = time.perf_counter()
    _module(np.dtype(dtype), mode, 0)
    return time.perf_counter() - start


def warm(jobs: int | None = None) -> list:
    """Compile every module for GPU 0 in ``jobs`` processes at once, filling CuPy's disk
    cache so that later first calls load instead of compiling (NVRTC takes seconds per module
    and a fresh machine has no cache). Returns ``(dtype name, mode, seconds)`` per module."""
    import concurrent.futures
    import multiprocessing
    import os

    keys = [(dtype.str, mode) for dtype in C_TYPES for mode in plan.MODES]
    jobs = jobs or min(len(keys), os.cpu_count() or 1)
    context = multiprocessing.get_context("spawn")  # CUDA does not survive a fork
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=context) as pool:
        seconds = list(pool.map(_warm_one, keys))
    return [(np.dtype(d).name, mode, t) for (d, mode), t in zip(keys, seconds)]


def compile_offline(arch: str, names=None, file: str = FILE) -> tuple:
    """Compile every instantiation of ``file`` (or ``names``; those of ``scan.cu`` by default)
    to a cubin for ``arch`` (e.g. ``"sm_90"``) with NVRTC, without a GPU. Returns ``(cubin,
    log)``; the log holds ptxas's resource report (``-v``) and any warning. Raises
    ``CompileError`` on failure."""
    import io

    from cupy.cuda import compiler

    names = all_name_expressions() if names is None else list(names)
    log = io.StringIO()
    try:
        # CuPy's public compile helpers ask the driver for the architecture; this one does not.
        program = compiler._NVRTCProgram(assemble(file), file, name_expressions=names,
                                         method="cubin")  # fmt: skip
        cubin, _ = program.compile(OPTIONS + (f"-arch={arch}", "-Xptxas=-v"), log_stream=log)
    except compiler.CompileException as exc:
        raise CompileError(f"compiling {file} for {arch} failed:\n{exc}") from exc
    return cubin, log.getvalue().replace("\x00", "")
