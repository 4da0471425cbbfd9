"""``python -m linscan bench --gpu``: the GPU kernels as ratios measured in the same run.

Yardstick: a device-to-device copy (``cudaMemcpyAsync``) moving the same bytes as the
operation (forward 12 bytes per float32 element: read ``a``, ``x``, write ``h``; final state
8; backward 20: read ``a``, ``h``, ``grad_h``, write ``grad_x``, ``grad_a``), timed with
device events in interleaved pairs; "of copy" is copy time / our time (1.0 = as fast as a copy
of the same bytes). Inputs of 2^26 elements (256 MB per array) are far larger than the L2
cache. Also: the paper's Table 1 grid (parallel against the serial kernel, and ``"auto"``);
the wall time of small calls, Python included; and peers on the same data where installed
(``cupy.cumsum``, ``jax.lax.associative_scan``, PyTorch's ``associative_scan``).
"""

from __future__ import annotations

import os
import time
from functools import partial

import numpy as np

from ._api import final_state, scan, scan_backward

BIG = 1 << 26
PAPER_TABLE1 = {4: 38.5, 32: 41.8, 128: 17.5}  # speedup of their parallel kernel at T = 65536


def _events(fn, repeat: int) -> list:
    import cupy

    start, end = cupy.cuda.Event(), cupy.cuda.Event()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, end))
    return times


