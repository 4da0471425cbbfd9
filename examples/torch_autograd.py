"""linscan inside PyTorch's autograd, through ``linscan.torch``: ``scan`` is a PyTorch
operator whose backward pass is ``scan_backward`` (one reverse scan), so gradients, gradcheck,
torch.compile and torch.func work on it as on PyTorch's own operators.

Tensors cross into linscan through DLPack without a copy (CPU tensors as NumPy arrays, CUDA
tensors as CuPy arrays, on PyTorch's current stream) and come back as tensors on the same
device. linscan's gradient convention for complex numbers is PyTorch's.

Run it: ``python examples/torch_autograd.py`` (checks the gradients with gradcheck).
"""

import torch

import linscan.torch as lt


def linear_scan(a, x, h0=None, dim=-1, reverse=False):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``dim``, differentiable in ``a``, ``x`` and ``h0``.

    ``a`` (a tensor or a number) broadcasts against ``x``; ``h0`` (optional) against ``x``
    without ``dim``.
    """
    return lt.scan(a, x, h0, axis=dim, reverse=reverse)


def check(dtype=torch.float64, device="cpu") -> bool:
    """``torch.autograd.gradcheck`` of ``linear_scan`` in ``dtype`` on ``device``."""
    gen = torch.Generator(device="cpu").manual_seed(0)

    def draw(*shape):
        return torch.randn(*shape, dtype=dtype, generator=gen).to(device)

    a = (0.9 * draw(3, 7)).requires_grad_()
    x = draw(3, 7).requires_grad_()
    h0 = draw(3).requires_grad_()
    forward = torch.autograd.gradcheck(lambda a, x, h0: linear_scan(a, x, h0), (a, x, h0))
    backward = torch.autograd.gradcheck(
        lambda a, x: linear_scan(a, x, dim=0, reverse=True), (a.detach()[:, :1].requires_grad_(), x)
    )
    return forward and backward


if __name__ == "__main__":
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        for dtype in (torch.float64, torch.complex128):
            print(f"gradcheck {dtype} on {device}: {check(dtype, device)}")
