"""linscan.jax: scan and final_state as JAX primitives, under jit, grad, jvp, jacfwd, jacrev,
hessian and vmap, against the serial oracle, a ``jax.lax.scan`` loop (whose derivatives JAX
computes itself) and ``jax.lax.associative_scan``. CPU builds of JAX in CI."""

import numpy as np
import pytest

from linscan import reference

jax = pytest.importorskip("jax")
lj = pytest.importorskip("linscan.jax")
jnp = jax.numpy


@pytest.fixture(autouse=True)
def x64():
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", before)


#: (a shape or None for a Python number, x shape, h0 shape or None, axis), as in
#: test_torch_ops: decays per element, per step, per channel, a number; h0 full, broadcast,
#: absent; time first, last, in the middle.
LAYOUTS = [
    ((3, 7), (3, 7), (3,), -1),
    ((7, 1), (7, 4), (4,), 0),
    ((4,), (7, 4), (1,), 0),
    (None, (2, 6, 3), (2, 3), 1),
    ((2, 6, 3), (2, 6, 3), None, 1),
]


def draw(layout, dtype=np.float64, resets=False, seed=0):
    a_shape, x_shape, h0_shape, axis = layout
    rng = np.random.default_rng(seed)

    def values(shape, low=None):
        v = rng.normal(size=shape) if low is None else rng.uniform(low, 1.0, shape)
        if np.dtype(dtype).kind == "c":
            v = v * np.exp(1j * rng.uniform(-0.2, 0.2, shape))
        return v.astype(dtype)

    a = 0.8 if a_shape is None else values(a_shape, 0.5)
    x = values(x_shape)
    h0 = None if h0_shape is None else values(h0_shape)
    r = rng.random(x_shape) < 0.2 if resets else None
    return a, x, h0, r, axis


def loop(a, x, h0, axis, reverse=False, resets=None):
    """The recurrence as a jax.lax.scan over time: JAX differentiates it itself."""
    shape = jnp.broadcast_shapes(jnp.shape(a), x.shape)
    axis %= len(shape)
    a, x = jnp.broadcast_to(a, shape), jnp.broadcast_to(x, shape)
    r = jnp.zeros(shape, bool) if resets is None else jnp.broadcast_to(resets, shape)
    state = shape[:axis] + shape[axis + 1 :]
    h = jnp.zeros(state, jnp.result_type(a, x)) if h0 is None else jnp.broadcast_to(h0, state)

    def step(h, t):
        at, xt, rt = t
        h = jnp.where(rt, xt, at * h + xt)
        return h, h

    moved = [jnp.moveaxis(v, axis, 0) for v in (a, x, r)]
    _, hs = jax.lax.scan(step, h, moved, reverse=reverse)
    return jnp.moveaxis(hs, 0, axis)


def close(got, want, tol=1e-10):
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=tol, atol=tol)


@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scan_and_final_state_match_the_oracle_eager_and_jitted(layout, resets):
    a, x, h0, r, axis = draw(layout, resets=resets)
    for reverse in (False, True):
        kw = dict(axis=axis, reverse=reverse, resets=r)
        want = reference.scan(a, x, h0, **kw)
        last = np.take(want, 0 if reverse else -1, axis=axis)
        close(lj.scan(a, x, h0, **kw), want)
        close(lj.final_state(a, x, h0, **kw), last)
        jitted = jax.jit(lambda a, x: (lj.scan(a, x, h0, **kw), lj.final_state(a, x, h0, **kw)))
        h, s = jitted(jnp.asarray(a), x)
        close(h, want)
        close(s, last)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.complex64])
def test_dtypes_follow_linscan(dtype):
    a, x, h0, r, axis = draw(LAYOUTS[0], dtype)
    h = lj.scan(a, x, h0)
    assert h.dtype == np.dtype(dtype)
    want = reference.scan(a, x, h0)
    tol = 2e-3 if dtype == np.float16 else 1e-5
    np.testing.assert_allclose(np.asarray(h).astype(want.dtype), want, rtol=tol, atol=tol)
    real = np.ones((2, 3), np.float32)
    assert lj.scan(0.5, real).dtype == np.float32
    assert lj.scan(0.5 + 0.1j, real).dtype == np.complex64


