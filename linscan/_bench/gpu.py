"""``python -m linscan bench --gpu``: the GPU kernels as ratios measured in the same run.

Yardstick: a device-to-device copy (``cudaMemcpyAsync``) moving the same bytes as the
operation (forward 12 bytes per float32 element: read ``a``, ``x``, write ``h``; final state
8; backward 20: read ``a``, ``h``, ``grad_h``, write ``grad_x``, ``grad_a``), timed with
device events in interleaved pairs; "of copy" is copy time / our time (1.0 = as fast as a copy
of the same bytes). The layout cases are the CPU benchmark's, at 2^26 elements by default
(256 MB per float32 array, far larger than the L2 cache): every operation in float32, and
every dtype (and float32 with resets) against the bytes it moves. Also: the paper's Table 1
grid (parallel against the serial kernel, and ``"auto"``); the wall time of small calls,
Python included; and peers on a one-row array of the same size where installed
(``cupy.cumsum``, CUB's scan through ``cuda.compute``, ``jax.lax.associative_scan``,
PyTorch's ``associative_scan``).

``--case`` chooses among the layout cases and the two fixed grids, ``"paper table 1"`` and
``"small calls"`` (their sizes are their own; ``--size`` sets the layout cases' and the
peers'). Without ``--case``: one row, 1024 rows and 1024 channels (the dtype table: one row
and 1024 channels), both grids, and the peers; with it, the chosen ones, and the peers when
"one row" is chosen. ``--repeat`` sets the pairs (or calls) behind every median; without it,
15 for bandwidth and Table 1, 10 for dtypes and peers, 50 for a small call's GPU time.
"""

from __future__ import annotations

import os
import time
from functools import partial

import numpy as np

from .. import _host
from .._api import final_state, scan, scan_backward
from . import common

DEFAULT_SIZE = 1 << 26
PAPER_TABLE1 = {4: 38.5, 32: 41.8, 128: 17.5}  # speedup of their parallel kernel at T = 65536
TABLE1, SMALL_CALLS = "paper table 1", "small calls"
#: What ``--case`` chooses from, and what runs without it.
CASE_NAMES = tuple(c.name for c in common.CASES) + (TABLE1, SMALL_CALLS)
DEFAULT_CASES = ("one row", "1024 rows", "1024 channels", TABLE1, SMALL_CALLS)
DTYPE_CASES = ("one row", "1024 channels")  # the dtype table's cases without --case


def _device_clock(fn) -> float:
    """Seconds of one call of ``fn`` between two device events."""
    import cupy

    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    start.record()
    fn()
    end.record()
    end.synchronize()
    return cupy.cuda.get_elapsed_time(start, end) / 1e3


def _median_ms(fn, repeat) -> float:
    return common.median_time(fn, repeat, _device_clock, warmup=2) * 1e3


def _against_copy(fn, moved: int, repeat) -> tuple:
    """(median ms of ``fn``, median of copy time / fn time over interleaved pairs) for a copy
    moving ``moved`` bytes (half read, half written)."""
    import cupy

    half = moved // 2
    src, dst = cupy.empty(half, np.uint8), cupy.empty(half, np.uint8)
    src.fill(1)
    copy = lambda: dst.data.copy_from_device_async(src.data, half)  # noqa: E731
    ours, copies = common.interleaved(fn, copy, repeat, _device_clock, warmup=2)
    return common.median(ours) * 1e3, common.median([c / t for t, c in zip(ours, copies)])


def _random(shape, dtype=np.float32, low=None, high=None, seed=0):
    import cupy

    rng = cupy.random.default_rng(seed)
    if low is None:
        return rng.standard_normal(shape, dtype=dtype)
    return (low + (high - low) * rng.random(shape, dtype=dtype)).astype(dtype)


def _check(h, a, x, axis):
    """Check the first and last lanes against the float64 oracle."""
    import cupy

    from ..testing import assert_scan_close

    h, a, x = (cupy.asnumpy(common.lanes(v, axis)) for v in (h, a, x))
    assert_scan_close(h, a, x, axis=axis)


