"""``import linscan`` is light: no Numba, no CuPy until a kernel runs."""

import subprocess
import sys


def test_import_loads_neither_numba_nor_cupy():
    code = (
        "import sys, linscan; "
        "print(sorted(m for m in ('numba', 'cupy', 'hypothesis') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_public_api():
    import linscan

    functions = ("scan", "scan_backward", "final_state")
    functions += ("matscan", "matscan_backward", "matscan_final_state")
    assert set(linscan.__all__) == set(functions) | {"__version__"}
    for name in functions:
        doc = getattr(linscan, name).__doc__
        assert "Parameters" in doc and "Returns" in doc and "Raises" in doc and ">>>" in doc
