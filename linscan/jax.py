"""linscan as JAX operations: ``scan`` and ``final_state`` are JAX primitives, so that they
run under ``jax.jit``, ``jax.grad``, ``jax.vjp``, ``jax.jvp``, ``jax.jacfwd``, ``jax.jacrev``
and ``jax.vmap``:

    import linscan.jax as lj
    h = lj.scan(a, x, h0, axis=1)
    s = lj.final_state(a, x, h0, axis=1)

Importing this module imports JAX; linscan itself never does (``pip install 'linscan[jax]'``).
Arguments are those of :func:`linscan.scan`: decays ``a`` an array or a Python number
broadcast against ``x``; ``h0`` an array, a number or ``None``; ``resets`` a boolean array or
``None``; ``axis``, ``reverse``. Results follow linscan's dtype rule (NumPy's promotion of the
arrays' dtypes).

Differentiation: a linear recurrence is linear in ``x`` and ``h0``, and its tangent is another
one: ``dh = scan(a, dx + da * h[t-1], dh0)`` (nothing where a step resets). So each primitive
has a JVP rule made of itself and a transpose rule (in ``x`` and ``h0``) that is the same
recurrence walked the other way with the decays one step on: JAX derives reverse mode from
the two, every order of it, and forward mode is the JVP itself. Batching (``vmap``) folds the
batch into the outer dimensions of one call.

Execution: ``jax.experimental.buffer_callback`` hands linscan XLA's own buffers (results are
written in place, no copies; on a GPU, CuPy views of device memory on XLA's stream: no host
round trip). Where a JAX lacks it, ``jax.pure_callback`` is used instead (``CALLBACK`` says
which), which copies through host arrays.
"""

from functools import lru_cache, partial

import jax
import jax.numpy as jnp
import numpy as np
from jax.interpreters import ad, batching, mlir

from . import _api, _dtypes

try:
    from jax.extend.core import Primitive
except ImportError:  # older JAX
    from jax.core import Primitive

try:
    from jax.experimental.buffer_callback import buffer_callback as _buffer_callback

    CALLBACK = "buffer_callback"
except ImportError:
    _buffer_callback = None
    CALLBACK = "pure_callback"

__all__ = ["scan", "final_state", "CALLBACK"]


def scan(a, x, h0=None, *, axis: int = -1, reverse: bool = False, resets=None):
    """:func:`linscan.scan` as a JAX operation (see the module's docstring)."""
    return _bind(_scan_p, a, x, h0, axis, reverse, resets)


def final_state(a, x, h0=None, *, axis: int = -1, reverse: bool = False, resets=None):
    """:func:`linscan.final_state` as a JAX operation."""
    return _bind(_final_p, a, x, h0, axis, reverse, resets)


def _bind(primitive, a, x, h0, axis, reverse, resets):
    """The primitive's operands, checked as linscan checks them (before any callback runs):
    arrays of floating or complex dtypes; Python numbers (and JAX's weakly typed scalars) in
    the dtype of the arrays among ``a``, ``x``, ``h0``, as linscan gives them."""
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse must be a bool, got {type(reverse).__name__}")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
        raise TypeError(f"axis must be an int, got {type(axis).__name__}")
    named = {"a": a, "x": x, "h0": h0}
    numbers = {n for n, v in named.items() if v is not None and _is_number(v)}
    arrays = {n: jnp.asarray(v) for n, v in named.items() if v is not None and n not in numbers}
    for name, value in arrays.items():
        if np.dtype(value.dtype) not in _dtypes.SUPPORTED:
            raise TypeError(f"{name} must have a floating-point or complex dtype "
                            f"({_dtypes.TEXT}), got {value.dtype}")  # fmt: skip
    base = _dtypes.promote([np.dtype(v.dtype) for v in arrays.values()])
    for name in numbers:
        value = named[name]
        complex_ = jnp.iscomplexobj(value) and base.kind != "c"
        arrays[name] = jnp.asarray(value, _dtypes.complex_of(base) if complex_ else base)
    a, x = arrays["a"], arrays["x"]
    shape = jnp.broadcast_shapes(a.shape, x.shape)
    axis = _axis(int(axis), len(shape))
    state = shape[:axis] + shape[axis + 1 :]
    dtype = _result_dtype(a, x, arrays.get("h0"))
    # No h0: zeros (the same recurrence; an array keeps the primitive's operands fixed).
    h0 = arrays.get("h0", None)
    if h0 is None:
        h0 = jnp.zeros(state, dtype)
    elif not _broadcasts(h0.shape, state):
        raise ValueError(f"h0 must broadcast to shape {state} (the result's shape {shape} "
                         f"without axis {axis}), got shape {h0.shape}")  # fmt: skip
    flags = ()
    if resets is not None:
        resets = jnp.asarray(resets)
        if resets.dtype != bool:
            raise TypeError(f"resets must be a boolean array, got dtype {resets.dtype}")
        if not _broadcasts(resets.shape, shape):
            raise ValueError(f"resets must broadcast to the result's shape {shape}, got "
                             f"shape {resets.shape}")  # fmt: skip
        flags = (resets,)
    return primitive.bind(a, x, h0, *flags, axis=axis, reverse=reverse)


