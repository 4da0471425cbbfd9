"""The dtypes linscan computes in, their promotion, and the dtype each one is accumulated in.

Real: float16 and bfloat16 (from ``ml_dtypes``), float32, float64. Complex: complex64 and
complex128. 16-bit inputs are stored in 16 bits and accumulated in float32; a result is returned
in the promoted dtype of the inputs. Promotion follows NumPy (float32 with complex64 gives
complex64, float32 with float64 gives float64), with two additions that NumPy leaves undefined:
float16 with bfloat16 gives float32 (neither holds the other, as in JAX), and Python numbers are
"weak" for bfloat16 as NumPy makes them for its own dtypes (a Python float leaves bfloat16 as it
is, a Python complex makes it complex64).
"""

from __future__ import annotations

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)
COMPLEX64 = np.dtype(np.complex64)
COMPLEX128 = np.dtype(np.complex128)

#: Every dtype linscan computes in, narrowest first.
SUPPORTED = (FLOAT16, BFLOAT16, FLOAT32, FLOAT64, COMPLEX64, COMPLEX128)
SIXTEEN_BIT = (FLOAT16, BFLOAT16)
TEXT = ", ".join(dtype.name for dtype in SUPPORTED)


def is_complex(dtype: np.dtype) -> bool:
    return dtype in (COMPLEX64, COMPLEX128)


def complex_of(dtype: np.dtype) -> np.dtype:
    """The complex dtype holding ``dtype`` (complex64 for 32 bits or fewer)."""
    if is_complex(dtype):
        return dtype
    return COMPLEX128 if dtype == FLOAT64 else COMPLEX64


def real_of(dtype: np.dtype) -> np.dtype:
    """The real dtype of ``dtype``'s components."""
    return {COMPLEX64: FLOAT32, COMPLEX128: FLOAT64}.get(dtype, dtype)


def accumulator(dtype: np.dtype) -> np.dtype:
    """The dtype a scan of ``dtype`` runs its arithmetic in: float32 for 16-bit floats."""
    return FLOAT32 if dtype in SIXTEEN_BIT else dtype


def finfo(dtype: np.dtype):
    """Machine limits of ``dtype``'s components (``numpy.finfo`` does not know bfloat16)."""
    return ml_dtypes.finfo(real_of(np.dtype(dtype)))


def promote(dtypes, python_complex: bool = False) -> np.dtype:
    """The result dtype of arrays of ``dtypes`` (all in ``SUPPORTED``) and, with
    ``python_complex``, a Python complex number. No arrays at all gives float64 (complex128)."""
    result = None
    for dtype in dtypes:
        if result is None or dtype == result:
            result = dtype
        elif {dtype, result} == set(SIXTEEN_BIT):
            result = FLOAT32
        else:
            result = np.promote_types(accumulator(result), accumulator(dtype))
    if result is None:
        result = FLOAT64
    return complex_of(result) if python_complex else result
