"""Arrays of other libraries through DLPack, and the PyTorch and JAX examples.

PyTorch and JAX are test dependencies only (CI installs their CPU builds); the tests skip
where one is missing. CUDA cases run where PyTorch sees a GPU and CuPy can use it.
"""

import numpy as np
import pytest

import linscan
from linscan._dispatch import gpu_status

from helpers import load_example as load

torch = pytest.importorskip("torch")

CUDA = torch.cuda.is_available() and gpu_status()[0]
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)] if CUDA else ["cpu"]


@pytest.fixture(scope="module")
def torch_example():
    return load("torch_autograd")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
def test_torch_gradcheck(torch_example, dtype, device):
    assert torch_example.check(dtype, device)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_tensors_in_and_out(device):
    x = torch.linspace(-1, 1, 12, dtype=torch.float32, device=device).reshape(3, 4)
    a = torch.full((3, 4), 0.5, dtype=torch.float32, device=device)
    h = linscan.scan(a, x)
    assert isinstance(h, torch.Tensor) and h.device == x.device and h.dtype == torch.float32
    expected = linscan.scan(a.cpu().numpy(), x.cpu().numpy())
    np.testing.assert_array_equal(h.cpu().numpy(), expected)
    state = linscan.final_state(0.5, x, axis=0)
    assert isinstance(state, torch.Tensor) and state.shape == (4,)
    # out= is written in place: linscan viewed the tensor's own memory.
    out = torch.zeros_like(x)
    assert linscan.scan(a, x, out=out) is out
    np.testing.assert_array_equal(out.cpu().numpy(), expected)
    grads = linscan.scan_backward(a, h, torch.ones_like(h), h0=torch.zeros(3, device=device))
    assert all(isinstance(g, torch.Tensor) and g.device == x.device for g in grads)


def test_torch_bfloat16_and_resets():
    x = torch.ones(2, 6, dtype=torch.bfloat16)
    resets = torch.tensor([False, False, True, False, False, False])
    h = linscan.scan(0.5, x, resets=resets)
    assert h.dtype == torch.bfloat16
    expected = [1, 1.5, 1, 1.5, 1.75, 1.875]
    np.testing.assert_array_equal(h.float().numpy(), [expected, expected])


def test_torch_errors_name_the_argument():
    x = torch.ones(4)
    with pytest.raises(TypeError, match="a is a numpy.ndarray but x is a torch.Tensor"):
        linscan.scan(np.ones(4, np.float32), x)
    with pytest.raises(TypeError, match="x is a PyTorch tensor that requires a gradient"):
        linscan.scan(0.5, torch.ones(4, requires_grad=True))
    with pytest.raises(TypeError, match="x must have a floating-point dtype"):
        linscan.scan(0.5, torch.ones(4, dtype=torch.int32))


def test_jax_arrays_in_and_out():
    jnp = pytest.importorskip("jax.numpy")
    x = jnp.linspace(-1.0, 1.0, 8, dtype=jnp.float32).reshape(2, 4)
    h = linscan.scan(0.5, x)
    assert type(h) is type(x) and h.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(h), linscan.scan(0.5, np.asarray(x)))
    hb = linscan.scan(0.5, x.astype(jnp.bfloat16))
    assert hb.dtype == jnp.bfloat16
    with pytest.raises(TypeError, match="x is a jaxlib"):
        linscan.scan(torch.ones(2, 4), x)


def test_jax_tracers_are_refused_with_the_way_to_wrap_linscan():
    """Inside jax.jit, grad or vmap linscan sees tracers, not arrays: a TypeError that says
    so and points at linscan.jax, not a device error."""
    jax = pytest.importorskip("jax")
    x = jax.numpy.ones(3)
    for transform in (jax.jit, jax.vmap, jax.grad):
        with pytest.raises(TypeError, match="x is a JAX tracer.*linscan.jax"):
            transform(lambda x: linscan.scan(0.5, x).sum())(x)


@pytest.fixture
def jax_x64():
    jax = pytest.importorskip("jax")
    before = jax.config.read("jax_enable_x64")
    jax.config.update("jax_enable_x64", True)
    yield jax
    jax.config.update("jax_enable_x64", before)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("dtype", ["float64", "complex128"])
def test_jax_example_matches_jax_grad_of_lax_scan(jax_x64, dtype, reverse):
    example = load("jax_transforms")
    assert example.compare(getattr(jax_x64.numpy, dtype), reverse) < 1e-12


def test_torch_lazy_negation_and_conjugation_are_honoured():
    """x.conj() and x.conj().imag are views with PyTorch's conjugate or negative bit: DLPack
    would hand over the memory without the sign, so linscan resolves them (a copy) as inputs
    and refuses them as out."""
    z = torch.tensor([1 + 2j, 3 - 1j, -2 + 0.5j], dtype=torch.complex128)
    for view in (z.conj().imag, z.conj()):
        want = linscan.scan(0.5, view.resolve_neg().resolve_conj().numpy())
        np.testing.assert_array_equal(linscan.scan(0.5, view).numpy(), want)
        lt = pytest.importorskip("linscan.torch")
        np.testing.assert_array_equal(lt.scan(0.5, view).numpy(), want)
    with pytest.raises(TypeError, match="out is a PyTorch view with its negative"):
        linscan.scan(0.5, z.real.clone(), out=z.conj().imag)