def _broadcasts(shape, to) -> bool:
    try:
        return jnp.broadcast_shapes(shape, to) == to
    except ValueError:
        return False


def _is_number(value) -> bool:
    """A Python number (not a bool) or a weakly typed JAX scalar (one, or a tracer of one)."""
    if type(value) in (int, float, complex):
        return True
    return bool(getattr(value, "weak_type", False)) and jnp.ndim(value) == 0


def _axis(axis: int, rank: int) -> int:
    if not -rank <= axis < rank:
        raise np.exceptions.AxisError(axis, rank)
    return axis % rank


def _result_dtype(*arrays):
    return _dtypes.promote([np.dtype(v.dtype) for v in arrays if v is not None])


# --- the primitives ----------------------------------------------------------------------------

_scan_p = Primitive("linscan_scan")
_final_p = Primitive("linscan_final_state")


def _shapes(a, x, h0):
    shape = jnp.broadcast_shapes(a.shape, x.shape)
    return shape, _result_dtype(a, x, h0)


def _scan_abstract(a, x, h0, *flags, axis, reverse):
    shape, dtype = _shapes(a, x, h0)
    return jax.core.ShapedArray(shape, dtype)


def _final_abstract(a, x, h0, *flags, axis, reverse):
    shape, dtype = _shapes(a, x, h0)
    return jax.core.ShapedArray(shape[:axis] + shape[axis + 1 :], dtype)


_scan_p.def_abstract_eval(_scan_abstract)
_final_p.def_abstract_eval(_final_abstract)


def _callback(function, result, a, x, h0, flags, axis, reverse):
    """``function`` (linscan.scan or final_state) on the operands' buffers, into a new
    buffer of ``result`` (a ShapedArray)."""
    options = dict(axis=axis, reverse=reverse)
    struct = jax.ShapeDtypeStruct(result.shape, result.dtype)
    if _buffer_callback is None:

        def on_host(a, x, h0, *flags):
            resets = np.asarray(flags[0]) if flags else None
            return function(*(np.asarray(v) for v in (a, x, h0)), resets=resets, **options)

        return jax.pure_callback(on_host, struct, a, x, h0, *flags, vmap_method="sequential")

    def in_place(ctx, out, a, x, h0, *flags):
        kind, device = (int(v) for v in out.__dlpack_device__())
        if kind == 1:  # DLPack's CPU: NumPy views
            resets = np.asarray(flags[0]) if flags else None
            function(*map(np.asarray, (a, x, h0)), resets=resets, out=np.asarray(out), **options)
            return
        import cupy  # a GPU: CuPy views (__cuda_array_interface__), on XLA's stream

        from .backends.cuda.backend import external_stream

        with cupy.cuda.Device(device), external_stream(int(ctx.stream), device):
            resets = cupy.asarray(flags[0]) if flags else None
            function(*map(cupy.asarray, (a, x, h0)), resets=resets, out=cupy.asarray(out),
                     **options)  # fmt: skip

    return _buffer_callback(in_place, struct)(a, x, h0, *flags)


