"""Dask step 1 (a chunk's map) and whole linscan.dask calls, as ratios to copies of the same
bytes: ``python benchmarks/dask_summary.py LABEL`` (benchmarks/cpu-2core-summary-2026-12-05.md)."""
import sys, time, numpy as np, dask.array as da
import linscan.dask as ld
from linscan.dask._chunks import forward_map, backward_map
def best(f, n=5):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return min(ts)
rng = np.random.default_rng(0)
res = []
for label, shape, axis, chunks in [("rows f32", (4, 1 << 22), 1, (4, 1 << 18)),
                                   ("cols f64", (1 << 20, 16), 0, (1 << 16, 16))]:
    dtype = np.float32 if "f32" in label else np.float64
    a = rng.uniform(0.99, 1, shape).astype(dtype); x = rng.standard_normal(shape).astype(dtype)
    A, X = da.from_array(a, chunks=chunks), da.from_array(x, chunks=chunks)
    ca = a[:, :chunks[1]] if axis == 1 else a[:chunks[0]]
    cx = x[:, :chunks[1]] if axis == 1 else x[:chunks[0]]
    acc = np.dtype(dtype)
    buf = np.empty_like(cx)
    fs = {
        "step1": lambda: forward_map(ca, cx, None, axis=axis, reverse=False, method="auto", acc=acc),
        "step1_back": lambda: backward_map(ca, cx, None, axis=axis, reverse=False, method="auto", acc=acc),
        "final_state": lambda: ld.final_state(A, X, axis=axis).compute(),
        "scan": lambda: ld.scan(A, X, axis=axis).compute(),
    }
    for f in fs.values(): f()
    chunk_copy = best(lambda: np.copyto(buf, cx))
    big = np.empty_like(x); full_copy = best(lambda: np.copyto(big, x))
    r = {k: best(f) / (chunk_copy if k.startswith("step1") else full_copy) for k, f in fs.items()}
    res.append(label + ": " + " ".join(f"{k}={v:.2f}" for k, v in r.items()))
print(sys.argv[1] if len(sys.argv) > 1 else "", " | ".join(res))
