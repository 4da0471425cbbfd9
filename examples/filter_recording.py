"""Band-pass a long recording forwards and backwards (zero phase) with linscan.signal.

A synthetic recording (a 10 Hz rhythm and a 50 Hz hum in noise, sampled at 1 kHz) is
band-passed to 5-15 Hz with an 8th-order Butterworth filter in second-order sections, by
``sosfiltfilt`` from ``linscan.signal``, which takes scipy.signal's arguments and runs one long
signal as pieces in parallel over time. scipy designs the filter (linscan designs none) and
checks the result: ``scipy.signal.sosfiltfilt`` on the same recording, both times printed.

With ``--gpu`` the recording is a CuPy array and every section runs as a matrix scan on the
GPU (``linscan.matscan``'s kernels, opt-in while they have not run on a GPU: the script sets
``LINSCAN_GPU_MATRIX=1``).

Run: python examples/filter_recording.py [--samples 2**24] [--float32] [--gpu]
"""

import argparse
import os
import time

import numpy as np
from scipy import signal as scipy_signal

from linscan import signal


def recording(samples, fs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / fs
    clean = np.sin(2 * np.pi * 10 * t)
    noisy = clean + 0.5 * np.sin(2 * np.pi * 50 * t) + rng.standard_normal(samples)
    return clean, noisy.astype(dtype)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", default="2**22", help="length of the recording")
    parser.add_argument("--float32", action="store_true", help="filter in float32")
    parser.add_argument("--gpu", action="store_true", help="filter a CuPy array on the GPU")
    args = parser.parse_args(argv)
    base, _, power = args.samples.partition("**")  # "2**22" or "4194304"
    samples = int(base) ** int(power) if power else int(base)
    fs = 1000.0
    dtype = np.float32 if args.float32 else np.float64
    sos = scipy_signal.butter(4, [5, 15], btype="band", fs=fs, output="sos").astype(dtype)
    clean, noisy = recording(samples, fs, dtype)

    if args.gpu:
        import cupy

        os.environ["LINSCAN_GPU_MATRIX"] = "1"
        on_gpu = cupy.asarray(noisy)
        signal.sosfiltfilt(sos, on_gpu[:1000])  # compile (or load) the kernels first
        cupy.cuda.get_current_stream().synchronize()
        start = time.perf_counter()
        filtered = signal.sosfiltfilt(sos, on_gpu)
        cupy.cuda.get_current_stream().synchronize()
        ours = time.perf_counter() - start
        filtered = cupy.asnumpy(filtered)
    else:
        start = time.perf_counter()
        filtered = signal.sosfiltfilt(sos, noisy)
        ours = time.perf_counter() - start
    middle = slice(samples // 10, -samples // 10)  # away from the ends' transients
    residual = np.sqrt(np.mean((filtered[middle] - clean[middle]) ** 2))
    noise = np.sqrt(np.mean((noisy[middle] - clean[middle]) ** 2))
    where = "GPU" if args.gpu else "CPU"
    print(f"{samples} samples ({np.dtype(dtype).name}, {where}): linscan.signal.sosfiltfilt "
          f"{ours * 1e3:.0f} ms; rms distance to the clean 10 Hz rhythm {residual:.3f} "
          f"(the noise alone: {noise:.3f})")  # fmt: skip
    start = time.perf_counter()
    theirs = scipy_signal.sosfiltfilt(sos, noisy)
    elapsed = time.perf_counter() - start
    difference = float(np.max(np.abs(filtered - theirs)) / np.max(np.abs(theirs)))
    print(f"scipy.signal.sosfiltfilt {elapsed * 1e3:.0f} ms ({elapsed / ours:.1f}x linscan's "
          f"time); largest difference {difference:.1e} of the signal's peak")  # fmt: skip
    return residual, difference


if __name__ == "__main__":
    main()