def test_against_jax_associative_scan():
    a, x, h0, r, axis = draw(((4, 300),) * 2 + (None, -1))

    def combine(left, right):
        return right[0] * left[0], right[0] * left[1] + right[1]

    want = jax.lax.associative_scan(combine, (jnp.asarray(a), jnp.asarray(x)), axis=1)[1]
    close(lj.scan(a, x), want, 1e-9)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradients_match_jax_through_a_loop(layout, resets, dtype):
    """Reverse mode (grad of a real loss, every differentiable input) and forward mode (jvp)
    equal JAX's own derivatives of the same recurrence written as a lax.scan: JAX's
    convention for complex numbers included."""
    a, x, h0, r, axis = draw(layout, dtype, resets)
    a = jnp.asarray(a)
    h0 = None if h0 is None else jnp.asarray(h0)
    for reverse in (False, True):
        kw = dict(axis=axis, reverse=reverse, resets=r)

        def ours(a, x, h0):
            h = lj.scan(a, x, h0, **kw)
            return jnp.sum(jnp.abs(h) ** 2) + jnp.sum(jnp.abs(lj.final_state(a, x, h0, **kw)))

        def theirs(a, x, h0):
            h = loop(a, x, h0, axis, reverse, r)
            last = jnp.take(h, 0 if reverse else -1, axis=axis)
            return jnp.sum(jnp.abs(h) ** 2) + jnp.sum(jnp.abs(last))

        args = (a, jnp.asarray(x), h0 if h0 is not None else jnp.zeros(()))
        if h0 is None:
            ours_, theirs_ = (lambda f: lambda a, x, _: f(a, x, None))(ours), (
                lambda f: lambda a, x, _: f(a, x, None))(theirs)  # fmt: skip
        else:
            ours_, theirs_ = ours, theirs
        got = jax.grad(ours_, argnums=(0, 1, 2))(*args)
        want = jax.grad(theirs_, argnums=(0, 1, 2))(*args)
        for g, w in zip(got, want):
            close(g, w, 1e-9)
        tangents = tuple(jnp.ones_like(v) for v in args)
        _, got_t = jax.jvp(ours_, args, tangents)
        _, want_t = jax.jvp(theirs_, args, tangents)
        close(got_t, want_t, 1e-9)


def test_jacobians_and_the_hessian():
    """jacfwd, jacrev and hessian (second order: the JVP and transpose rules compose)."""
    a, x, h0, r, axis = draw(LAYOUTS[0])
    a, x, h0 = map(jnp.asarray, (a, x, h0))
    f = lambda a: lj.scan(a, x, h0)  # noqa: E731
    g = lambda a: loop(a, x, h0, -1)  # noqa: E731
    close(jax.jacfwd(f)(a), jax.jacfwd(g)(a))
    close(jax.jacrev(f)(a), jax.jacfwd(g)(a))
    loss = lambda f: lambda a: jnp.sum(f(a) ** 3)  # noqa: E731
    close(jax.hessian(loss(f))(a), jax.hessian(loss(g))(a), 1e-9)


