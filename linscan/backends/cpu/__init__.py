"""The CPU backend: ``backend`` (the contract's implementation: plans run on the thread pool),
``plan`` (launch planning, plain Python), ``pool`` (the shared thread pool), ``kernels`` (the
Numba kernels, compiled on first use) and ``cache`` (Numba's disk cache, repairing). Importing
this package imports neither Numba nor the kernels."""
