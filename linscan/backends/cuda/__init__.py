"""The GPU backend: ``backend`` (the contract's implementation: launches; imports CuPy),
``plan`` (launch planning, plain Python), ``source`` (finding and compiling ``kernels_cu/``)
and ``emulate`` (the tile kernel's algorithm in NumPy, for tests without a GPU). Importing this
package imports neither CuPy nor anything that needs a GPU."""