@pytest.mark.parametrize("in_axes", [(0, 0, 0), (None, 1, 0), (0, None, None), (None, None, 0)])
def test_vmap_is_one_call_and_matches_a_loop(in_axes):
    B, T, C = 4, 6, 3
    rng = np.random.default_rng(1)
    a = rng.uniform(0.5, 1, (B, T, C) if in_axes[0] == 0 else (T, C))
    x = rng.normal(size={None: (T, C), 0: (B, T, C), 1: (T, B, C)}[in_axes[1]])
    h0 = rng.normal(size=(B, C) if in_axes[2] == 0 else (C,))

    def pick(v, d, b):
        return v if d is None else np.take(v, b, axis=d)

    for reverse in (False, True):
        f = lambda a, x, h0: lj.scan(a, x, h0, axis=0, reverse=reverse)  # noqa: E731
        got = jax.vmap(f, in_axes=in_axes)(a, x, h0)
        want = np.stack([reference.scan(*(pick(v, d, b) for v, d in zip((a, x, h0), in_axes)),
                                        axis=0, reverse=reverse) for b in range(B)])  # fmt: skip
        close(got, want)
        jaxpr = str(jax.make_jaxpr(jax.vmap(f, in_axes=in_axes))(a, x, h0))
        assert jaxpr.count("linscan_scan") == 1  # the batch folded into one call
        s = jax.vmap(lambda a, x, h0: lj.final_state(a, x, h0, axis=0, reverse=reverse),
                     in_axes=in_axes)(a, x, h0)  # fmt: skip
        close(s, want[:, 0 if reverse else -1])
    grads = jax.vmap(jax.grad(lambda a, x, h0: jnp.sum(lj.scan(a, x, h0, axis=0) ** 2),
                              argnums=(0, 1, 2)), in_axes=in_axes)(a, x, h0)  # fmt: skip
    for b in range(B):
        one = [pick(v, d, b) for v, d in zip((a, x, h0), in_axes)]
        want = jax.grad(lambda a, x, h0: jnp.sum(loop(a, x, h0, 0) ** 2), argnums=(0, 1, 2))(
            *map(jnp.asarray, one))
        for g, w in zip(grads, want):
            close(g[b], w)


def test_bad_arguments():
    x = np.ones((3, 4))
    with pytest.raises(np.exceptions.AxisError):
        lj.scan(0.5, x, axis=2)
    with pytest.raises(ValueError):
        lj.scan(np.ones(5), x)


def test_plain_linscan_on_tracers_names_linscan_jax():
    import linscan

    with pytest.raises(TypeError, match="x is a JAX tracer.*linscan.jax"):
        jax.jit(lambda x: linscan.scan(0.5, x))(jnp.ones(3))


def test_pure_callback_where_buffer_callback_is_missing(monkeypatch):
    """A JAX without jax.experimental.buffer_callback: the same results and gradients through
    jax.pure_callback (a shape no earlier test compiled, so nothing is taken from a cache)."""
    monkeypatch.setattr(lj, "_buffer_callback", None)
    lj._jitted.cache_clear()
    a, x, h0, r, axis = draw(((5, 11), (5, 11), (5,), -1), resets=True, seed=7)
    kw = dict(axis=axis, reverse=True, resets=r)
    close(jax.jit(lambda a, x: lj.scan(a, x, h0, **kw))(jnp.asarray(a), x),
          reference.scan(a, x, h0, **kw))  # fmt: skip
    got = jax.grad(lambda a: jnp.sum(lj.final_state(a, x, h0, **kw) ** 2))(jnp.asarray(a))
    want = jax.grad(lambda a: jnp.sum(loop(a, x, h0, axis, True, r)[:, 0] ** 2))(jnp.asarray(a))
    close(got, want)
    jaxpr = str(jax.make_jaxpr(lambda x: lj.scan(a, x))(x))
    assert "linscan_scan" in jaxpr


@pytest.mark.gpu
def test_on_a_gpu_results_stay_on_the_device():
    """JAX on a GPU: linscan works on XLA's device buffers (CuPy views, XLA's stream), so a
    jitted call and its gradient make no transfer to the host (JAX's transfer guard would
    raise), and agree with the oracle."""
    from linscan._dispatch import gpu_status

    gpus = [d for d in jax.devices() if d.platform == "gpu"]
    if not gpus or not gpu_status()[0]:
        pytest.skip("needs a GPU that JAX and CuPy can use")
    a, x, h0, r, axis = draw(((4, 50_000),) * 2 + ((4,), -1), resets=True)
    a, x, h0, r = (jax.device_put(v, gpus[0]) for v in (a, x, h0, r))
    f = jax.jit(lambda a, x, h0: lj.scan(a, x, h0, resets=r))
    g = jax.jit(jax.grad(lambda a, x, h0: jnp.sum(lj.scan(a, x, h0, resets=r) ** 2)))
    f(a, x, h0).block_until_ready(), g(a, x, h0).block_until_ready()  # compiled outside
    with jax.transfer_guard("disallow"):
        h = f(a, x, h0).block_until_ready()
        grad_a = g(a, x, h0).block_until_ready()
    host = [np.asarray(v) for v in (a, x, h0, r)]
    close(h, reference.scan(*host[:3], resets=host[3]), 1e-8)
    want = jax.grad(lambda a: jnp.sum(loop(a, host[1], host[2], -1, False, host[3]) ** 2))(host[0])
    close(grad_a, want, 1e-8)


