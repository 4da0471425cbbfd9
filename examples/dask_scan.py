"""Filter a long signal stored on disk in chunks, without ever holding it in memory.

A multichannel recording lies in a Zarr store, chunked along time. A zero-phase low-pass
filter (a one-pole smoother run forwards, then backwards over the result, as
``scipy.signal.filtfilt`` does) becomes two lazy scans of ``linscan.dask``; ``dask`` reads
the store chunk by chunk and writes the filtered signal into a second store. Memory stays at
a few chunks per thread whatever the length.

    pip install "linscan[dask]" zarr
    python examples/dask_scan.py                     # 8 channels x 2**25 samples, 1 GiB
    python examples/dask_scan.py --samples 2**28     # 8 GiB: more than many laptops hold

Checks a window in the middle of the result against ``linscan.scan`` on the window's
in-memory slice (started from the lazily computed states at its edges), and prints the time
and the throughput.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import dask.array as da
import numpy as np
import zarr

import linscan
import linscan.dask


def make_recording(path: Path, channels: int, samples: int, chunk: int) -> None:
    """A noisy multichannel test signal (slow sines plus white noise) written chunk by chunk."""
    store = zarr.create_array(path, shape=(channels, samples), chunks=(channels, chunk),
                              dtype="float32")  # fmt: skip
    rng = np.random.default_rng(0)
    freqs = rng.uniform(1e-6, 1e-5, (channels, 1))
    for start in range(0, samples, chunk):
        t = np.arange(start, min(start + chunk, samples))
        clean = np.sin(2 * np.pi * freqs * t)
        store[:, start : start + len(t)] = clean + rng.normal(0, 0.5, (channels, len(t)))


def smooth(signal, decay: float):
    """Zero-phase one-pole low-pass filter along the last axis: forward, then backward."""
    gain = np.float32(1 - decay)
    forward = linscan.dask.scan(np.float32(decay), gain * signal)
    return linscan.dask.scan(np.float32(decay), gain * forward, reverse=True)


def check_window(recording, filtered, decay: float, start: int, width: int) -> float:
    """The largest difference, in a window of the result, from in-memory scans of the window
    started from the right states (computed lazily from the chunks before and after it)."""
    gain = np.float32(1 - decay)
    a = np.float32(decay)
    signal = da.from_zarr(recording)
    before = linscan.dask.final_state(a, gain * signal[:, :start])
    forward = linscan.dask.scan(a, gain * signal)
    after = linscan.dask.final_state(a, gain * forward[:, start + width :], reverse=True)
    span = slice(start, start + width)
    window, h0, h_end, got = da.compute(signal[:, span], before, after,
                                        da.from_zarr(filtered)[:, span])  # fmt: skip
    fwd = linscan.scan(a, gain * window, h0)
    want = linscan.scan(a, gain * fwd, h_end, reverse=True)
    return float(np.max(np.abs(got - want)) / np.max(np.abs(want)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--channels", type=int, default=8)
    parser.add_argument("--samples", type=lambda s: int(eval(s)), default=2**25)
    parser.add_argument("--chunk", type=lambda s: int(eval(s)), default=2**21)
    parser.add_argument("--decay", type=float, default=0.999)
    parser.add_argument("--dir", type=Path, default=None, help="where the stores go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        recording, filtered = Path(tmp) / "recording.zarr", Path(tmp) / "filtered.zarr"
        size = args.channels * args.samples * 4 / 2**30
        print(f"writing a {args.channels} x {args.samples} float32 recording ({size:.2f} GiB) "
              f"in chunks of {args.chunk} samples")  # fmt: skip
        make_recording(recording, args.channels, args.samples, args.chunk)
        start = time.perf_counter()
        signal = da.from_zarr(recording)
        smooth(signal, args.decay).to_zarr(filtered)
        elapsed = time.perf_counter() - start
        print(f"filtered forwards and backwards in {elapsed:.1f} s "
              f"({args.channels * args.samples / elapsed / 1e6:.0f} M samples/s, "
              f"{signal.numblocks[1]} chunks)")  # fmt: skip
        width = min(args.samples // 4, 4 * args.chunk)
        error = check_window(recording, filtered, args.decay, args.samples // 3, width)
        print(f"a window of {width} samples agrees with in-memory scans: max relative "
              f"difference {error:.1e}")  # fmt: skip
        return error


if __name__ == "__main__":
    main()
