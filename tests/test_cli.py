"""python -m linscan info / bench."""

import argparse
import json
import subprocess
import sys

import pytest

from linscan import __main__ as cli


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


# In-process checks of the command line: none of them may start a benchmark.


@pytest.fixture
def bench_calls(monkeypatch):
    """The arguments ``main`` would run the benchmark with, instead of running it."""
    calls = []
    monkeypatch.setattr(cli, "_bench", lambda args: calls.append(args) or 0)
    monkeypatch.delenv("LINSCAN_NUM_THREADS", raising=False)
    return calls


def usage_error(argv, capsys):
    """``main(argv)`` exits with status 2 (argparse's usage error); its stderr."""
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "usage: python -m linscan bench" in err and "Traceback" not in err
    return err


@pytest.mark.parametrize(
    "text, size",
    [
        ("1048576", 1 << 20),
        ("2**20", 1 << 20),
        ("2^20", 1 << 20),
        (" 2 ** 20 ", 1 << 20),
        ("1e6", 10**6),
        ("1.5e3", 1500),
        ("16M", 16 << 20),
        ("16Mi", 16 << 20),
        ("16m", 16 << 20),
        ("4K", 4096),
        ("1.5K", 1536),
        ("1G", 1 << 30),
        ("1T", 1 << 40),
        ("2**40", 1 << 40),
        ("1", 1),
    ],
)
def test_parse_size_accepts(text, size):
    assert cli.parse_size(text) == size


@pytest.mark.parametrize(
    "text, message",
    [
        ("0", "at least 1"),
        ("-5", "at least 1"),
        ("0**3", "at least 1"),
        ("0e5", "at least 1"),
        ("1.5", "whole number"),
        ("1e-3", "whole number"),
        ("1e-999999999", "whole number"),
        ("2**41", "at most 2\\*\\*40"),
        ("1e13", "at most"),
        ("2T", "at most"),
        # Bounded before computing: either would take minutes as integer arithmetic.
        ("9**999999999", "at most"),
        ("1e999999999", "at most"),
        ("9**9**9", "expected a whole number of elements such as"),
        ("2**4+1", "such as"),
        ("__import__('os').getpid()", "such as"),
        ("0x10", "such as"),
        ("16MB", "such as"),
        ("", "such as"),
        ("1" * 50, "such as"),
    ],
)
def test_parse_size_rejects(text, message):
    with pytest.raises(argparse.ArgumentTypeError, match=message) as exc:
        cli.parse_size(text)
    assert repr(text) in str(exc.value)  # says what was given


def test_size_and_repeat_reach_the_benchmark(bench_calls):
    assert cli.main(["bench", "--size", "16M", "--repeat", "3"]) == 0
    (args,) = bench_calls
    assert args.size == 16 << 20 and args.repeat == 3
    assert cli.main(["bench"]) == 0 and bench_calls[1].size == 1 << 24


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--size", "0"], "argument --size: must be at least 1, got '0'"),
        (["--size", "-4096"], "argument --size: must be at least 1, got '-4096'"),
        (["--size", "2**4+1"], "argument --size: expected a whole number"),
        # The old parser evaluated this; it must not even reach Python.
        (["--size", "__import__('os').getpid()**1"], "argument --size: expected"),
        (["--repeat", "0"], "argument --repeat: must be at least 1, got '0'"),
        (["--repeat", "-1"], "argument --repeat: must be at least 1, got '-1'"),
        (["--repeat", "many"], "argument --repeat: expected a whole number of at least 1"),
    ],
)
def test_bad_counts_are_usage_errors(argv, message, bench_calls, capsys):
    err = usage_error(["bench", *argv], capsys)
    assert message in err and not bench_calls


def test_plot_without_matplotlib_fails_before_the_run(bench_calls, capsys, monkeypatch, tmp_path):
    # None in sys.modules makes ``import matplotlib`` raise ImportError, installed or not.
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setitem(sys.modules, "matplotlib.pyplot", None)
    err = usage_error(["bench", "--plot", str(tmp_path / "b.png")], capsys)
    assert "--plot needs matplotlib" in err and "pip install matplotlib" in err
    assert not bench_calls


def test_plot_with_gpu_is_a_usage_error(bench_calls, capsys, tmp_path):
    err = usage_error(["bench", "--gpu", "--plot", str(tmp_path / "b.png")], capsys)
    assert "--plot draws the CPU benchmark only" in err and not bench_calls


@pytest.mark.parametrize("setting", ["abc", "0", "-3"])
def test_bench_with_a_bad_thread_setting_is_a_usage_error(
    setting, bench_calls, capsys, monkeypatch
):
    monkeypatch.setenv("LINSCAN_NUM_THREADS", setting)
    err = usage_error(["bench"], capsys)
    assert f"LINSCAN_NUM_THREADS must be a positive integer, got {setting!r}" in err
    assert not bench_calls


@pytest.mark.parametrize("setting", ["abc", "0", "-3"])
def test_info_reports_a_bad_thread_setting(setting, capsys, monkeypatch):
    pytest.importorskip("numba")
    monkeypatch.setattr(cli, "_gpu_status", lambda: "not asked")  # probing a GPU is slow
    monkeypatch.setenv("LINSCAN_NUM_THREADS", setting)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("CPU backend:"))
    assert "invalid setting" in line
    assert f"LINSCAN_NUM_THREADS must be a positive integer, got {setting!r}" in line
    assert "GPU backend: not asked" in out


def test_info_says_when_the_thread_setting_is_capped(capsys, monkeypatch):
    pytest.importorskip("numba")
    from linscan.backends.cpu import plan as _plan

    monkeypatch.setattr(cli, "_gpu_status", lambda: "not asked")
    monkeypatch.setattr(_plan, "_usable_cpus", lambda: 2)
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "100000")
    assert cli.main(["info"]) == 0
    cap = 2 * _plan.MAX_THREADS_PER_CPU
    assert f"{cap} threads (LINSCAN_NUM_THREADS=100000 capped at" in capsys.readouterr().out