def _final_state_out(a, x, h0, *, resets, axis, reverse, out=None):
    """linscan.final_state, into ``out`` where given (it has no ``out`` of its own)."""
    state = _api.final_state(a, x, h0, axis=axis, reverse=reverse, resets=resets)
    if out is None:
        return state
    out[...] = state


def _lower(function, abstract):
    """The lowering of a primitive: ``function`` (linscan's) called back into a buffer of the
    primitive's ``abstract`` result."""

    def run(a, x, h0, *flags, axis, reverse):
        result = abstract(a, x, h0, *flags, axis=axis, reverse=reverse)
        return _callback(function, result, a, x, h0, flags, axis, reverse)

    return mlir.lower_fun(run, multiple_results=False)


mlir.register_lowering(_scan_p, _lower(_api.scan, _scan_abstract))
mlir.register_lowering(_final_p, _lower(_final_state_out, _final_abstract))


def _impl(primitive, function):
    def impl(*args, axis, reverse):
        if jax.config.jax_disable_jit:  # (jit would call bind again, and so this)
            a, x, h0, *flags = (np.asarray(v) for v in args)
            out = function(a, x, h0, resets=flags[0] if flags else None, axis=axis,
                           reverse=reverse)  # fmt: skip
            return jnp.asarray(out)
        return _jitted(primitive, axis, reverse)(*args)

    return impl


@lru_cache(maxsize=None)
def _jitted(primitive, axis: int, reverse: bool):
    """The primitive outside any trace: compiled once per (primitive, axis, direction); jit
    keeps its own cache per shape and dtype."""
    return jax.jit(partial(primitive.bind, axis=axis, reverse=reverse))


_scan_p.def_impl(_impl(_scan_p, _api.scan))
_final_p.def_impl(_impl(_final_p, _final_state_out))


# --- differentiation ---------------------------------------------------------------------------


def _before(h, h0, axis, reverse):
    """The state before each step: ``h`` moved one step on along the walk, ``h0`` first."""
    first = jnp.expand_dims(jnp.broadcast_to(h0, h.shape[:axis] + h.shape[axis + 1 :]), axis)
    n = h.shape[axis]
    if n == 0:
        return h
    if reverse:
        return jnp.concatenate([jax.lax.slice_in_dim(h, 1, n, axis=axis), first], axis=axis)
    return jnp.concatenate([first, jax.lax.slice_in_dim(h, 0, n - 1, axis=axis)], axis=axis)


def _tangent_input(states, h0, flags, da, dx, axis, reverse, dtype, shape):
    """``dx + da * h[t-1]`` (zero where a step resets), the input of the tangent recurrence;
    ``states()`` gives the forward states."""
    u = jnp.zeros(shape, dtype)
    if type(dx) is not ad.Zero:
        u = u + dx.astype(dtype)
    if type(da) is not ad.Zero:
        before = _before(states(), h0, axis, reverse)
        if flags:  # (masked before the product too: its transpose meets no inf * 0 there)
            zero = jnp.zeros((), before.dtype)
            before = jnp.where(flags[0], zero, before)
            u = u + jnp.where(flags[0], zero, da * before)
        else:
            u = u + da * before
    return u


def _jvp(primitive):
    def jvp(primals, tangents, *, axis, reverse):
        a, x, h0, *flags = primals
        da, dx, dh0 = tangents[:3]
        out = primitive.bind(a, x, h0, *flags, axis=axis, reverse=reverse)
        shape, dtype = _shapes(a, x, h0)

        def states():  # (scan's own result; final_state's need computing)
            if primitive is _scan_p:
                return out
            return _scan_p.bind(a, x, h0, *flags, axis=axis, reverse=reverse)

        u = _tangent_input(states, h0, flags, da, dx, axis, reverse, dtype, shape)
        dh0 = jnp.zeros(h0.shape, dtype) if type(dh0) is ad.Zero else dh0.astype(dtype)
        return out, primitive.bind(a, u, dh0, *flags, axis=axis, reverse=reverse)

    return jvp


