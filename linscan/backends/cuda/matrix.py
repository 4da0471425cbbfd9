"""Matrix recurrences on CuPy arrays (``linscan.matscan``): the kernels of
``kernels_cu/matrix.cu``, planned and launched here.

Opt-in (``LINSCAN_GPU_MATRIX=1``): the kernels have run only on the host, through
``tests/cuda/test_cuda_matrix.py``, which builds ``matrix.cu`` for the CPU and runs this
module's ``run`` with a launcher that calls the host build: the plan, the launches and the
kernels' arithmetic are the ones a GPU would run.

A call cuts each lane's steps into ``C`` chunks (``chunks``) and runs, in order on the
current stream: the maps of all chunks but the last (``mat_reduce``; for a matrix that is
the same at every step the host raises it to the chunk's length by repeated squaring
instead, and the kernel skips the products); their scan into each chunk's entering state,
itself a matrix recurrence over the chunks, run by this same module (so a long lane's
``C - 1`` maps are cut into chunks in turn, rather than composed one after the other by one
thread); and the walk of every chunk from its entering state (``mat_walk``;
``mat_back_walk`` for the backward pass, whose carry's maps are reduced and scanned the same
way). One chunk (``method="sequential"``, or lanes enough to fill the GPU) is the walk
alone.
"""

from __future__ import annotations

import threading

import numpy as np

from ... import _dtypes
from . import source

FILE = "matrix.cu"
#: Threads per block of every matrix kernel (``MAT_THREADS`` in ``matrix.cu``).
THREADS = 128
#: (chunk, lane) pairs a call aims for: enough threads to fill a large GPU (132 SMs of an
#: H100 at 512 threads each is 67584); lanes beyond it run unchunked.
TARGET_THREADS = 1 << 16
#: The shortest chunk: below it a chunk's map costs more than its walk saves.
MIN_CHUNK = 64
C_TYPES = {
    _dtypes.FLOAT32: "float",
    _dtypes.FLOAT64: "double",
    _dtypes.COMPLEX64: "linscan::Complex<float>",
    _dtypes.COMPLEX128: "linscan::Complex<double>",
}
#: The kernels of a module: ``mat_reduce`` with and without the matrices' products.
KERNELS = ("mat_reduce_product", "mat_reduce", "mat_walk", "mat_back_walk")


