"""linscan inside PyTorch's autograd: a ``torch.autograd.Function`` over ``scan`` and
``scan_backward``.

Tensors cross into linscan through DLPack without a copy (CPU tensors as NumPy arrays, CUDA
tensors as CuPy arrays, on PyTorch's current stream) and come back as tensors on the same
device. linscan's gradient convention for complex numbers is PyTorch's, so the backward pass is
``scan_backward`` as it is.

Run it: ``python examples/torch_autograd.py`` (checks the gradients with gradcheck).
"""

import torch

import linscan


class LinearScan(torch.autograd.Function):
    """``h[t] = a[t] * h[t-1] + x[t]`` along ``dim``, differentiable in ``a``, ``x`` and ``h0``.

    ``a`` broadcasts against ``x``; ``h0`` (optional) against ``x`` without ``dim``.
    """

    @staticmethod
    def forward(ctx, a, x, h0=None, dim=-1, reverse=False):
        a_, x_ = a.detach(), x.detach()
        h0_ = None if h0 is None else h0.detach()
        h = linscan.scan(a_, x_, h0_, axis=dim, reverse=reverse)
        ctx.save_for_backward(a_, h, h0_)
        ctx.options = dict(axis=dim, reverse=reverse)
        ctx.has_h0 = h0 is not None
        return h

    @staticmethod
    def backward(ctx, grad_h):
        # Saved outputs come back attached to the graph; linscan takes plain tensors.
        a, h, h0 = (None if t is None else t.detach() for t in ctx.saved_tensors)
        grad_a, grad_x, grad_h0 = linscan.scan_backward(
            a, h, grad_h.detach(), h0 if ctx.has_h0 else None, **ctx.options
        )
        # grad_x has the broadcast shape; x may have broadcast too.
        return grad_a, grad_x, grad_h0, None, None


def linear_scan(a, x, h0=None, dim=-1, reverse=False):
    return LinearScan.apply(a, x, h0, dim, reverse)


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
