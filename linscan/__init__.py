"""linscan: first-order linear recurrences ``h[t] = a[t] * h[t-1] + x[t]``, computed in
parallel over the sequence length (Martin & Cundy, ICLR 2018).

Importing linscan loads neither Numba nor CuPy; kernels compile on first use.
"""

from ._api import final_state, scan, scan_backward
from ._matrix import matscan, matscan_backward, matscan_final_state

__version__ = "0.1.0"

__all__ = [
    "scan",
    "scan_backward",
    "final_state",
    "matscan",
    "matscan_backward",
    "matscan_final_state",
    "__version__",
]
