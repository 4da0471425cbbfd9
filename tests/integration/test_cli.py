"""python -m linscan info / bench / tune."""

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
    # The CPU by model and vector extensions, and what method='auto' follows (the tests run
    # with LINSCAN_TUNING=off: see conftest).
    assert "CPU: " in done.stdout and "CPUs (" in done.stdout
    assert "CPU method='auto': static cost model (LINSCAN_TUNING=off)" in done.stdout


def test_tune_stores_the_table_that_info_and_bench_then_report(tmp_path, monkeypatch, capsys):
    from linscan._bench import cpu as cpu_bench
    from linscan.backends.cpu import calibrate, tuning

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setenv("LINSCAN_TUNING", "on")
    monkeypatch.setattr(calibrate, "CHANNELS", (16,))
    monkeypatch.setattr(calibrate, "row_counts", lambda threads: (1,))

    def timer(probe, strategies, arrays, repeat):  # lanes wins everywhere, by far
        return {s: [1.0 if s == "lanes" else 3.0] * repeat for s in strategies}

    monkeypatch.setattr(calibrate, "measure", timer)
    monkeypatch.setattr(calibrate.os, "getloadavg", lambda: (99.0, 0.0, 0.0))
    monkeypatch.setattr(calibrate, "measure_tiles", lambda tiles, arrays, repeat: {
        op: {t: [1.0 if t == 0 else 2.0] * repeat for t in tiles} for op in tuning.OPS
    })  # fmt: skip
    tuning.forget()
    try:
        assert cli.main(["tune", "--size", "2**16", "--repeat", "2"]) == 0
        out, err = capsys.readouterr()
        assert "| 1 rows, scan up, float32 | lanes" in out and "stored in" in out
        assert (
            "Downward walks touch (elements): scan nothing, final_state nothing, backward "
            "nothing ahead (static: 4096)"
        ) in out
        assert "[" in err and "24/24" in err  # the progress bar reached the end
        assert "warning: the machine is busy (load average 99.0" in err
        file = out.rsplit("stored in ", 1)[1].strip()
        stored = json.loads(open(file).read())
        assert file.startswith(str(tmp_path)) and stored["size"] == 2**16
        assert stored["load_average"] == 99.0
        assert cli.main(["info"]) == 0
        nothing = "scan nothing, final_state nothing, backward nothing ahead"
        assert f"tuned on this machine ({file}; downward walks touch {nothing})" in (
            capsys.readouterr().out
        )
        env = cpu_bench.environment()
        assert env["cpu"] and env["vector"] and env["tuning"].startswith("tuned")
        heading = cpu_bench.markdown({"environment": env, "rows": []})
        assert f"CPU: {env['cpu']}" in heading and "method='auto': tuned" in heading
    finally:
        tuning.forget()


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


def test_bench_signal_against_scipy():
    pytest.importorskip("scipy")
    done = run("bench", "--signal", "--size", "8192", "--repeat", "1", "--json", "--quiet",
               "--case", "one", "--case", "rows")  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)["rows"]
    assert {(r["case"], r["dtype"]) for r in rows} == {
        (case, dtype) for case in ("one signal", "64 rows") for dtype in ("float64", "float32")
    }
    assert all(r["ms"] > 0 and r["scipy_ms"] > 0 and r["speedup"] > 0 for r in rows)
    refused = run("bench", "--signal", "--gpu")
    assert refused.returncode == 2 and "benchmarks/gpu_matrix.py" in refused.stderr


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
    assert "argument --case: 'no such case' matches no case" in done.stderr


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
    from linscan._bench import cpu, gpu

    assert cli.main(["bench", "--size", "16M", "--repeat", "3"]) == 0
    (args,) = bench_calls
    assert args.size == 16 << 20 and args.repeat == 3
    # Not given: each benchmark's own default.
    assert cli.main(["bench"]) == 0 and bench_calls[1].size is None
    assert bench_calls[1].repeat is None
    assert (cpu.DEFAULT_SIZE, cpu.DEFAULT_REPEAT, gpu.DEFAULT_SIZE) == (1 << 24, 7, 1 << 26)


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
@pytest.mark.parametrize("gpu", [[], ["--gpu"]], ids=["cpu", "gpu"])
def test_bad_counts_are_usage_errors(argv, message, gpu, bench_calls, capsys):
    err = usage_error(["bench", *gpu, *argv], capsys)
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