ad.primitive_jvps[_scan_p] = _jvp(_scan_p)
ad.primitive_jvps[_final_p] = _jvp(_final_p)


def _step_on(value, axis, n, reverse, fill):
    """``value`` (time along ``axis``, of length ``n`` or 1) one step on along the walk (the
    value of the step after each), ``fill`` at the walk's last step."""
    if value.shape[axis] == 1:  # the same every step: only the last step changes
        value = jnp.broadcast_to(value, value.shape[:axis] + (n,) + value.shape[axis + 1 :])
    last = jnp.full_like(jax.lax.slice_in_dim(value, 0, 1, axis=axis), fill)
    if reverse:
        return jnp.concatenate([last, jax.lax.slice_in_dim(value, 0, n - 1, axis=axis)], axis=axis)
    return jnp.concatenate([jax.lax.slice_in_dim(value, 1, n, axis=axis), last], axis=axis)


def _transpose_scan(ct, a, x, h0, flags, axis, reverse):
    """The cotangents of ``x`` and ``h0`` for the cotangent ``ct`` of the states: ``g[t] =
    ct[t] + a[t+1] g[t+1]`` (nothing passes back across a reset), walked the other way;
    ``x`` gets ``g``, ``h0`` gets ``a[first] g[first]``."""
    shape = ct.shape
    n = shape[axis]
    rank = len(shape)
    if n == 0:  # no steps: nothing reaches x, and h0 reaches no state
        return (_sum_to(ct, x.aval.shape, x.aval.dtype) if ad.is_undefined_primal(x) else None,
                jnp.zeros(h0.aval.shape, h0.aval.dtype) if ad.is_undefined_primal(h0)
                else None)  # fmt: skip
    a_full = jnp.reshape(a, (1,) * (rank - jnp.ndim(a)) + jnp.shape(a))
    a_on = _step_on(a_full, axis, n, reverse, 0)
    # The walk's last step takes nothing from after it; resets stop g one step before them.
    r = flags[0] if flags else jnp.zeros((1,) * rank, bool)
    r = jnp.reshape(r, (1,) * (rank - r.ndim) + r.shape)
    r_on = _step_on(r, axis, n, reverse, True)
    zero_state = jnp.zeros(shape[:axis] + shape[axis + 1 :], ct.dtype)
    g = _scan_p.bind(a_on, ct, zero_state, r_on, axis=axis, reverse=not reverse)
    ct_x = ct_h0 = None
    if ad.is_undefined_primal(x):
        ct_x = _sum_to(g, x.aval.shape, x.aval.dtype)
    if ad.is_undefined_primal(h0):
        first = 0 if not reverse else n - 1
        g0 = jax.lax.index_in_dim(g, first, axis=axis, keepdims=False)
        a0 = jax.lax.index_in_dim(jnp.broadcast_to(a_full, shape), first, axis=axis,
                                  keepdims=False)  # fmt: skip
        into = a0 * g0
        if flags:
            r0 = jax.lax.index_in_dim(jnp.broadcast_to(r, shape), first, axis=axis,
                                      keepdims=False)  # fmt: skip
            into = jnp.where(r0, jnp.zeros((), into.dtype), into)
        h0_aval = h0.aval
        ct_h0 = _sum_to(into, h0_aval.shape, h0_aval.dtype)
    return ct_x, ct_h0


def _sum_to(value, shape, dtype):
    """``value`` summed over the dimensions broadcasting gave it, to ``shape``, in ``dtype``
    (the real part for a real input)."""
    extra = value.ndim - len(shape)
    if extra:
        value = value.sum(axis=tuple(range(extra)))
    kept = tuple(k for k, n in enumerate(shape) if n == 1 and value.shape[k] != 1)
    if kept:
        value = value.sum(axis=kept, keepdims=True)
    if np.dtype(dtype).kind != "c" and jnp.iscomplexobj(value):
        value = value.real
    return value.astype(dtype)