def _shape_text(shape) -> str:
    return "x".join(map(str, shape))


def bandwidth_rows(cases, size, progress, repeat=15, check=True) -> list:
    rows = []
    for case in cases:
        shape = case.shape(size)
        axis = case.axis
        a = _random(shape, low=0.999, high=1.0, seed=1)
        x = _random(shape, seed=2)
        h = scan(a, x, axis=axis)
        if check:
            _check(h, a, x, axis)
        gh = _random(shape, seed=3)
        ga, gx = h.copy(), h.copy()
        n = a.size
        ops = (
            ("scan", 12, partial(scan, a, x, axis=axis, out=h)),
            ("scan reverse", 12, partial(scan, a, x, axis=axis, reverse=True, out=h)),
            ("final_state", 8, partial(final_state, a, x, axis=axis)),
            ("scan_backward", 20, partial(scan_backward, a, h, gh, axis=axis, out=(ga, gx, None))),
        )
        for op, per, fn in ops:
            ms, ratio = _against_copy(fn, per * n, repeat)
            rows.append(dict(case=case.name, shape=list(shape), op=op, ms=ms, of_copy=ratio,
                             bytes_per_elem=per))  # fmt: skip
            progress(f"  {case.name:14s} {op:14s} {ms:8.3f} ms  {ratio:5.2f} of copy")
    return rows


def _typed(shape, dtype, low=None, high=None, seed=0):
    """Random values of any supported dtype (drawn in float32; complex: a small rotation)."""
    values = _random(shape, np.float32, low, high, seed)
    if np.dtype(dtype).kind == "c":
        import cupy

        values = values * cupy.exp(1j * _random(shape, np.float32, -0.01, 0.01, seed + 1))
    return values.astype(dtype)


def dtype_rows(cases, size, progress, repeat=10, check=True) -> list:
    """Every dtype (and float32 with resets) against a copy of the bytes it actually moves:
    forward 3 arrays of the dtype (plus 1 byte per element of resets mask); backward 4 of
    the dtype plus grad_a in the arithmetic dtype (float32 for 16-bit)."""
    from .. import _dtypes

    rows = []
    names = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
    for case in cases:
        shape, axis = case.shape(size), case.axis
        for label in names + ("float32 + resets",):
            try:
                dtype = np.dtype(_dtypes.BFLOAT16 if label == "bfloat16" else label.split()[0])
                a = _typed(shape, dtype, 0.999, 1.0, seed=1)
                x = _typed(shape, dtype, seed=2)
                resets = None
                if "resets" in label:
                    resets = _random(shape, np.float32, 0.0, 1.0, seed=4) < 1e-3
                h = scan(a, x, axis=axis, resets=resets)
                if check and resets is None:
                    _check(h, a, x, axis)
                gh = _typed(shape, dtype, seed=3)
                gx = h.copy()
                n, itemsize = a.size, dtype.itemsize
                wide = _dtypes.accumulator(dtype).itemsize
                extra = 1 if resets is not None else 0
                ops = (
                    ("scan", 3 * itemsize + extra,
                     partial(scan, a, x, axis=axis, out=h, resets=resets)),
                    ("scan_backward", 4 * itemsize + wide + extra,
                     partial(scan_backward, a, h, gh, axis=axis, out=(None, gx, None),
                             resets=resets)),
                )  # fmt: skip
                for op, per, fn in ops:
                    ms, ratio = _against_copy(fn, per * n, repeat)
                    rows.append(dict(case=case.name, shape=list(shape), dtype=label, op=op,
                                     ms=ms, of_copy=ratio, bytes_per_elem=per))  # fmt: skip
                    progress(
                        f"  {case.name:14s} {label:17s} {op:13s} {ms:8.3f} ms  "
                        f"{ratio:5.2f} of copy"
                    )
            except Exception as exc:  # an unsupported dtype on this CuPy: recorded, not fatal
                error = f"{type(exc).__name__}: {exc}"
                rows.append(dict(case=case.name, shape=list(shape), dtype=label, error=error))
                progress(f"  {case.name:14s} {label:17s} failed: {error}")
    return rows


