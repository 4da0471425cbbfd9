"""python -m linscan info / bench."""

import json
import subprocess
import sys

import pytest


def run(*args):
    return subprocess.run(
        [sys.executable, "-m", "linscan", *args], capture_output=True, text=True, timeout=600
    )


def test_info():
    done = run("info")
    assert done.returncode == 0, done.stderr
    assert "linscan" in done.stdout and "Numba" in done.stdout and "threads" in done.stdout
    assert "GPU backend:" in done.stdout


def test_bench_json_small():
    done = run("bench", "--size", "4096", "--repeat", "1", "--no-peers", "--json", "--quiet")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    rows = report["rows"]
    cases = {r["case"] for r in rows}
    assert cases == {"one row", "16 rows", "1024 rows", "16 channels", "1024 channels"}
    ops = {(r["op"], r["method"]) for r in rows}
    assert ("scan", "sequential") in ops and ("scan_backward", "auto") in ops
    assert all(r["ms"] > 0 and r["floor_ratio"] > 0 for r in rows)
    assert report["environment"]["threads"] >= 1


def test_bench_table_and_plot(tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "bench.png"
    done = run(
        "bench",
        "--size",
        "2048",
        "--repeat",
        "1",
        "--no-peers",
        "--case",
        "16 rows",
        "--plot",
        str(png),
    )
    assert done.returncode == 0, done.stderr
    assert "| 16 rows |" in done.stdout and "x floor" in done.stdout
    assert "checked against the float64 oracle" in done.stderr
    assert png.stat().st_size > 1000


def test_bench_unknown_case():
    done = run("bench", "--case", "no such case")
    assert done.returncode == 2 and "cases are" in done.stderr
