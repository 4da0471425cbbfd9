"""linscan's backends: ``cpu`` (Numba kernels on NumPy arrays) and ``cuda`` (the CUDA kernels
of ``kernels_cu/`` on CuPy arrays), both implementing the contract of ``base``. Importing this
package imports neither Numba nor CuPy."""