def _scan_transpose(ct, a, x, h0, *flags, axis, reverse):
    if ad.is_undefined_primal(a):
        raise ValueError("linscan.jax: the decays enter nonlinearly; no transpose in a")
    if type(ct) is ad.Zero:
        ct = jnp.zeros(ct.aval.shape, ct.aval.dtype)
    ct_x, ct_h0 = _transpose_scan(ct, a, x, h0, flags, axis, reverse)
    return [None, ct_x, ct_h0] + [None] * len(flags)


def _final_transpose(ct, a, x, h0, *flags, axis, reverse):
    """final_state is the last step of scan: its cotangent enters there."""
    if ad.is_undefined_primal(a):
        raise ValueError("linscan.jax: the decays enter nonlinearly; no transpose in a")
    shapes = [v.aval.shape if ad.is_undefined_primal(v) else jnp.shape(v) for v in (a, x)]
    shape = jnp.broadcast_shapes(*shapes)
    ct = jnp.zeros(ct.aval.shape, ct.aval.dtype) if type(ct) is ad.Zero else ct
    n = shape[axis]
    if n == 0:  # no steps: the final state is h0 itself
        return [None, _sum_to(jnp.zeros(shape, ct.dtype), x.aval.shape, x.aval.dtype)
                if ad.is_undefined_primal(x) else None,
                _sum_to(ct, h0.aval.shape, h0.aval.dtype) if ad.is_undefined_primal(h0)
                else None] + [None] * len(flags)  # fmt: skip
    full = jnp.zeros(shape, ct.dtype)
    full = jax.lax.dynamic_update_index_in_dim(full, jnp.expand_dims(ct, axis),
                                               0 if reverse else n - 1, axis)  # fmt: skip
    ct_x, ct_h0 = _transpose_scan(full, a, x, h0, flags, axis, reverse)
    return [None, ct_x, ct_h0] + [None] * len(flags)


ad.primitive_transposes[_scan_p] = _scan_transpose
ad.primitive_transposes[_final_p] = _final_transpose


# --- vmap: the batch folded into the outer dimensions ------------------------------------------


def _batch(primitive):
    def rule(args, dims, *, axis, reverse):
        a, x, h0, *flags = args
        size = next(arg.shape[d] for arg, d in zip(args, dims) if d is not _NOT_MAPPED)
        rank = max(_logical_ndim(a, dims[0]), _logical_ndim(x, dims[1]))

        def front(value, dim, rank):
            if dim is _NOT_MAPPED:  # broadcasts over the batch as it is
                return jnp.reshape(value, (1,) * (rank - value.ndim) + value.shape)
            value = jnp.moveaxis(value, dim, 0)
            return jnp.reshape(value, value.shape[:1] + (1,) * (rank + 1 - value.ndim)
                               + value.shape[1:])  # fmt: skip

        a_b, x_b = front(a, dims[0], rank), front(x, dims[1], rank)
        if dims[1] is _NOT_MAPPED:  # the result carries the batch even so
            x_b = jnp.broadcast_to(x_b, (size,) + x_b.shape)
        h0_b = front(h0, dims[2], rank - 1)
        flags_b = [front(f, d, rank) for f, d in zip(flags, dims[3:])]
        out = primitive.bind(a_b, x_b, h0_b, *flags_b, axis=axis + 1, reverse=reverse)
        return out, 0

    return rule


_NOT_MAPPED = getattr(batching, "not_mapped", None)  # (None in current JAX)


def _logical_ndim(value, dim):
    return value.ndim - (dim is not _NOT_MAPPED)


batching.primitive_batchers[_scan_p] = _batch(_scan_p)
batching.primitive_batchers[_final_p] = _batch(_final_p)
