"""linscan inside JAX: a ``jax.custom_vjp`` function that ``jax.jit`` and ``jax.grad`` accept.

linscan runs outside JAX's tracer, so it is called through ``jax.pure_callback``: JAX hands it
host arrays (NumPy) and takes the results back. The backward pass is ``scan_backward``; JAX's
cotangents for complex numbers are the conjugates of linscan's (PyTorch's) gradients, so the
cotangent is conjugated going in and the gradients coming out (nothing happens to real ones).

Run it: ``python examples/jax_custom_vjp.py`` (compares with ``jax.grad`` of a ``lax.scan``).
"""

from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

import linscan


def _host(function, shapes, *args):
    """``function`` on NumPy copies of ``args``; results of ``shapes`` (ShapeDtypeStruct)."""

    def on_host(*values):
        return function(*(np.asarray(v) for v in values))

    return jax.pure_callback(on_host, shapes, *args, vmap_method="sequential")


@partial(jax.custom_vjp, nondiff_argnums=(3, 4))
def linear_scan(a, x, h0, axis=-1, reverse=False):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``axis``; ``a`` and ``h0`` broadcast."""
    h, _ = _forward(a, x, h0, axis, reverse)
    return h


def _result(a, x, h0):
    dtype = jnp.result_type(a, x, h0)
    return jax.ShapeDtypeStruct(jnp.broadcast_shapes(a.shape, x.shape), dtype)


def _forward(a, x, h0, axis, reverse):
    def run(a, x, h0):
        return np.asarray(linscan.scan(a, x, h0, axis=axis, reverse=reverse))

    h = _host(run, _result(a, x, h0), a, x, h0)
    return h, (a, h, h0)


def _backward(axis, reverse, saved, cotangent):
    a, h, h0 = saved

    def run(a, h, g, h0):
        grads = linscan.scan_backward(a, h, np.conj(g), h0, axis=axis, reverse=reverse)
        return tuple(np.conj(np.asarray(grad)) for grad in grads)

    shapes = tuple(jax.ShapeDtypeStruct(v.shape, v.dtype) for v in (a, h, h0))
    return _host(run, shapes, a, h, cotangent, h0)


linear_scan.defvjp(_forward, _backward)


def reference(a, x, h0, axis=-1, reverse=False):
    """The same recurrence with ``lax.scan`` (JAX differentiates it itself)."""
    a, x = jnp.broadcast_arrays(a, x)
    a, x = jnp.moveaxis(a, axis, 0), jnp.moveaxis(x, axis, 0)

    def step(state, ax):
        state = ax[0] * state + ax[1]
        return state, state

    _, h = jax.lax.scan(step, jnp.broadcast_to(h0, x.shape[1:]).astype(x.dtype), (a, x),
                        reverse=reverse)  # fmt: skip
    return jnp.moveaxis(h, 0, axis)


def compare(dtype=jnp.float64, reverse=False) -> float:
    """Largest difference between the gradients of the two under ``jax.jit``."""
    key = jax.random.PRNGKey(0)
    ka, kx, kh, kw = jax.random.split(key, 4)
    shape = (3, 50)
    a = 0.95 * jax.random.normal(ka, shape, dtype)
    x = jax.random.normal(kx, shape, dtype)
    h0 = jax.random.normal(kh, shape[:1], dtype)
    w = jax.random.normal(kw, shape, dtype)

    def loss(f):
        return lambda a, x, h0: jnp.sum(jnp.real(jnp.conj(w) * f(a, x, h0, 1, reverse)))

    ours = jax.jit(jax.grad(loss(linear_scan), argnums=(0, 1, 2)))(a, x, h0)
    theirs = jax.jit(jax.grad(loss(reference), argnums=(0, 1, 2)))(a, x, h0)
    values = float(
        jnp.max(jnp.abs(linear_scan(a, x, h0, 1, reverse) - reference(a, x, h0, 1, reverse)))
    )
    return max([values] + [float(jnp.max(jnp.abs(p - q))) for p, q in zip(ours, theirs)])


if __name__ == "__main__":
    jax.config.update("jax_enable_x64", True)
    for dtype in (jnp.float64, jnp.complex128):
        for reverse in (False, True):
            difference = compare(dtype, reverse)
            print(f"{jnp.dtype(dtype).name} reverse={reverse}: max difference {difference:.2e}")