def table1_rows(progress, repeat=15, check=True) -> list:
    """Batch 1, T steps, C channels, time-major (the paper's layout)."""
    rows = []
    for C in (4, 32, 128):
        for T in (16, 256, 4096, 65536):
            a = _random((T, 1, C), low=0.9, high=1.0, seed=T + C)
            x = _random((T, 1, C), seed=T * C)
            h = scan(a, x, axis=0, method="sequential")
            if check:
                _check(scan(a, x, axis=0, method="parallel"), a, x, 0)
            times = {
                m: _median_ms(partial(scan, a, x, axis=0, method=m, out=h), repeat)
                for m in ("sequential", "parallel", "auto")
            }
            best = min(times["sequential"], times["parallel"])
            rows.append(
                dict(
                    T=T, C=C, **{f"{m}_ms": t for m, t in times.items()},
                    speedup=times["sequential"] / times["parallel"],
                    auto_vs_best=times["auto"] / best,
                )
            )  # fmt: skip
            progress(
                f"  T={T:6d} C={C:4d} seq {times['sequential']:8.4f} par {times['parallel']:8.4f} "
                f"auto {times['auto']:8.4f} ms  speedup {rows[-1]['speedup']:6.1f}x"
            )
    return rows


def latency_rows(progress, repeat=50, calls=2000) -> list:
    """Wall time per call of ``calls`` back-to-back small calls, Python included (then one
    sync), and the median GPU time of ``repeat`` calls."""
    import cupy

    rows = []
    for name, shape, axis in (
        ("1 x 2^16", (1, 1 << 16), -1),
        ("2^16 x 1", (1 << 16,), 0),
        ("256 x 256", (256, 256), -1),
        ("2^12 x 16 ch", (4096, 16), 0),
        ("1 x 1024", (1, 1024), -1),
    ):
        a = _random(shape, low=0.9, high=1.0)
        x = _random(shape)
        h = cupy.empty_like(x)
        for label, fn in (
            ("scan out=", partial(scan, a, x, axis=axis, out=h)),
            ("scan", partial(scan, a, x, axis=axis)),
            ("scan scalar a", partial(scan, 0.9, x, axis=axis, out=h)),
            ("scan_backward", partial(scan_backward, a, h, x, axis=axis)),
        ):
            for _ in range(50):
                fn()
            cupy.cuda.Device().synchronize()
            t0 = time.perf_counter()
            for _ in range(calls):
                fn()
            cupy.cuda.Device().synchronize()
            us = (time.perf_counter() - t0) / calls * 1e6
            gpu_us = _median_ms(fn, repeat) * 1e3
            rows.append(dict(case=name, op=label, us_per_call=us, gpu_us=gpu_us))
            progress(f"  {name:14s} {label:14s} {us:7.1f} us/call (GPU {gpu_us:6.1f} us)")
    return rows


