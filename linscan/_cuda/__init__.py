"""linscan's GPU backend: ``backend`` (launches, imports CuPy), ``plan`` (launch planning,
plain Python) and ``source`` (finding and compiling ``kernels_cu/``). Importing this package
imports neither CuPy nor anything that needs a GPU."""
