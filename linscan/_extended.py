"""Products of decays that neither underflow nor overflow, as ``mantissa * 2**exponent``.

A run of a million decays of 0.999 has a product of about 2**-1443, below every float; a
product kept as a float64 (complex128) mantissa of magnitude in [0.5, 1) and an int64
exponent stays the loop's product however long the run. ``linscan.dask`` composes chunks with
such products, and a backend's ``summary`` (``linscan.backends.base``) returns one.

The CPU backend computes its products in its Numba kernels. This module holds the arithmetic
of such numbers on NumPy or CuPy arrays, and :func:`composed_summary`, a backend's summary
made of its own passes and array operations (the GPU backend's, until a kernel computes it in
one pass). Everything here takes NumPy and CuPy arrays alike.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _dtypes


class Summary(NamedTuple):
    """What a run of steps does to the state entering it, lane by lane (``(O, I)`` arrays on
    the canonical layout): ``h -> mantissa * 2**exponent * h + state`` (``state`` alone where
    ``reset``).

    ``mantissa`` and ``exponent`` are the product of the decays walked (:func:`split`);
    ``state`` is the loop's result from a zero state, in the accumulator dtype; ``reset``
    says where a step reset (``None``: the call has no resets). Where a lane resets, its
    product means nothing."""

    mantissa: object
    exponent: object
    state: object
    reset: object = None


def split(value, xp):
    """``value`` as ``(mantissa, exponent)``: ``value == mantissa * 2**exponent``, the mantissa
    float64 (complex128 for complex values) of magnitude in [0.5, 1) (its larger component
    for a complex value); 0, inf and NaN are their own mantissa with exponent 0."""
    wide = np.promote_types(value.dtype, np.float64)
    value = value.astype(wide, copy=False)
    if wide.kind != "c":
        mantissa, exponent = xp.frexp(value)
        return mantissa, exponent.astype(np.int64)
    _, exponent = xp.frexp(xp.maximum(abs(value.real), abs(value.imag)))
    exponent = exponent.astype(np.int64)
    return times_power_of_two(value, -exponent, xp), exponent


def times_power_of_two(value, exponent, xp):
    """``value * 2**exponent`` without an intermediate overflow or underflow (complex values
    component by component)."""
    with np.errstate(over="ignore"):
        if value.dtype.kind != "c":
            return xp.ldexp(value, exponent)
        real, imag = xp.ldexp(value.real, exponent), xp.ldexp(value.imag, exponent)
        return real + 1j * imag


def multiply(first, second, xp):
    """The product of two ``(mantissa, exponent)`` pairs, normalized."""
    with np.errstate(invalid="ignore", over="ignore"):
        mantissa, exponent = split(first[0] * second[0], xp)
    return mantissa, exponent + first[1] + second[1]


def power(base, steps: int, xp):
    """``base ** steps`` (an array of decays) as ``(mantissa, exponent)``, by squaring."""
    base = split(base, xp)
    total = (xp.ones_like(base[0]), xp.zeros_like(base[1]))
    while steps:
        if steps & 1:
            total = multiply(total, base, xp)
        base, steps = multiply(base, base, xp), steps >> 1
    return total


#: Mantissas of magnitude at least 0.5 (at most sqrt(2) for complex ones): a product of this
#: many stays a normal float64.
MANTISSAS_PER_PRODUCT = 1000


def product_by_arrays(a, xp, *, axis):
    """The product along ``axis`` of the decays ``a`` as ``(mantissa, exponent)``, by array
    operations: the exponents summed, the mantissas multiplied in groups that cannot leave
    the float64 range."""
    mantissas, exponents = split(a, xp)
    total = (xp.ones_like(mantissas.take(0, axis=axis)), exponents.sum(axis=axis))
    for lo in range(0, a.shape[axis], MANTISSAS_PER_PRODUCT):
        stop = min(lo + MANTISSAS_PER_PRODUCT, a.shape[axis])
        block = mantissas.take(xp.arange(lo, stop), axis=axis)
        with np.errstate(invalid="ignore", over="ignore"):
            total = multiply(total, (block.prod(axis=axis), 0), xp)
    return total


#: Binary orders of magnitude kept clear of the ends of the accumulator's normal range (see
#: :func:`plain_product_is_exact`).
PRODUCT_MARGIN = 8


def plain_product_is_exact(a, xp, *, axis, acc):
    """Whether a plain product of the decays ``a`` in ``acc``, grouped as a scan chooses
    (it composes runs of consecutive steps in an order of its own), is the loop's product to
    rounding: whether the product of every run of consecutive decays is a normal number
    (below the smallest normal one a product has lost digits, although the end of the whole
    product may be normal again: 1e-160 * 1e-160 * 1e300). That holds where the running sums
    of the decays' logarithms, from 0, span less than the normal range, less a margin (for
    rounding, and for a complex product's smaller component). A zero, infinite or NaN decay
    makes it false."""
    if not a.shape[axis]:
        return True
    info = _dtypes.finfo(acc)
    span = min(-int(info.minexp), int(info.maxexp)) - PRODUCT_MARGIN
    with np.errstate(divide="ignore", invalid="ignore"):
        sums = xp.cumsum(xp.log2(abs(a).astype(np.float64)), axis=axis)
        highest = xp.maximum(sums.max(axis=axis), 0)
        lowest = xp.minimum(sums.min(axis=axis), 0)
        return bool(xp.all(highest - lowest < span))  # NaN (inf - inf) is not


def composed_summary(backend, a, x, reverse: bool, method: str, resets=None, back=False):
    """``backend.summary`` (the contract of ``linscan.backends.base``) from the backend's own
    passes and array operations: the state is one pass over ``a`` and ``x`` (``final_state``,
    or with ``back`` a ``backward`` pass that also writes gradients nobody reads), the
    product of the decays another (the plain product of a ``final_state`` where
    :func:`plain_product_is_exact`, else :func:`product_by_arrays`; a decay given once for
    every step by :func:`power`), the resets a third."""
    xp = backend.xp
    mantissa, exponent = _product(backend, a, x.shape, x.dtype, method)
    if back:  # grad_h0 of a backward pass from a zero h0 (grad_h stands in for h: only
        O, _, I = x.shape  # grad_a, which nobody reads here, depends on h)
        grad_x = backend.empty(x.shape, x.dtype)
        grad_a = backend.empty(x.shape, _dtypes.accumulator(x.dtype))
        zero = xp.zeros((O, I), x.dtype)
        state = backend.backward(a, x, x, zero, grad_x, grad_a, reverse, method, True, resets)
        mantissa = mantissa.conj()
    else:
        state = backend.final_state(a, x, None, reverse, method, resets)
    reset = None if resets is None else resets.any(axis=1)
    return Summary(mantissa, exponent, state, reset)


def _product(backend, a, shape, dtype, method):
    """The product over time of the canonical decays ``a`` of a run of ``shape`` (a decay
    given by value, or read through strides that repeat it every step, counts once per step)
    as ``(mantissa, exponent)`` (see :func:`composed_summary`)."""
    xp = backend.xp
    O, T, I = shape
    acc = _dtypes.accumulator(dtype)
    if not isinstance(a, xp.ndarray):  # a decay given by value
        return power(xp.full((O, I), a, acc), T, xp)
    if a.strides[1] == 0:  # one decay for every step
        return power(a[:, 0, :].astype(acc), T, xp)
    if plain_product_is_exact(a, xp, axis=1, acc=acc):
        ones = xp.ones((O, I), dtype)
        plain = backend.final_state(a, xp.zeros(shape, dtype), ones, False, method)
        return split(plain, xp)
    return product_by_arrays(a.astype(acc, copy=False), xp, axis=1)
