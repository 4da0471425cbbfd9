"""``benchmarks/cpu_targets.py`` reads issue 19's targets off the bench's rows (injected here)."""

import importlib.util
from pathlib import Path


def _targets():
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "cpu_targets.py"
    spec = importlib.util.spec_from_file_location("cpu_targets", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.targets


def _rows(case, scan, reverse, final, backward):
    """Bench rows of one case: ``scan`` and ``backward`` map method to (ms, x floor)."""
    rows = [
        dict(case=case, op="scan", method=m, ms=v[0], floor_ratio=v[1]) for m, v in scan.items()
    ]
    rows.append(dict(case=case, op="scan reverse", method="auto", ms=1.0, floor_ratio=reverse))
    rows.append(dict(case=case, op="final_state", method="auto", ms=1.0, floor_ratio=final))
    rows += [
        dict(case=case, op="scan_backward", method=m, ms=v[0], floor_ratio=v[1])
        for m, v in backward.items()
    ]
    return rows


def test_targets_of_a_run():
    rows = _rows(
        "one row",
        scan={"sequential": (30.0, 3.0), "parallel": (10.0, 1.5), "auto": (10.9, 1.6)},
        reverse=1.9,
        final=2.1,
        backward={"sequential": (20.0, 2.0), "parallel": (12.0, 1.2), "auto": (13.5, 1.3)},
    ) + _rows(
        "16 channels",
        scan={"sequential": (6.0, 1.0), "parallel": (7.0, 1.2), "auto": (6.0, 1.0)},
        reverse=1.3,
        final=0.7,
        backward={"sequential": (10.0, 1.0), "parallel": (11.0, 1.1), "auto": (10.0, 1.0)},
    )
    got = {
        (case, target): (round(figure, 3), met) for case, target, figure, met in _targets()(rows)
    }
    assert got == {
        ("one row", "scan: auto / fastest"): (1.09, True),
        ("one row", "scan_backward: auto / fastest"): (1.125, False),
        # One row's forward operations may take twice the floor; its backward pass may not.
        ("one row", "scan: x floor <= 2"): (1.6, True),
        ("one row", "scan reverse: x floor <= 2"): (1.9, True),
        ("one row", "final_state: x floor <= 2"): (2.1, False),
        ("one row", "scan_backward: x floor <= 1.25"): (1.3, False),
        ("16 channels", "scan: auto / fastest"): (1.0, True),
        ("16 channels", "scan_backward: auto / fastest"): (1.0, True),
        ("16 channels", "scan: x floor <= 1.25"): (1.0, True),
        ("16 channels", "scan reverse: x floor <= 1.25"): (1.3, False),
        ("16 channels", "final_state: x floor <= 1.25"): (0.7, True),
        ("16 channels", "scan_backward: x floor <= 1.25"): (1.0, True),
    }