def _median_ms(fn, repeat=15, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    return float(np.median(_events(fn, repeat)))


def _against_copy(fn, moved: int, repeat=15) -> tuple:
    """(median ms of ``fn``, median of copy time / fn time over interleaved pairs) for a copy
    moving ``moved`` bytes (half read, half written)."""
    import cupy

    half = moved // 2
    src, dst = cupy.empty(half, np.uint8), cupy.empty(half, np.uint8)
    src.fill(1)
    copy = lambda: dst.data.copy_from_device_async(src.data, half)  # noqa: E731
    fn(), copy(), fn(), copy()
    ours, ratios = [], []
    for _ in range(repeat):
        (c,) = _events(copy, 1)
        (t,) = _events(fn, 1)
        ours.append(t)
        ratios.append(c / t)
    return float(np.median(ours)), float(np.median(ratios))


def _random(shape, dtype=np.float32, low=None, high=None, seed=0):
    import cupy

    rng = cupy.random.default_rng(seed)
    if low is None:
        return rng.standard_normal(shape, dtype=dtype)
    return (low + (high - low) * rng.random(shape, dtype=dtype)).astype(dtype)


def _check(h, a, x, axis, lanes=2):
    """Check two lanes against the float64 oracle (cheap enough for 2^26-step rows)."""
    import cupy

    from .testing import assert_scan_close

    idx = [slice(None)] * h.ndim
    for d in range(h.ndim):
        if d != axis % h.ndim:
            idx[d] = slice(0, min(lanes, h.shape[d]))
    idx = tuple(idx)
    assert_scan_close(cupy.asnumpy(h[idx]), cupy.asnumpy(a[idx]), cupy.asnumpy(x[idx]), axis=axis)


BIG_CASES = (
    ("one row 1 x 2^26", (1, BIG), -1),
    ("time-major 2^16 x 1024 ch", (1 << 16, 1024), 0),
    ("1024 rows x 2^16", (1024, 1 << 16), -1),
)


def bandwidth_rows(progress, repeat=15) -> list:
    rows = []
    for name, shape, axis in BIG_CASES:
        a = _random(shape, low=0.999, high=1.0, seed=1)
        x = _random(shape, seed=2)
        h = scan(a, x, axis=axis)
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
            rows.append(dict(case=name, op=op, ms=ms, of_copy=ratio, bytes_per_elem=per))
            progress(f"  {name:28s} {op:14s} {ms:8.3f} ms  {ratio:5.2f} of copy")
    return rows


DTYPE_CASES = (
    ("one row 1 x 2^26", (1, BIG), -1),
    ("time-major 2^16 x 1024 ch", (1 << 16, 1024), 0),
)


def _typed(shape, dtype, low=None, high=None, seed=0):
    """Random values of any supported dtype (drawn in float32; complex: a small rotation)."""
    values = _random(shape, np.float32, low, high, seed)
    if np.dtype(dtype).kind == "c":
        import cupy

        values = values * cupy.exp(1j * _random(shape, np.float32, -0.01, 0.01, seed + 1))
    return values.astype(dtype)


def dtype_rows(progress, repeat=10) -> list:
    """Every dtype (and float32 with resets) against a copy of the bytes it actually moves:
    forward 3 arrays of the dtype (plus 1 byte per element of resets mask); backward 4 of
    the dtype plus grad_a in the arithmetic dtype (float32 for 16-bit)."""
    from . import _dtypes

    rows = []
    names = ("float16", "bfloat16", "float32", "float64", "complex64", "complex128")
    for name, shape, axis in DTYPE_CASES:
        for label in names + ("float32 + resets",):
            try:
                dtype = np.dtype(_dtypes.BFLOAT16 if label == "bfloat16" else label.split()[0])
                a = _typed(shape, dtype, 0.999, 1.0, seed=1)
                x = _typed(shape, dtype, seed=2)
                resets = None
                if "resets" in label:
                    resets = _random(shape, np.float32, 0.0, 1.0, seed=4) < 1e-3
                h = scan(a, x, axis=axis, resets=resets)
                if resets is None:
                    _check(h, a, x, axis)
                gh = _typed(shape, dtype, seed=3)
                gx = h.copy()
                n, size = a.size, dtype.itemsize
                wide = _dtypes.accumulator(dtype).itemsize
                extra = 1 if resets is not None else 0
                ops = (
                    ("scan", 3 * size + extra,
                     partial(scan, a, x, axis=axis, out=h, resets=resets)),
                    ("scan_backward", 4 * size + wide + extra,
                     partial(scan_backward, a, h, gh, axis=axis, out=(None, gx, None),
                             resets=resets)),
                )  # fmt: skip
                for op, per, fn in ops:
                    ms, ratio = _against_copy(fn, per * n, repeat)
                    rows.append(dict(case=name, dtype=label, op=op, ms=ms, of_copy=ratio,
                                     bytes_per_elem=per))  # fmt: skip
                    progress(
                        f"  {name:26s} {label:17s} {op:13s} {ms:8.3f} ms  {ratio:5.2f} of copy"
                    )
            except Exception as exc:  # an unsupported dtype on this CuPy: recorded, not fatal
                rows.append(dict(case=name, dtype=label, error=f"{type(exc).__name__}: {exc}"))
                progress(f"  {name:26s} {label:17s} failed: {type(exc).__name__}: {exc}")
    return rows


def table1_rows(progress, repeat=15) -> list:
    """Batch 1, T steps, C channels, time-major (the paper's layout)."""
    rows = []
    for C in (4, 32, 128):
        for T in (16, 256, 4096, 65536):
            a = _random((T, 1, C), low=0.9, high=1.0, seed=T + C)
            x = _random((T, 1, C), seed=T * C)
            h = scan(a, x, axis=0, method="sequential")
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


def latency_rows(progress, calls=2000) -> list:
    """Wall time per call of back-to-back small calls, Python included (then one sync)."""
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
            gpu_us = _median_ms(fn, 50) * 1e3
            rows.append(dict(case=name, op=label, us_per_call=us, gpu_us=gpu_us))
            progress(f"  {name:14s} {label:14s} {us:7.1f} us/call (GPU {gpu_us:6.1f} us)")
    return rows


def peer_rows(progress, repeat=10) -> list:
    """Same data, same recurrence: cupy.cumsum (a = 1), JAX and PyTorch associative scans."""
    import cupy

    rows = []
    n = BIG
    a = _random((n,), low=0.999, high=1.0, seed=5)
    x = _random((n,), seed=6)
    h = scan(a, x)
    ours = _median_ms(lambda: scan(a, x, out=h), repeat)
    out = cupy.empty_like(x)
    cumsum = _median_ms(lambda: cupy.cumsum(x, out=out), repeat)
    ours_sum = _median_ms(lambda: scan(1.0, x, out=out), repeat)
    rows.append(dict(peer="cupy.cumsum", shape=[n], peer_ms=cumsum, ours_ms=ours_sum,
                     peer_over_ours=cumsum / ours_sum))  # fmt: skip
    progress(f"  cupy.cumsum {cumsum:.3f} ms, scan(1.0, x) {ours_sum:.3f} ms")

    def combine(left, right, mul, add):
        a_l, x_l = left
        a_r, x_r = right
        return mul(a_r, a_l), add(mul(a_r, x_l), x_r)

    try:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
        import jax
        import jax.numpy as jnp

        ja, jx = jax.dlpack.from_dlpack(a), jax.dlpack.from_dlpack(x)
        fn = jax.jit(lambda a_, x_: jax.lax.associative_scan(
            lambda l, r: combine(l, r, jnp.multiply, jnp.add), (a_, x_))[1])  # fmt: skip
        got = fn(ja, jx).block_until_ready()
        np.testing.assert_allclose(np.asarray(got[-4:]), cupy.asnumpy(h[-4:]), rtol=1e-3, atol=1e-3)
        times = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            fn(ja, jx).block_until_ready()
            times.append((time.perf_counter() - t0) * 1e3)
        peer = float(np.median(times))
        rows.append(dict(peer=f"jax.lax.associative_scan (jax {jax.__version__})", shape=[n],
                         peer_ms=peer, ours_ms=ours, peer_over_ours=peer / ours))  # fmt: skip
        progress(f"  jax associative_scan {peer:.3f} ms vs ours {ours:.3f} ms")
    except Exception as exc:  # not installed, or no GPU backend for it
        rows.append(dict(peer="jax.lax.associative_scan", error=f"{type(exc).__name__}: {exc}"))
    try:
        import torch
        from torch._higher_order_ops.associative_scan import associative_scan

        ta, tx = torch.from_dlpack(a), torch.from_dlpack(x)

        def torch_fn():
            return associative_scan(
                lambda l, r: combine(l, r, torch.mul, torch.add), (ta, tx), dim=0,
                combine_mode="generic",
            )[1]  # fmt: skip

        got = torch_fn()
        torch.cuda.synchronize()
        np.testing.assert_allclose(
            got[-4:].cpu().numpy(), cupy.asnumpy(h[-4:]), rtol=1e-3, atol=1e-3
        )
        times = []
        for _ in range(repeat):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            torch_fn()
            torch.cuda.synchronize()
            times.append((time.perf_counter() - t0) * 1e3)
        peer = float(np.median(times))
        name = f"torch associative_scan (torch {torch.__version__}, eager)"
        rows.append(dict(peer=name, shape=[n], peer_ms=peer, ours_ms=ours,
                         peer_over_ours=peer / ours))  # fmt: skip
        progress(f"  torch associative_scan {peer:.3f} ms vs ours {ours:.3f} ms")
    except Exception as exc:
        rows.append(dict(peer="torch associative_scan", error=f"{type(exc).__name__}: {exc}"))
    return rows


def environment() -> dict:
    import cupy

    props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
    name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return dict(device=name, sms=props["multiProcessorCount"], cupy=cupy.__version__,
                cuda_runtime=cupy.cuda.runtime.runtimeGetVersion())  # fmt: skip


def run(progress=print, parts=("bandwidth", "dtypes", "table1", "latency", "peers")) -> dict:
    report = dict(environment=environment())
    for part, fn in (("bandwidth", bandwidth_rows), ("dtypes", dtype_rows),
                     ("table1", table1_rows), ("latency", latency_rows),
                     ("peers", peer_rows)):  # fmt: skip
        if part in parts:
            progress(f"{part}:")
            report[part] = fn(progress)
    return report


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"GPU: {env['device']} ({env['sms']} SMs), CuPy {env['cupy']}", ""]
    if "bandwidth" in report:
        lines += ["| case | op | bytes/elem | ms | of D2D copy |", "|---|---|---|---|---|"]
        for r in report["bandwidth"]:
            lines.append(f"| {r['case']} | {r['op']} | {r['bytes_per_elem']} | {r['ms']:.3f} | "
                         f"{r['of_copy']:.2f} |")  # fmt: skip
        lines.append("")
    if "dtypes" in report:
        lines += ["| case | dtype | op | bytes/elem | ms | of D2D copy |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for r in report["dtypes"]:
            if "error" in r:
                lines.append(f"| {r['case']} | {r['dtype']} | failed: {r['error'][:100]} | | | |")
            else:
                lines.append(f"| {r['case']} | {r['dtype']} | {r['op']} | {r['bytes_per_elem']} "
                             f"| {r['ms']:.3f} | {r['of_copy']:.2f} |")  # fmt: skip
        lines.append("")
    if "table1" in report:
        lines += ["| T | C | sequential ms | parallel ms | auto ms | speedup | paper |"
                  " auto / best |", "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for r in report["table1"]:
            paper = f"{PAPER_TABLE1[r['C']]}x" if r["T"] == 65536 else ""
            lines.append(
                f"| {r['T']} | {r['C']} | {r['sequential_ms']:.4f} | {r['parallel_ms']:.4f} | "
                f"{r['auto_ms']:.4f} | {r['speedup']:.1f}x | {paper} | {r['auto_vs_best']:.2f} |"
            )
        lines.append("")
    if "latency" in report:
        lines += [
            "| small call | op | us per call (Python included) | GPU us |",
            "|---|---|---|---|",
        ]
        for r in report["latency"]:
            lines.append(
                f"| {r['case']} | {r['op']} | {r['us_per_call']:.1f} | {r['gpu_us']:.1f} |"
            )
        lines.append("")
    if "peers" in report:
        lines += ["| peer | peer ms | ours ms | peer / ours |", "|---|---|---|---|"]
        for r in report["peers"]:
            if "error" in r:
                lines.append(f"| {r['peer']} | failed: {r['error'][:120]} | | |")
            else:
                lines.append(f"| {r['peer']} | {r['peer_ms']:.3f} | {r['ours_ms']:.3f} | "
                             f"{r['peer_over_ours']:.2f} |")  # fmt: skip
    return "\n".join(lines)
