"""The CPU summary kernel, serial walk against 8-chain blocks, up and down, as ratios to a copy:
``LINSCAN_NUM_THREADS=1 python benchmarks/summary_kernel.py``
(benchmarks/cpu-2core-summary-2026-12-05.md)."""
import time, numpy as np
from linscan import _api
def best(f, n=7):
    ts=[]
    for _ in range(n):
        t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
    return min(ts)
rng=np.random.default_rng(0)
for dtype in (np.float32, np.float64):
  for shape in [(1, 1<<21), (64, 1<<15)]:
    a = rng.uniform(0.99, 1, shape).astype(dtype); x = rng.standard_normal(shape).astype(dtype)
    buf = np.empty_like(x); c = best(lambda: np.copyto(buf, x))
    out = []
    for down in (False, True):
        for m in ("sequential", "parallel"):
            f = lambda: _api.summary(a, x, axis=1, reverse=down, method=m)
            f(); out.append(f"{'down' if down else 'up'}-{m[:3]}={best(f)/c:.2f}")
    print(np.dtype(dtype).name, shape, " ".join(out))