def chunks(lanes: int, T: int, method: str) -> tuple:
    """``(C, L)``: the chunks each lane's ``T`` steps are cut into and their length (the last
    may be shorter; none is empty). One chunk for ``"sequential"``; otherwise as many as it
    takes to give ``TARGET_THREADS`` (chunk, lane) pairs, of at least ``MIN_CHUNK`` steps."""
    want = 1 if method == "sequential" else -(-TARGET_THREADS // lanes)
    C = max(1, min(want, T // MIN_CHUNK))
    L = -(-T // C)
    return -(-T // L), L


def name(kernel: str, dtype, d: int) -> str:
    """The instantiation a kernel of ``KERNELS`` names (``mat_reduce`` takes PRODUCT)."""
    ctype = C_TYPES[np.dtype(dtype)]
    if kernel.startswith("mat_reduce"):
        return f"linscan::mat_reduce<{ctype}, {d}, {str(kernel.endswith('product')).lower()}>"
    return f"linscan::{kernel}<{ctype}, {d}>"


def all_name_expressions() -> list:
    return [name(k, dtype, d) for dtype in C_TYPES for d in range(1, 9) for k in KERNELS]


def _entering(A5, v4, s, down: bool, method: str, launch, xp, back: bool = False):
    """``(layout, starts, bad)``: the kernels' layout scalars, the ``(O, C, I, d)`` states
    entering each chunk (chunk 0's is ``s``) and the lanes to walk whole (``bad``, int32).

    The chunks' maps ``s -> M s + b`` (``mat_reduce``, in the wide type) are a matrix
    recurrence of their own with the chunks as its steps, ``(O, C - 1, I)``: this module's
    ``run`` scans it from ``s`` (in chunks of chunks, if there are many), and the states it
    leaves, rounded once, enter the chunks after the first. A lane whose states are not all
    finite once rounded (an inf or NaN in a map, or an overflow) is walked whole instead, as
    the loop walks it. With ``back`` the maps are the backward carry's, ``v4`` being
    ``grad_h``."""
    O, T, I, d = v4.shape
    dtype = v4.dtype
    lanes = O * I
    C, L = chunks(lanes, T, method)
    strides = [st // A5.itemsize for st in A5.strides]
    layout = [np.int64(v) for v in (O, T, I, L, C, *strides)] + [np.int32(down)]
    starts = xp.empty((O, C, I, d), dtype)
    starts[:, 0] = s
    if C == 1:
        return layout, starts, xp.zeros(lanes, np.int32)
    wide = np.promote_types(dtype, np.float64)
    count = C - 1  # every chunk but the last has L steps
    constant = T == 1 or A5.strides[1] == 0
    b = xp.empty((O, count, I, d), wide)
    if constant:  # one map for every chunk: a view with the chunks' stride 0
        A0 = xp.ascontiguousarray(A5[:, 0], dtype=wide)
        power = xp.linalg.matrix_power(xp.conj(xp.swapaxes(A0, -1, -2)) if back else A0, int(L))
        M = xp.broadcast_to(power[:, None], (O, count, I, d, d))
    else:
        M = xp.empty((O, count, I, d, d), wide)
    reduce = "mat_reduce" if constant else "mat_reduce_product"
    launch(reduce, dtype, d, lanes * count, A5, v4, *layout, np.int64(count), np.int32(back), M,
           b)  # fmt: skip
    after = xp.empty_like(b)
    run(M, b, after, xp.array(s, dtype=wide), False, method, True, launch, xp)
    with np.errstate(over="ignore", invalid="ignore"):
        starts[:, 1:] = after  # rounded once
    finite = xp.isfinite(starts).all(axis=(1, 3))  # (O, I)
    return layout, starts, (~finite).reshape(lanes).astype(np.int32)


def run(A5, x4, h4, s, reverse: bool, method: str, write: bool, launch, xp) -> None:
    """Scan ``(O, T, I, d)`` arrays: ``A5`` ``(O, T, I, d, d)`` (strided), ``x4`` and ``h4``
    C-contiguous (``h4`` unused without ``write``), ``s`` the ``(O, I, d)`` entering states,
    left holding the final ones. ``launch(kernel, dtype, d, threads, *args)`` runs one kernel
    (``_launch`` on a GPU); ``xp`` is the arrays' module."""
    if not s.flags.c_contiguous:  # (a broadcast h0 copied in its own order, say)
        state = xp.ascontiguousarray(s)
        run(A5, x4, h4, state, reverse, method, write, launch, xp)
        s[...] = state
        return
    O, T, I, d = x4.shape
    layout, starts, bad = _entering(A5, x4, s, reverse, method, launch, xp)
    out = h4 if write else s  # (never written without `write`)
    launch("mat_walk", x4.dtype, d, O * I * int(layout[4]), A5, x4, *layout, starts, bad, out, s,
           np.int32(write))  # fmt: skip


def run_backward(A5, h4, gh4, hb, gx4, gA, reverse: bool, method: str, launch, xp):
    """The backward pass of ``run``'s scan (walking against it): fills ``gx4`` (as ``h4``)
    and ``gA`` (``(O, T, I, d, d)``), both C-contiguous, and returns the gradient for the
    entering state, ``(O, I, d)``; ``hb`` holds the entering states."""
    O, T, I, d = h4.shape
    hb = xp.ascontiguousarray(hb)
    carry = xp.zeros((O, I, d), h4.dtype)
    layout, starts, bad = _entering(A5, gh4, carry, not reverse, method, launch, xp, back=True)
    launch("mat_back_walk", h4.dtype, d, O * I * int(layout[4]), A5, h4, gh4, hb, *layout,
           starts, bad, gx4, gA, carry)  # fmt: skip
    return carry


_lock = threading.Lock()
_modules: dict = {}  # (device id, dtype, d) -> cupy.RawModule


def _function(kernel: str, dtype, d: int):
    """The compiled kernel; its module (the kernels of one dtype and state size)
    compiles on first use, then loads from CuPy's disk cache."""
    import cupy

    key = (cupy.cuda.runtime.getDevice(), np.dtype(dtype), d)
    module = _modules.get(key)
    if module is None:
        with _lock:
            module = _modules.get(key)
            if module is None:
                names = [name(k, dtype, d) for k in KERNELS]
                try:
                    module = cupy.RawModule(code=source.assemble(FILE), options=source.OPTIONS,
                                            name_expressions=names)  # fmt: skip
                    module.compile()
                except cupy.cuda.compiler.CompileException as exc:
                    raise source.CompileError(
                        f"compiling {source.kernel_dir() / FILE} failed:\n{exc}"
                    ) from exc
                _modules[key] = module
    return module.get_function(name(kernel, dtype, d))


def _launch(kernel: str, dtype, d: int, threads: int, *args) -> None:
    """One kernel on the current stream, a thread per ``threads``."""
    if threads:
        _function(kernel, dtype, d)((-(-threads // THREADS),), (THREADS,), args)


def scan(A5, x4, h4, s, reverse: bool, method: str, write: bool = True) -> None:
    """``linscan.backends.cpu.matrix.scan`` on CuPy arrays (``s`` is updated in place)."""
    import cupy

    run(A5, x4, h4, s, reverse, method, write, _launch, cupy)


def backward(A5, h4, gh4, hb, gx4, gA, reverse: bool, method: str):
    """``linscan.backends.cpu.matrix.backward`` on CuPy arrays."""
    import cupy

    return run_backward(A5, h4, gh4, hb, gx4, gA, reverse, method, _launch, cupy)