def test_bench_help_lists_every_case(capsys):
    from linscan._bench import common, gpu

    with pytest.raises(SystemExit) as exc:
        cli.main(["bench", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    cpu_line = next(line for line in out.splitlines() if line.strip().startswith("CPU:"))
    gpu_line = next(line for line in out.splitlines() if line.strip().startswith("--gpu:"))
    for case in common.CASES:
        assert case.name in cpu_line and case.name in gpu_line
    assert gpu.TABLE1 in gpu_line and gpu.SMALL_CALLS in gpu_line


# bench --gpu without a GPU: the tables are replaced by recorders of what reaches them.


@pytest.fixture
def gpu_tables(monkeypatch):
    """``{table: (args, kwargs)}`` of the GPU tables ``main`` ran, in place of running them;
    the GPU probe says yes, and the environment is made up."""
    from linscan import _dispatch
    from linscan._bench import common, gpu

    calls = {}

    def recorder(table):
        def record(*args, **kwargs):
            calls[table] = (args, kwargs)
            return [{"made up": table}]

        return record

    for table in ("bandwidth", "dtype", "table1", "latency", "peer"):
        monkeypatch.setattr(gpu, f"{table}_rows", recorder(table))
    monkeypatch.setattr(gpu, "environment", lambda: common.environment({}, {"device": "none"}))
    monkeypatch.setattr(_dispatch, "gpu_status", lambda: (True, "made up"))
    monkeypatch.delenv("LINSCAN_NUM_THREADS", raising=False)
    return calls


def _names(cases):
    return [c.name for c in cases]


def test_gpu_bench_defaults(gpu_tables):
    from linscan._bench import gpu

    assert cli.main(["bench", "--gpu", "--quiet", "--json"]) == 0
    assert set(gpu_tables) == {"bandwidth", "dtype", "table1", "latency", "peer"}
    (cases, size, _), kwargs = gpu_tables["bandwidth"]
    assert _names(cases) == ["one row", "1024 rows", "1024 channels"]
    assert size == gpu.DEFAULT_SIZE and kwargs == {"check": True}  # each table's own repeat
    (cases, size, _), kwargs = gpu_tables["dtype"]
    assert _names(cases) == ["one row", "1024 channels"] and size == gpu.DEFAULT_SIZE
    assert gpu_tables["table1"][1] == {"check": True} and gpu_tables["latency"][1] == {}
    assert gpu_tables["peer"][0][0] == gpu.DEFAULT_SIZE


def test_gpu_bench_honours_size_repeat_case_and_no_check(gpu_tables, capsys):
    argv = ["bench", "--gpu", "--size", "2**20", "--repeat", "3", "--case", "16 rows"]
    assert cli.main([*argv, "--no-check", "--quiet", "--json"]) == 0
    assert set(gpu_tables) == {"bandwidth", "dtype"}  # no grid chosen; peers go with one row
    for table in ("bandwidth", "dtype"):
        (cases, size, _), kwargs = gpu_tables[table]
        assert _names(cases) == ["16 rows"] and size == 1 << 20
        assert kwargs == {"check": False, "repeat": 3}
    report = json.loads(capsys.readouterr().out)
    assert set(report) == {"environment", "bandwidth", "dtypes"}
    assert report["environment"]["command"].startswith("python -m linscan")


def test_gpu_bench_case_chooses_the_grids_and_the_peers(gpu_tables):
    argv = ["bench", "--gpu", "--quiet", "--json", "--repeat", "5", "--size", "4096"]
    assert cli.main([*argv, "--case", "paper table", "--case", "small calls"]) == 0
    assert set(gpu_tables) == {"table1", "latency"}
    assert gpu_tables["table1"][1] == {"check": True, "repeat": 5}
    assert gpu_tables["latency"][1] == {"repeat": 5}
    gpu_tables.clear()
    assert cli.main([*argv, "--case", "one row"]) == 0
    assert set(gpu_tables) == {"bandwidth", "dtype", "peer"}
    (size, _), kwargs = gpu_tables["peer"]
    assert size == 4096 and kwargs == {"repeat": 5}


def test_gpu_bench_no_peers(gpu_tables):
    assert cli.main(["bench", "--gpu", "--quiet", "--json", "--no-peers"]) == 0
    assert "peer" not in gpu_tables and {"bandwidth", "table1", "latency"} <= set(gpu_tables)


def test_gpu_bench_unknown_case_is_a_usage_error(gpu_tables, capsys):
    err = usage_error(["bench", "--gpu", "--case", "two rows"], capsys)
    assert "argument --case: 'two rows' matches no case of --gpu" in err
    assert "paper table 1" in err and "small calls" in err and not gpu_tables


def test_gpu_bench_without_a_gpu_is_a_usage_error(gpu_tables, capsys, monkeypatch):
    from linscan import _dispatch

    monkeypatch.setattr(_dispatch, "gpu_status", lambda: (False, "CuPy finds no CUDA device"))
    err = usage_error(["bench", "--gpu"], capsys)
    assert "--gpu needs a usable GPU: CuPy finds no CUDA device" in err and not gpu_tables


def test_gpu_bench_refuses_plot_before_the_gpu_probe(gpu_tables, capsys, monkeypatch, tmp_path):
    from linscan import _dispatch

    monkeypatch.setattr(_dispatch, "gpu_status", lambda: pytest.fail("probed the GPU"))
    err = usage_error(["bench", "--gpu", "--plot", str(tmp_path / "b.png")], capsys)
    assert "--plot draws the CPU benchmark only" in err and not gpu_tables


def test_gpu_markdown_keeps_the_columns_gpu_check_reads():
    """benchmarks/gpu_check.sh greps these tables: | case | shape | op | ... (bandwidth),
    a dtype column more (dtypes), Table 1's T and C first, the peers by name."""
    from linscan._bench import common, gpu

    shape = [1, 1 << 26]
    report = {
        "environment": common.environment({"cupy": "x"}, {"device": "card", "sms": 1}),
        "bandwidth": [dict(case="one row", shape=shape, op="scan", ms=1.0, of_copy=0.5,
                           bytes_per_elem=12)],
        "dtypes": [dict(case="one row", shape=shape, dtype="float16", op="scan", ms=1.0,
                        of_copy=0.5, bytes_per_elem=6),
                   dict(case="one row", shape=shape, dtype="bfloat16", error="E: no")],
        "table1": [dict(T=65536, C=4, sequential_ms=2.0, parallel_ms=1.0, auto_ms=1.0,
                        speedup=2.0, auto_vs_best=1.0)],
        "latency": [dict(case="1 x 2^16", op="scan out=", us_per_call=9.0, gpu_us=8.0)],
        "peers": [dict(peer="cupy.cumsum", shape=shape[1:], peer_ms=1.0, ours_ms=2.0,
                       peer_over_ours=0.5), dict(peer="torch associative_scan", error="E")],
    }  # fmt: skip
    lines = gpu.markdown(report).splitlines()
    assert "| one row | 1x67108864 | scan | 12 | 1.000 | 0.50 |" in lines
    assert "| one row | 1x67108864 | float16 | scan | 6 | 1.000 | 0.50 |" in lines
    assert "| one row | 1x67108864 | bfloat16 | failed: E: no |  |  |  |" in lines
    assert "| 65536 | 4 | 2.0000 | 1.0000 | 1.0000 | 2.0x | 38.5x | 1.00 |" in lines
    assert "| 1 x 2^16 | scan out= | 9.0 | 8.0 |" in lines
    assert "| cupy.cumsum | 1.000 | 2.000 | 0.50 |" in lines
    assert json.loads(common.as_json(report)) == report


def test_bench_lanes_and_interleaved_pairs():
    import numpy as np

    from linscan._bench import common

    arr = np.arange(2 * 3 * 4).reshape(2, 3, 4)
    np.testing.assert_array_equal(common.lanes(arr, 1), arr[[0, 1]][:, :, [0, 3]])
    assert common.lanes(arr[:1], -1).shape == (1, 2, 4)
    order = []
    ops, yards = common.interleaved(
        lambda: order.append("op"), lambda: order.append("yard"), 2, warmup=1
    )
    assert order == ["op", "yard", "yard", "op", "yard", "op"] and len(ops) == len(yards) == 2
    assert common.select(["one row", "16 rows"], ["row"]) == ["one row", "16 rows"]


def test_tune_refuses_what_it_would_fail_on_after_measuring(tmp_path, monkeypatch):
    """A bad ``LINSCAN_NUM_THREADS`` and a cache folder that cannot be written end ``tune``
    before it measures, with usage and a message (status 2), not a traceback a minute in
    (a helper's probe)."""
    monkeypatch.setenv("LINSCAN_NUM_THREADS", "abc")
    done = run("tune", "--size", "2**10", "--repeat", "1", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "LINSCAN_NUM_THREADS must be a positive integer" in done.stderr
    monkeypatch.delenv("LINSCAN_NUM_THREADS")
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "a-file"))
    done = run("tune", "--size", "2**10", "--repeat", "1", "--quiet")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "cannot store the tuning file" in done.stderr and "XDG_CACHE_HOME" in done.stderr


def test_a_size_beyond_memory_is_a_message_not_a_traceback(monkeypatch, capsys):
    def no_memory(**kwargs):
        raise MemoryError("Unable to allocate 8.00 TiB")

    from linscan._bench import cpu as cpu_bench

    monkeypatch.setattr(cpu_bench, "run", no_memory)
    assert cli.main(["bench", "--size", "2**40", "--no-peers"]) == 1
    err = capsys.readouterr().err
    assert "not enough memory for --size 1099511627776" in err and "8.00 TiB" in err
