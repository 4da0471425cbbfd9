"""linscan.torch: scan, final_state and scan_backward as PyTorch operators, under eager mode,
torch.compile, torch.func and the operator checks PyTorch ships (``torch.library.opcheck``,
``torch.autograd.gradcheck``). CPU builds of PyTorch in CI; CUDA cases where PyTorch sees a
GPU and CuPy can use it."""

import numpy as np
import pytest

import linscan
from linscan import reference
from linscan._dispatch import gpu_status

torch = pytest.importorskip("torch")
lt = pytest.importorskip("linscan.torch")

CUDA = torch.cuda.is_available() and gpu_status()[0]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)] if CUDA else ["cpu"]
OPS = torch.ops.linscan


def draw(*shape, dtype=torch.float64, device="cpu", low=None, seed=0):
    """Normal values, or uniform in [low, 1) (decays), complex with a small phase."""
    gen = torch.Generator().manual_seed(seed + sum(shape))
    real = torch.float64
    values = (torch.rand(shape, dtype=real, generator=gen) * (1 - low) + low if low is not None
              else torch.randn(shape, dtype=real, generator=gen))  # fmt: skip
    if dtype.is_complex:
        phase = (torch.rand(shape, dtype=real, generator=gen) - 0.5) * 0.4
        values = values * torch.exp(1j * phase)
    return values.to(dtype).to(device)


#: (a shape, x shape, h0 shape or None, axis): decays per element, per step, per channel,
#: a Python number; h0 full and broadcast; time first, last and in the middle.
LAYOUTS = [
    ((3, 7), (3, 7), (3,), -1),
    ((7, 1), (7, 4), (4,), 0),
    ((4,), (7, 4), (1,), 0),
    ((), (2, 6, 3), (2, 3), 1),
    ((2, 6, 3), (2, 6, 3), None, 1),
]


def _args(layout, dtype, device="cpu", resets=False, grad=False):
    a_shape, x_shape, h0_shape, axis = layout
    a = 0.8 if a_shape == () else draw(*a_shape, dtype=dtype, device=device, low=0.5)
    x = draw(*x_shape, dtype=dtype, device=device, seed=1)
    h0 = None if h0_shape is None else draw(*h0_shape, dtype=dtype, device=device, seed=2)
    r = None
    if resets:
        r = (torch.rand(*x_shape, generator=torch.Generator().manual_seed(3)) < 0.2).to(device)
    if grad:
        a, x, h0 = (t.requires_grad_() if isinstance(t, torch.Tensor) else t for t in (a, x, h0))
    return a, x, h0, r, axis


