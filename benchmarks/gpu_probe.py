"""Measure the GPU yardsticks linscan's CUDA backend will be judged against (issue 3).

Prints, as ratios taken in the same run: the bandwidth of a device-to-device copy of 2**26
float32 elements (bytes read plus written), and cupy.cumsum over the same element count as a
multiple of that copy's time. linscan has no CUDA kernels yet; this records the baseline and
shows that CuPy, the GPU and NVRTC work on the machine. Usage: python gpu_probe.py OUTDIR
"""

import json
import sys
import time

import cupy as cp
import numpy as np


def median_ms(fn, repeat=20):
    start, stop = cp.cuda.Event(), cp.cuda.Event()
    fn()
    cp.cuda.Device().synchronize()
    times = []
    for _ in range(repeat):
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cp.cuda.get_elapsed_time(start, stop))
    return float(np.median(times))


def main(outdir):
    n = 1 << 26
    props = cp.cuda.runtime.getDeviceProperties(0)
    # Rotate among buffers larger than L2 so that the copy measures DRAM.
    srcs = [cp.random.standard_normal(n, dtype=cp.float32) for _ in range(3)]
    dst = cp.empty(n, cp.float32)
    k = iter(range(10**9))
    copy_ms = median_ms(lambda: cp.copyto(dst, srcs[next(k) % 3]))
    copy_gbs = 2 * 4 * n / (copy_ms * 1e-3) / 1e9
    cumsum_ms = median_ms(lambda: cp.cumsum(srcs[next(k) % 3], out=dst))
    # A 12-byte-per-element pass (read two arrays, write one): a forward scan's floor.
    add_ms = median_ms(lambda: cp.add(srcs[0], srcs[1], out=dst))
    # NVRTC: compile and run a trivial kernel.
    kernel = cp.RawKernel(
        r'extern "C" __global__ void twice(const float* x, float* y, long long n) {'
        r" long long i = blockIdx.x * (long long)blockDim.x + threadIdx.x;"
        r" if (i < n) y[i] = 2.0f * x[i]; }",
        "twice",
    )
    kernel(((n + 255) // 256,), (256,), (srcs[0], dst, cp.int64(n)))
    assert bool(cp.all(dst == 2 * srcs[0]))
    result = {
        "device": props["name"].decode(),
        "sms": props["multiProcessorCount"],
        "l2_bytes": props["l2CacheSize"],
        "cupy": cp.__version__,
        "elements": n,
        "copy_ms": copy_ms,
        "copy_gbs_read_plus_write": copy_gbs,
        "add_ms": add_ms,
        "add_over_copy_scaled_to_12B": add_ms / (copy_ms * 12 / 8),
        "cumsum_ms": cumsum_ms,
        "cumsum_over_copy": cumsum_ms / copy_ms,
        "nvrtc_kernel_ok": True,
        "date": time.strftime("%Y-%m-%d"),
    }
    with open(f"{outdir}/gpu_probe.json", "w") as f:
        json.dump(result, f, indent=2)
    print(
        f"{result['device']} ({result['sms']} SMs): D2D copy {copy_gbs:.0f} GB/s; "
        f"cupy.cumsum = {result['cumsum_over_copy']:.2f}x copy time; "
        f"add (12 B/elem) = {result['add_over_copy_scaled_to_12B']:.2f}x the copy rate"
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