def peer_rows(size, progress, repeat=10) -> list:
    """Same data, same recurrence, one row of ``size`` steps: cupy.cumsum (a = 1), CUB's
    inclusive_scan with the affine operator (``cuda.compute``), JAX and PyTorch associative
    scans. A peer that fails (not installed, no GPU backend for it) is a row with its error."""
    import cupy

    a = _random((size,), low=0.999, high=1.0, seed=5)
    x = _random((size,), seed=6)
    h = scan(a, x)
    ours = _median_ms(lambda: scan(a, x, out=h), repeat)

    def row(peer, peer_ms, ours_ms):
        return dict(peer=peer, shape=[size], peer_ms=peer_ms, ours_ms=ours_ms,
                    peer_over_ours=peer_ms / ours_ms)  # fmt: skip

    def cumsum():
        out = cupy.empty_like(x)
        theirs = _median_ms(lambda: cupy.cumsum(x, out=out), repeat)
        ours_sum = _median_ms(lambda: scan(1.0, x, out=out), repeat)
        progress(f"  cupy.cumsum {theirs:.3f} ms, scan(1.0, x) {ours_sum:.3f} ms")
        return row("cupy.cumsum", theirs, ours_sum)

    def associative_scan():
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax

        ja, jx = jax.dlpack.from_dlpack(a), jax.dlpack.from_dlpack(x)
        fn = common.jax_scan(0)
        got = fn(ja, jx).block_until_ready()
        np.testing.assert_allclose(np.asarray(got[-4:]), cupy.asnumpy(h[-4:]), rtol=1e-3, atol=1e-3)
        theirs = common.median_time(lambda: fn(ja, jx).block_until_ready(), repeat) * 1e3
        progress(f"  jax associative_scan {theirs:.3f} ms vs ours {ours:.3f} ms")
        return row(f"jax.lax.associative_scan (jax {jax.__version__})", theirs, ours)

    def cub_scan():
        # CUB's single-pass scan (decoupled look-back) with the same affine operator, through
        # cuda.compute (package cuda-cccl): the generic GPU scan a user could pick instead.
        from importlib.metadata import version

        import cuda.compute as compute

        @compute.gpu_struct
        class Map:
            A: np.float32
            B: np.float32

        def then(p, q):  # p's steps, then q's
            return Map(q.A * p.A, q.A * p.B + q.B)

        out = cupy.empty(size, Map.dtype)
        pairs = compute.ZipIterator(a, x)  # (a[t], x[t]) read as the map of step t
        start = Map(1.0, 0.0)  # the identity map

        def run():
            compute.inclusive_scan(pairs, out, then, start, size)

        run()
        got = out.view(np.float32)[1::2]  # the B of each prefix map: h[t]
        np.testing.assert_allclose(
            cupy.asnumpy(got[-4:]), cupy.asnumpy(h[-4:]), rtol=1e-3, atol=1e-3
        )
        theirs = _median_ms(run, repeat)
        progress(f"  CUB inclusive_scan {theirs:.3f} ms vs ours {ours:.3f} ms")
        name = f"CUB inclusive_scan, affine struct (cuda.compute, cuda-cccl {version('cuda-cccl')})"
        return row(name, theirs, ours)

    def torch_associative_scan():
        import torch
        from torch._higher_order_ops.associative_scan import associative_scan

        ta, tx = torch.from_dlpack(a), torch.from_dlpack(x)
        combine = partial(common.combine, mul=torch.mul, add=torch.add)

        def torch_fn():
            return associative_scan(combine, (ta, tx), dim=0, combine_mode="generic")[1]

        got = torch_fn()
        torch.cuda.synchronize()
        np.testing.assert_allclose(
            got[-4:].cpu().numpy(), cupy.asnumpy(h[-4:]), rtol=1e-3, atol=1e-3
        )
        theirs = common.median_time(lambda: (torch_fn(), torch.cuda.synchronize()), repeat)
        progress(f"  torch associative_scan {theirs * 1e3:.3f} ms vs ours {ours:.3f} ms")
        name = f"torch associative_scan (torch {torch.__version__}, eager)"
        return row(name, theirs * 1e3, ours)

    found = common.peers(
        {
            "cupy.cumsum": cumsum,
            "CUB inclusive_scan": cub_scan,
            "jax.lax.associative_scan": associative_scan,
            "torch associative_scan": torch_associative_scan,
        },
        failures=(Exception,),
    )
    return [
        dict(peer=name, error=str(r)) if isinstance(r, common.PeerFailed) else r
        for name, r in found.items()
    ]


def environment() -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    versions = {"cupy": cupy.__version__, "cuda_runtime": cupy.cuda.runtime.runtimeGetVersion()}
    return common.environment(versions, {"device": name, "sms": props["multiProcessorCount"]})


