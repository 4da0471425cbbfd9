"""linscan inside JAX through ``linscan.jax``: ``scan`` is a JAX primitive with a JVP rule and a
transpose rule (the recurrence is linear in ``x`` and ``h0``, and its tangent is another
recurrence), so ``jax.jit``, ``jax.grad``, ``jax.jvp`` and ``jax.vmap`` work on it as on
JAX's own operations; XLA's buffers are handed to linscan in place
(``jax.experimental.buffer_callback``).

Run it: ``python examples/jax_transforms.py`` (compares with ``jax.grad`` of a ``lax.scan``).
"""

import jax
import jax.numpy as jnp

import linscan.jax as lj


def linear_scan(a, x, h0, axis=-1, reverse=False):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``axis``; ``a`` and ``h0`` broadcast."""
    return lj.scan(a, x, h0, axis=axis, reverse=reverse)


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
