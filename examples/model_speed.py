"""The paper's model-speed comparison: SRU, QRNN (k = 2 and 10) and the GILR-LSTM, two layers
of 256 units on inputs of size 4, batch x length fixed at 65536; forward plus backward time
with linscan's ``method="parallel"`` against ``method="sequential"`` (the serial baseline).

    python examples/model_speed.py            # NumPy on the CPU
    python examples/model_speed.py --gpu      # CuPy on the current GPU

Only the recurrences differ between the two methods; the matrix products around them are the
same work. Prints the speedup table; the paper reports 9.21x for SRU at length 65536 (their
GPU, their kernels); its other cells are not reproduced here.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import linear_rnn as rnn  # noqa: E402

MODELS = {
    "SRU": lambda d, h, rng, xp: rnn.SRU(d, h, rng, xp),
    "QRNN k=2": lambda d, h, rng, xp: rnn.QRNN(d, h, rng, xp, k=2),
    "QRNN k=10": lambda d, h, rng, xp: rnn.QRNN(d, h, rng, xp, k=10),
    "GILR-LSTM": lambda d, h, rng, xp: rnn.GILRLSTM(d, h, rng, xp),
}
PAPER = {("SRU", 65536): 9.21}


def _sync(xp):
    if xp is not np:
        xp.cuda.Device().synchronize()


def time_model(name, length, total, hidden, d_in, method, xp, repeat):
    """Median seconds of one forward plus backward pass of two layers."""
    rng = np.random.default_rng(0)
    stack = rnn.Stack([MODELS[name](d_in, hidden, rng, xp), MODELS[name](hidden, hidden, rng, xp)],
                      method)  # fmt: skip
    x = xp.asarray(rng.standard_normal((length, total // length, d_in)), dtype=np.float32)
    times = []
    for _ in range(repeat + 1):  # the first pass compiles and warms up
        _sync(xp)
        start = time.perf_counter()
        y, caches = stack.forward(x)
        stack.backward(caches, xp.ones_like(y))
        _sync(xp)
        times.append(time.perf_counter() - start)
    return float(np.median(times[1:]))


def table(lengths=(16, 256, 4096, 65536), total=65536, hidden=256, d_in=4, xp=np, repeat=3,
          progress=print):  # fmt: skip
    rows = []
    for name in MODELS:
        for length in lengths:
            seq = time_model(name, length, total, hidden, d_in, "sequential", xp, repeat)
            par = time_model(name, length, total, hidden, d_in, "parallel", xp, repeat)
            rows.append(dict(model=name, length=length, batch=total // length, sequential_s=seq,
                             parallel_s=par, speedup=seq / par))  # fmt: skip
            paper = PAPER.get((name, length))
            progress(f"{name:10s} T={length:6d} B={total // length:5d}  sequential {seq:8.4f} s  "
                     f"parallel {par:8.4f} s  speedup {seq / par:5.2f}x"
                     + (f"  (paper {paper}x)" if paper else ""))  # fmt: skip
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpu", action="store_true")
    parser.add_argument("--total", type=int, default=65536, help="batch x length")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    xp = np
    if args.gpu:
        import cupy as xp
    lengths = [t for t in (16, 256, 4096, 65536) if t <= args.total]
    return table(lengths, args.total, args.hidden, xp=xp, repeat=args.repeat)


if __name__ == "__main__":
    main()