def test_python_numbers_take_the_dtype_of_all_the_arrays():
    """As linscan: a Python number (or a weakly typed JAX scalar, as a traced number is)
    takes the arrays' promoted dtype, not x's alone, and is not rounded to x's first."""
    x32 = np.ones((4, 2), np.float32)
    h = lj.scan(0.1, x32, np.zeros(2), axis=0)  # the float64 h0 makes it float64
    assert h.dtype == np.float64
    close(h, reference.scan(0.1, x32, np.zeros(2), axis=0), 1e-15)
    assert lj.scan(np.full(4, 0.5, np.float32), 1.0).dtype == np.float32
    assert lj.scan(jnp.asarray(0.5), x32).dtype == np.float32
    _, tangent = jax.jvp(lambda a: lj.scan(a, x32), (0.5,), (1.0,))
    assert tangent.dtype == np.float32


def test_bad_arguments_are_named_before_any_callback():
    x = np.ones((3, 4))
    for kwargs, error, words in [
        (dict(h0=np.ones(4)), ValueError, "h0 must broadcast to shape"),
        (dict(resets=np.ones((2, 4), bool)), ValueError, "resets must broadcast"),
        (dict(resets=np.zeros((3, 4))), TypeError, "resets must be a boolean array"),
        (dict(reverse=1), TypeError, "reverse must be a bool"),
        (dict(axis=1.0), TypeError, "axis must be an int"),
    ]:
        with pytest.raises(error, match=words):
            lj.scan(0.5, x, **kwargs)
    with pytest.raises(TypeError, match="x must have a floating-point or complex dtype"):
        lj.scan(0.5, np.ones(3, np.int32))
    with pytest.raises(TypeError, match="a must have a floating-point or complex dtype"):
        jax.jit(lambda a: lj.scan(a, x))(np.ones((3, 4), bool))


def test_an_empty_time_axis_differentiates():
    """No steps: the final state is h0 (its derivative the identity), scan's result is empty;
    every derivative exists."""
    a = x = jnp.ones((0, 2))
    h0 = jnp.array([3.0, 4.0])
    close(jax.grad(lambda h0: lj.final_state(a, x, h0, axis=0).sum())(h0), [1.0, 1.0])
    for f in (lj.scan, lj.final_state):
        for reverse in (False, True):
            g = jax.grad(lambda a, x, h0: jnp.sum(f(a, x, h0, axis=0, reverse=reverse)),
                         argnums=(0, 1))(a, x, h0)  # fmt: skip
            assert [v.shape for v in g] == [(0, 2), (0, 2)]
            _, t = jax.jvp(lambda a: f(a, x, h0, axis=0, reverse=reverse), (a,), (a,))
            assert t.shape == ((0, 2) if f is lj.scan else (2,))


def test_disable_jit_runs_the_call_directly():
    a, x, h0, r, axis = draw(LAYOUTS[0], resets=True)
    with jax.disable_jit():
        h = lj.scan(a, x, h0, resets=r)
        s = lj.final_state(a, x, h0, resets=r)
        g = jax.grad(lambda x: jnp.sum(lj.scan(a, x, h0, resets=r)))(jnp.asarray(x))
    close(h, reference.scan(a, x, h0, resets=r))
    close(s, reference.scan(a, x, h0, resets=r)[:, -1])
    close(g, jax.grad(lambda x: jnp.sum(loop(a, x, h0, -1, False, r)))(jnp.asarray(x)))


def test_no_nan_gradient_at_a_reset_after_an_infinite_state():
    """A reset drops the infinite state before it: the decay there gets gradient 0 (as
    linscan.scan_backward says), not 0 * inf."""
    x = jnp.array([1.0, jnp.inf, 1.0, 1.0])
    r = np.array([False, False, True, False])
    g = jax.grad(lambda a: jnp.sum(lj.scan(a, x, resets=r)[2:]))(jnp.full(4, 0.5))
    np.testing.assert_array_equal(np.asarray(g)[2:], [0.0, 1.0])
