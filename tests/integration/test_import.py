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

    assert set(linscan.__all__) == {"scan", "scan_backward", "final_state", "__version__"}
    for name in ("scan", "scan_backward", "final_state"):
        doc = getattr(linscan, name).__doc__
        assert "Parameters" in doc and "Returns" in doc and "Raises" in doc and ">>>" in doc