def run(size=None, repeat=None, cases=None, peers=True, check=True, progress=print) -> dict:
    """Benchmark the named ``cases`` (default :data:`DEFAULT_CASES`) at ``size`` elements per
    array (default 2**26); ``repeat`` pairs per median (default: each table's own). A report:
    ``environment`` and a list of rows per table that ran (``bandwidth``, ``dtypes``,
    ``table1``, ``latency``, ``peers``)."""
    size = size or DEFAULT_SIZE
    chosen = cases or DEFAULT_CASES
    layouts = [c for c in common.CASES if c.name in chosen]
    dtype_layouts = layouts if cases else [c for c in layouts if c.name in DTYPE_CASES]
    counts = {"repeat": repeat} if repeat else {}
    tables = (
        ("bandwidth", layouts, partial(bandwidth_rows, layouts, size, check=check)),
        ("dtypes", dtype_layouts, partial(dtype_rows, dtype_layouts, size, check=check)),
        ("table1", TABLE1 in chosen, partial(table1_rows, check=check)),
        ("latency", SMALL_CALLS in chosen, latency_rows),
        ("peers", peers and "one row" in chosen, partial(peer_rows, size)),
    )
    report = dict(environment=environment())
    for name, wanted, rows in tables:
        if wanted:
            progress(f"{name}:")
            report[name] = rows(progress, **counts)
    return report


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"{env['command']}: {env['device']} ({env['sms']} SMs), CuPy {env['cupy']}",
        f"host CPU: {_host.summary(env)}",
        "",
    ]
    tables = []
    if "bandwidth" in report:
        head = ["case", "shape", "op", "bytes/elem", "ms", "of D2D copy"]
        tables.append(common.markdown_table(head, [
            [r["case"], _shape_text(r["shape"]), r["op"], r["bytes_per_elem"], f"{r['ms']:.3f}",
             f"{r['of_copy']:.2f}"]
            for r in report["bandwidth"]
        ]))  # fmt: skip
    if "dtypes" in report:
        head = ["case", "shape", "dtype", "op", "bytes/elem", "ms", "of D2D copy"]
        tables.append(common.markdown_table(head, [
            [r["case"], _shape_text(r["shape"]), r["dtype"], f"failed: {r['error'][:100]}",
             "", "", ""] if "error" in r else
            [r["case"], _shape_text(r["shape"]), r["dtype"], r["op"], r["bytes_per_elem"],
             f"{r['ms']:.3f}", f"{r['of_copy']:.2f}"]
            for r in report["dtypes"]
        ]))  # fmt: skip
    if "table1" in report:
        head = ["T", "C", "sequential ms", "parallel ms", "auto ms", "speedup", "paper",
                "auto / best"]  # fmt: skip
        tables.append(common.markdown_table(head, [
            [r["T"], r["C"], f"{r['sequential_ms']:.4f}", f"{r['parallel_ms']:.4f}",
             f"{r['auto_ms']:.4f}", f"{r['speedup']:.1f}x",
             f"{PAPER_TABLE1[r['C']]}x" if r["T"] == 65536 else "", f"{r['auto_vs_best']:.2f}"]
            for r in report["table1"]
        ]))  # fmt: skip
    if "latency" in report:
        head = ["small call", "op", "us per call (Python included)", "GPU us"]
        tables.append(common.markdown_table(head, [
            [r["case"], r["op"], f"{r['us_per_call']:.1f}", f"{r['gpu_us']:.1f}"]
            for r in report["latency"]
        ]))  # fmt: skip
    if "peers" in report:
        head = ["peer", "peer ms", "ours ms", "peer / ours"]
        tables.append(common.markdown_table(head, [
            [r["peer"], f"failed: {r['error'][:120]}", "", ""] if "error" in r else
            [r["peer"], f"{r['peer_ms']:.3f}", f"{r['ours_ms']:.3f}",
             f"{r['peer_over_ours']:.2f}"]
            for r in report["peers"]
        ]))  # fmt: skip
    return "\n".join(lines + [line for table in tables for line in table + [""]]).rstrip("\n")