def _numpy(t):
    return t if not isinstance(t, torch.Tensor) else t.detach().cpu().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_scan_and_final_state_match_linscan(layout, resets, device):
    a, x, h0, r, axis = _args(layout, torch.float32, device, resets)
    for reverse in (False, True):
        kw = dict(axis=axis, reverse=reverse)
        h = lt.scan(a, x, h0, resets=r, **kw)
        s = lt.final_state(a, x, h0, resets=r, **kw)
        want = reference.scan(*map(_numpy, (a, x, h0)), resets=_numpy(r), **kw)
        assert h.device == x.device and h.dtype == torch.float32 and s.dtype == torch.float32
        np.testing.assert_allclose(h.cpu().numpy(), want, rtol=1e-5, atol=1e-5)
        last = np.take(want, -1 if not reverse else 0, axis=axis)
        np.testing.assert_allclose(s.cpu().numpy(), last, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_gradcheck(layout, dtype):
    """The backward pass (scan_backward, an operator itself) against finite differences, for
    every input that takes a gradient; final_state's too (its states recomputed)."""
    a, x, h0, r, axis = _args(layout, dtype, resets=False, grad=True)
    tensors = [t for t in (a, x, h0) if isinstance(t, torch.Tensor)]

    def call(function, reverse):
        def f(*ts):
            values = iter(ts)
            args = [next(values) if isinstance(t, torch.Tensor) else t for t in (a, x, h0)]
            return function(*args, axis=axis, reverse=reverse)

        return f

    for reverse in (False, True):  # (batched: the backward passes under vmap too)
        for function in (lt.scan, lt.final_state):
            assert torch.autograd.gradcheck(call(function, reverse), tensors,
                                            check_batched_grad=True)  # fmt: skip


def test_gradients_of_an_empty_time_axis():
    """No steps: the final state is h0, whose gradient is the incoming one; a and x get
    zeros."""
    a = torch.rand(0, 3, dtype=torch.float64, requires_grad=True)
    x = torch.rand(0, 3, dtype=torch.float64, requires_grad=True)
    h0 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    (lt.final_state(a, x, h0, axis=0) * torch.arange(3.0, dtype=torch.float64)).sum().backward()
    torch.testing.assert_close(h0.grad, torch.arange(3.0, dtype=torch.float64))
    assert a.grad.shape == a.shape and x.grad.shape == x.shape


def test_gradcheck_with_resets():
    a, x, h0, r, axis = _args(LAYOUTS[0], torch.float64, resets=True, grad=True)
    for reverse in (False, True):
        f = lambda a, x, h0: lt.scan(a, x, h0, axis=axis, reverse=reverse, resets=r)  # noqa: E731
        assert torch.autograd.gradcheck(f, (a, x, h0))


@pytest.mark.parametrize("layout", LAYOUTS[:4])
def test_opcheck(layout):
    """PyTorch's own checks of each operator: schema, autograd registration, fake (meta)
    implementation, AOT dispatch with dynamic shapes."""
    a, x, h0, r, axis = _args(layout, torch.float64, resets=True)
    a = torch.as_tensor(a, dtype=torch.float64)
    h = lt.scan(a, x, h0, axis=axis, resets=r)
    cases = [
        (OPS.scan.default, (a, x, h0, r, axis, False)),
        (OPS.scan.default, (a, x, None, None, axis, True)),
        (OPS.final_state.default, (a, x, h0, r, axis, True)),
        (OPS.scan_backward.default, (a, h, torch.ones_like(h), h0, r, axis, False)),
        (OPS.scan_backward.default, (a, h, torch.ones_like(h), None, None, axis, True)),
    ]
    for op, args in cases:
        torch.library.opcheck(op, args)  # raises on a failed check


def test_inductor_compiles_what_the_fake_implementations_promise():
    """torch.compile's default backend checks strides as well as shapes: real decays with
    complex inputs (grad_a a real part), h0 broadcast over rows (a state laid out by it), a
    transposed decay array; forward and backward equal to eager."""

    def model(a, x, h0):
        h = lt.scan(a.transpose(0, 1), x, h0, axis=1)
        return (h.abs() ** 2).sum() + lt.final_state(a.transpose(0, 1), x, h0, axis=1).abs().sum()

    a = draw(6, 2, low=0.5).requires_grad_()
    x = draw(2, 6, 3, dtype=torch.complex128, seed=1).requires_grad_()
    h0 = draw(3, dtype=torch.complex128, seed=2).requires_grad_()
    a = a.unsqueeze(-1)  # (6, 2, 1): per row and step, transposed to (2, 6, 1)
    compiled = torch.compile(model, fullgraph=True)
    got, want = compiled(a, x, h0), model(a, x, h0)
    torch.testing.assert_close(got, want)
    for g, w in zip(torch.autograd.grad(got, (a, x, h0)), torch.autograd.grad(want, (a, x, h0))):
        torch.testing.assert_close(g, w)


def test_compile_fullgraph_forward_and_backward_match_eager():
    """torch.compile with fullgraph=True (no graph break), dynamic shapes: a model around
    scan and final_state, forward and gradients equal to eager mode."""

    def model(a, x, h0):
        h = lt.scan(torch.sigmoid(a), x * 2, h0, axis=1)
        return (h**2).sum() + lt.final_state(0.9, h, axis=1).sum()

    compiled = torch.compile(model, fullgraph=True, dynamic=True, backend="aot_eager")
    for T in (9, 17):
        a, x, h0 = (draw(*s, seed=T).requires_grad_() for s in ((2, T, 3), (2, T, 3), (2, 3)))
        got = compiled(a, x, h0)
        got_grads = torch.autograd.grad(got, (a, x, h0))
        want = model(a, x, h0)
        want_grads = torch.autograd.grad(want, (a, x, h0))
        torch.testing.assert_close(got, want)
        for g, w in zip(got_grads, want_grads):
            torch.testing.assert_close(g, w)


def test_torch_func_grad_and_jacrev():
    from torch.func import grad, jacrev

    a_ = draw(4, 5, low=0.5)
    jac = jacrev(lambda x: lt.final_state(a_, x, axis=0))(draw(4, 5, seed=3))
    assert jac.shape == (5, 4, 5)  # d final[i] / d x[t, j]: a[t+1..] products where i == j
    torch.testing.assert_close(jac[:, -1, :], torch.eye(5, dtype=torch.float64))

    a, x, h0 = draw(5, low=0.5), draw(5, seed=1), draw(seed=2)
    g = grad(lambda x: lt.scan(a, x, h0).pow(2).sum())(x)
    x_ = x.clone().requires_grad_()
    (want,) = torch.autograd.grad(lt.scan(a, x_, h0).pow(2).sum(), x_)
    torch.testing.assert_close(g, want)
    # The Jacobian of h with respect to x: h[t] = sum over s <= t of prod(a[s+1..t]) x[s].
    jac = jacrev(lambda x: lt.scan(a, x, h0))(x)
    expected = torch.zeros(5, 5, dtype=torch.float64)
    for t in range(5):
        for s in range(t + 1):
            expected[t, s] = torch.prod(a[s + 1 : t + 1])
    torch.testing.assert_close(jac, expected)


@pytest.mark.parametrize("in_dims", [(0, 0, 0), (None, 1, 0), (0, None, None), (None, 0, None)])
def test_vmap_matches_a_loop(in_dims, monkeypatch):
    """vmap over any of a, x and h0 (batch dimensions anywhere): one call with the batch
    folded into the outer dimensions, equal to a Python loop over the batch; gradients too."""
    from torch.func import vmap

    calls = []
    run = lt._linscan
    monkeypatch.setattr(lt, "_linscan", lambda *a, **k: calls.append(a[0]) or run(*a, **k))

    B, T, C = 4, 6, 3
    a = draw(*((B, T, C) if in_dims[0] == 0 else (T, C)), low=0.5)
    x = draw(*((T, B, C) if in_dims[1] == 1 else (B, T, C) if in_dims[1] == 0 else (T, C)), seed=1)
    h0 = draw(*((B, C) if in_dims[2] == 0 else (C,)), seed=2)

    def pick(t, d, b):
        return t if d is None else t.select(d, b)

    for reverse in (False, True):
        f = lambda a, x, h0: lt.scan(a, x, h0, axis=0, reverse=reverse)  # noqa: E731
        calls.clear()
        got = vmap(f, in_dims=in_dims)(a, x, h0)
        assert calls == [linscan.scan]  # the batch in one call, not a loop
        want = torch.stack([f(*(pick(t, d, b) for t, d in zip((a, x, h0), in_dims)))
                            for b in range(B)])  # fmt: skip
        torch.testing.assert_close(got, want)
        s = vmap(lambda a, x, h0: lt.final_state(a, x, h0, axis=0, reverse=reverse),
                 in_dims=in_dims)(a, x, h0)  # fmt: skip
        torch.testing.assert_close(s, want[:, -1 if not reverse else 0])

    def loss(a, x, h0):
        return lt.scan(a, x, h0, axis=0).pow(2).sum()

    from torch.func import grad

    got = vmap(grad(loss, argnums=(0, 1, 2)), in_dims=in_dims)(a, x, h0)
    for k, g in enumerate(got):
        want = torch.stack([grad(loss, argnums=(0, 1, 2))(
            *(pick(t, d, b) for t, d in zip((a, x, h0), in_dims)))[k] for b in range(B)])
        torch.testing.assert_close(g, want)


def test_double_backward_raises_a_clear_error():
    a, x = draw(5, low=0.5).requires_grad_(), draw(5, seed=1).requires_grad_()
    (g,) = torch.autograd.grad(lt.scan(a, x).pow(2).sum(), x, create_graph=True)
    with pytest.raises(NotImplementedError, match="double backward"):
        g.sum().backward()


def test_bad_arguments_are_named():
    x = draw(3, 4)
    with pytest.raises(TypeError, match="tensors or Python numbers"):
        lt.scan(np.ones(4), x)
    with pytest.raises(TypeError, match="takes tensors"):
        lt.scan(0.5, np.ones(4))
    with pytest.raises(ValueError, match="h0 must broadcast"):
        lt.scan(0.5, x, draw(5))
    with pytest.raises(np.exceptions.AxisError):
        lt.final_state(0.5, x, axis=2)
    with pytest.raises(TypeError, match="reverse must be a bool, got int"):
        lt.scan(0.5, x, reverse=1)
    with pytest.raises(TypeError, match="a is on meta but the input is on cpu"):
        lt.scan(torch.rand(3, 4, device="meta"), x)
    with pytest.raises(TypeError, match="resets is on meta"):
        lt.final_state(0.5, x, resets=torch.zeros(3, 4, dtype=torch.bool, device="meta"))


def test_inputs_are_left_as_they_were():
    a, x, h0, r, axis = _args(LAYOUTS[0], torch.float64, resets=True)
    before = [t.clone() for t in (a, x, h0, r)]
    h = lt.scan(a, x, h0, resets=r, axis=axis)
    lt.scan_backward(a, h, torch.ones_like(h), h0, resets=r, axis=axis)
    for t, b in zip((a, x, h0, r), before):
        assert torch.equal(t, b)
    assert h.data_ptr() != x.data_ptr()


def test_python_numbers_take_the_tensor_dtype():
    x = draw(3, 4, dtype=torch.float32)
    assert lt.scan(0.5, x).dtype == torch.float32
    assert lt.scan(0.5 + 0.1j, x).dtype == torch.complex64
    assert lt.scan(0.5, x, 1.0).dtype == torch.float32
    assert lt.scan(np.float64(0.5), x).dtype == torch.float64  # NumPy scalars keep their dtype
    assert linscan.scan(np.float64(0.5), x.numpy()).dtype == np.float64
    np.testing.assert_allclose(lt.scan(0.5, x, 1.0).numpy(),
                               linscan.scan(0.5, x.numpy(), 1.0), rtol=1e-6)  # fmt: skip


def test_plain_linscan_on_tensors_in_compiled_code_breaks_the_graph():
    """linscan.scan itself (not linscan.torch) inside torch.compile: the graph breaks around
    it and it runs as in eager mode; with fullgraph=True the error names linscan.torch."""
    a, x = torch.full((3, 4), 0.5), draw(3, 4, dtype=torch.float32)
    graphs = []

    def backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    f = lambda a, x: torch.cos(linscan.scan(a, torch.sin(x) + 1)) * 2  # noqa: E731
    torch.testing.assert_close(torch.compile(f, backend=backend)(a, x), f(a, x))
    assert len(graphs) == 2  # the code before the call and after it, compiled
    g = lambda a, x: linscan.scan(a, x) * 3  # noqa: E731  (a code object not compiled yet)
    with pytest.raises(Exception, match="linscan.torch"):
        torch.compile(g, fullgraph=True, backend="eager")(a, x)


def test_plain_linscan_under_autograd_and_transforms_names_linscan_torch():
    from torch.func import grad, vmap

    a, x = torch.full((3, 4), 0.5), draw(3, 4)
    with pytest.raises(TypeError, match="x is a PyTorch tensor under a torch.func transform.*"
                                        "linscan.torch"):  # fmt: skip
        grad(lambda x: linscan.scan(a, x).sum())(x)
    with pytest.raises(TypeError, match="torch.func transform.*linscan.torch"):
        vmap(lambda x: linscan.scan(0.5, x))(x)
    with pytest.raises(TypeError, match="x is a PyTorch tensor that requires a gradient.*"
                                        "linscan.torch"):  # fmt: skip
        linscan.scan(a, x.clone().requires_grad_())
    np.testing.assert_allclose(linscan.scan(a, x).numpy(), linscan.scan(0.5, x.numpy()))


@pytest.mark.gpu
@pytest.mark.skipif(not CUDA, reason="needs a GPU that PyTorch and CuPy can use")
def test_cuda_tensors_cross_without_copies_on_torchs_stream(monkeypatch):
    """On a GPU: linscan sees CuPy views of the tensors' own memory, runs on PyTorch's current
    stream (a non-default one here, with work queued before the call), and the result is a
    tensor over the memory linscan wrote."""
    import cupy

    seen = []
    run = lt._linscan

    def spying(function, device, *args, **kwargs):
        def spy(*arrays, **options):
            seen.append(dict(stream=cupy.cuda.get_current_stream().ptr,
                             pointers=[v.data.ptr for v in arrays if v is not None]))  # fmt: skip
            result = function(*arrays, **options)
            seen[-1]["result"] = result.data.ptr
            return result

        return run(spy, device, *args, **kwargs)

    monkeypatch.setattr(lt, "_linscan", spying)
    a = torch.full((4, 200_000), 0.999, device="cuda")
    x = torch.randn(4, 200_000, device="cuda")
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        y = x * 2 + 1  # queued on the stream just before the call
        h = lt.scan(a, y)
    stream.synchronize()
    (call,) = seen
    assert call["stream"] == stream.cuda_stream
    assert call["pointers"][:2] == [a.data_ptr(), y.data_ptr()]
    assert h.data_ptr() == call["result"]
    want = reference.scan(a.cpu().numpy(), (x * 2 + 1).cpu().numpy())
    np.testing.assert_allclose(h.cpu().numpy(), want, rtol=1e-4, atol=1e-4)
