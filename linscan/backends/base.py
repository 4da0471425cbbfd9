"""The backend contract: what every backend offers on the canonical layout.

``linscan._api`` validates a call, asks ``linscan._dispatch`` for the backend of its arrays
(the CPU for NumPy arrays, the GPU for CuPy arrays) and speaks to it only through the methods
below. Arrays reach a backend as ``(O, T, I)`` views (``linscan._layout``): ``O`` lanes before
the time axis, ``T`` steps, ``I`` lanes after it; ``I == 1`` is the time-contiguous case. A
state is an ``(O, I)`` array. ``h0`` is such a state or ``None`` for zeros; ``resets`` an
``(O, T, I)`` boolean view or ``None``. Every array of one call has the dtype that
:meth:`Backend.storage` gives for the call's dtype.

A backend is an instance of a subclass of :class:`Backend`; the abstract methods must all be
written (Python refuses to make an instance otherwise), so that the two backends cannot drift
apart silently. ``tests/api/test_backends.py`` checks the contract on every usable backend.
"""

from __future__ import annotations

import abc
from types import ModuleType


class Backend(abc.ABC):
    """One way of running the recurrence ``h[t] = a[t] * h[t-1] + x[t]`` on arrays of one
    kind. ``xp`` is the array module of those arrays (``numpy`` or ``cupy``); ``name`` says
    which backend it is in messages and records."""

    name: str
    xp: ModuleType

    # Inputs in the form the kernels take.

    @abc.abstractmethod
    def storage(self, dtype):
        """The dtype in which this backend takes and returns the arrays of a call whose
        result has ``dtype`` (16-bit dtypes may be widened to float32, their arithmetic)."""

    @abc.abstractmethod
    def empty(self, shape, dtype):
        """A new uninitialised array of this backend's kind."""

    @abc.abstractmethod
    def decays(self, a, shape, axis, dtype):
        """``a`` (broadcasting to ``shape``; a Python number arrives as a NumPy scalar of the
        call's dtype) for the kernels: an ``(O, T, I)`` view read through its own strides,
        so a broadcast decay is never materialised, or (the GPU) a scalar of ``dtype``'s
        arithmetic type, which its kernels take by value."""

    @abc.abstractmethod
    def operand(self, arr, shape, axis, dtype):
        """``x``, ``h`` or ``grad_h`` as a C-contiguous ``(O, T, I)`` array of ``dtype``."""

    @abc.abstractmethod
    def initial(self, h0, shape, axis, dtype):
        """``h0`` as an ``(O, I)`` state of ``dtype``, or ``None`` for ``None``. The CPU gives
        a fresh array that its kernels update in place; the GPU a read-only view."""

    @abc.abstractmethod
    def flags(self, resets, shape, axis):
        """``resets`` as an ``(O, T, I)`` boolean view, or ``None`` for ``None``."""

    # The passes.

    @abc.abstractmethod
    def scan(self, a, x, h, h0, reverse: bool, method: str, resets=None) -> None:
        """Write the states of the recurrence into ``h`` (which may be ``x``)."""

    @abc.abstractmethod
    def final_state(self, a, x, h0, reverse: bool, method: str, resets=None):
        """The last state ``(O, I)``, in the arithmetic dtype (unrounded), writing nothing
        else."""

    @abc.abstractmethod
    def backward(self, a, h, gh, h0, gx, ga, reverse, method, want_h0, resets=None):
        """The reverse scan of the gradient ``gh``: write ``gx`` (which may be ``gh``) and
        ``ga`` (unrounded); return the gradient of ``h0`` ``(O, I)`` if ``want_h0``, else
        ``None``."""

    @abc.abstractmethod
    def summary(self, a, x, reverse: bool, method: str, resets=None, back=False):
        """What the run of steps does to the state entering it, each lane as the affine map
        ``h -> A * h + B`` (``B`` where it resets): a :class:`linscan._extended.Summary` of
        ``(O, I)`` arrays, ``A`` the product of the decays as a mantissa and an exponent that
        neither underflow nor overflow, ``B`` the state from zero (unrounded, in the
        arithmetic dtype), and whether a lane met a reset (``None`` without ``resets``).
        ``linscan.dask`` summarizes each chunk with it, reading ``a`` once where the backend
        can.

        With ``back``, ``x`` is ``grad_h`` and the run is the backward carry of
        :meth:`backward`, ``c = conj(a) * c + conj(a) * grad_h`` walked against ``reverse``:
        ``A`` is the product of ``conj(a)`` and ``B`` the gradient the run sends to the state
        before it when nothing arrives at its end."""

    def __repr__(self) -> str:
        return f"<linscan backend {self.name!r}>"
