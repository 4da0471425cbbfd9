"""What the GPU backend hands to its kernels, checked without a GPU: CuPy arrays over fake
device memory (never touched), the launch recorded instead of run. Pointers, strides in
elements, scalar C types, the plan's grid and shared memory, the scratch memset."""

import numpy as np
import pytest

import linscan

cupy = pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed")
from fake_gpu import FakeGPU, FakeStream, install  # noqa: E402  (needs CuPy, checked above)


@pytest.fixture
def gpu(monkeypatch):
    return install(monkeypatch.setattr, monkeypatch.setitem, FakeGPU())


def _args(launch):
    """The arguments of a recorded launch by parameter name (the table of ``abi``)."""
    from linscan.backends.cuda import abi

    table = abi.PARAMETERS[launch["lp"].kernel]
    assert len(launch["args"]) == len(table)
    return dict(zip((name for name, _ in table), launch["args"]))


def _ptr(value):
    return value.data.ptr if isinstance(value, cupy.ndarray) else int(value)


def _check_types(args, dtype):
    """Every argument has its parameter's C type (CuPy does not look at the signature)."""
    from linscan.backends.cuda import abi

    for name, kind in abi.TILE_SCAN + abi.ROW_SCAN + abi.CHAN_SCAN:
        value = args.get(name)
        if name not in args:
            continue
        if kind == abi.LONG:
            assert type(value) is int, name  # CuPy passes a Python int as long long
        elif kind == abi.INT:
            assert type(value) is np.int32, name
        elif kind == abi.UINT:
            assert type(value) is np.uint32, name
        elif kind == abi.VALUE:
            assert type(value) is dtype.type, name  # the arithmetic type
        else:
            assert isinstance(value, (cupy.ndarray, np.uint64, int)), name


def test_full_decays_and_the_launch_plan(gpu):
    a, x = gpu.empty((3, 5000), np.float32), gpu.empty((3, 5000), np.float32)
    h = linscan.scan(a, x)
    (launch,) = gpu.launches
    args, lp = _args(launch), launch["lp"]
    _check_types(args, np.dtype(np.float32))
    assert launch["grid"] == (lp.grid,) and launch["block"] == (256,)
    assert launch["smem"] == lp.smem and launch["mode"] == 0
    assert _ptr(args["a"]) == a.data.ptr and _ptr(args["v"]) == x.data.ptr
    assert (args["a_so"], args["a_st"], args["a_si"]) == (5000, 1, 1)
    assert _ptr(args["y"]) == h.data.ptr and _ptr(args["hf"]) == 0 and _ptr(args["h0"]) == 0
    assert (args["O"], args["Tn"], args["I"], int(args["down"])) == (3, 5000, 1, 0)
    assert lp.chained  # 15000 flat steps: several tiles, so scratch and one memset
    ((ptr, value, nbytes, stream),) = gpu.memsets
    assert (value, nbytes, stream) == (0, lp.status_bytes, 77)
    assert _ptr(args["status"]) == ptr
    offsets = [_ptr(args[n]) - ptr for n in ("agg_a", "agg_b", "incl", "agg_r")]
    assert offsets == [lp.status_bytes + k * lp.values_bytes for k in range(4)]
    assert lp.scratch_bytes == offsets[-1] + lp.resets_bytes
    assert _ptr(args["r"]) == 0  # no resets


def test_scalar_decay_goes_by_value(gpu):
    x = gpu.empty((4, 100), np.float64)
    linscan.scan(0.25, x, reverse=True)
    args = _args(gpu.launches[-1])
    _check_types(args, np.dtype(np.float64))
    assert _ptr(args["a"]) == 0 and args["a_value"] == 0.25 and int(args["down"]) == 1
    assert not gpu.memsets  # one tile: no scratch


def test_broadcast_and_reversed_decays_keep_their_strides(gpu):
    x = gpu.empty((700, 6), np.float32)  # time-major: axis 0, six channels
    per_channel = gpu.empty((6,), np.float32)
    linscan.scan(per_channel, x, axis=0)
    args = _args(gpu.launches[-1])
    assert (args["a_so"], args["a_st"], args["a_si"]) == (0, 0, 1)
    assert (args["O"], args["Tn"], args["I"]) == (1, 700, 6)
    base = gpu.empty((700, 6), np.float32)
    linscan.scan(base[::-1], x, axis=0)
    args = _args(gpu.launches[-1])
    assert (args["a_st"], args["a_si"]) == (-6, 1)  # (O = 1: the row stride is never used)
    assert _ptr(args["a"]) == base.data.ptr + 699 * 6 * 4


def test_broadcast_initial_state_keeps_zero_strides(gpu):
    x = gpu.empty((5, 40, 3), np.float32)
    h0 = gpu.empty((3,), np.float32)
    linscan.scan(0.5, x, h0, axis=1)
    args = _args(gpu.launches[-1])
    assert _ptr(args["h0"]) == h0.data.ptr and (args["h0_so"], args["h0_si"]) == (0, 1)


def test_backward_walks_against_the_forward_scan(gpu):
    a, h, gh = (gpu.empty((2, 300), np.float32) for _ in range(3))
    h0 = gpu.empty((2,), np.float32)
    grad_a, grad_x, grad_h0 = linscan.scan_backward(a, h, gh, h0, reverse=True)
    args = _args(gpu.launches[-1])
    assert gpu.launches[-1]["mode"] == 2 and int(args["down"]) == 0
    assert _ptr(args["v"]) == gh.data.ptr and _ptr(args["hf"]) == h.data.ptr
    assert _ptr(args["y"]) == grad_x.data.ptr and _ptr(args["ga"]) == grad_a.data.ptr
    assert _ptr(args["s_out"]) != 0 and grad_h0.shape == (2,)


def test_sequential_method_launches_the_serial_kernel(gpu):
    x = gpu.empty((3, 1000, 70), np.float32)
    linscan.final_state(0.5, x, axis=1, method="sequential")
    launch = gpu.launches[-1]
    assert launch["lp"].kernel == "serial_scan" and launch["mode"] == 1
    assert launch["grid"] == (-(-3 * 70 // 256),) and launch["smem"] == 0


def test_resets_go_by_their_strides_with_room_for_their_flags(gpu):
    x = gpu.empty((3, 5000), np.float32)
    per_step = gpu.empty((5000,), np.bool_)
    linscan.scan(0.5, x, resets=per_step)
    launch = gpu.launches[-1]
    args, lp = _args(launch), launch["lp"]
    assert _ptr(args["r"]) == per_step.data.ptr
    assert (args["r_so"], args["r_st"]) == (0, 1)  # (I = 1: r_si is never used)
    assert launch["smem"] == lp.smem == (2 * 4 + 1) * 256 * (lp.steps + 1)
    linscan.scan_backward(x, x, x, resets=per_step)  # (a full a: no reduction of grad_a)
    assert _ptr(_args(gpu.launches[-1])["r"]) == per_step.data.ptr


@pytest.mark.parametrize(
    "dtype, arith",
    [(np.float16, np.float32), ("bfloat16", np.float32), (np.complex64, np.complex64),
     (np.complex128, np.complex128)],
)  # fmt: skip
def test_every_dtype_runs_in_its_own_kernel(gpu, dtype, arith):
    dtype = np.dtype(dtype) if dtype != "bfloat16" else np.dtype(linscan._dtypes.BFLOAT16)
    x = gpu.empty((2, 3000), dtype)
    h = linscan.scan(0.5, x)
    launch = gpu.launches[-1]
    args, lp = _args(launch), launch["lp"]
    assert launch["dtype"] == dtype and h.dtype == dtype  # read and written in the dtype
    _check_types(args, np.dtype(arith))
    assert args["a_value"] == 0.5 and lp.itemsize == np.dtype(arith).itemsize
    assert _ptr(args["v"]) == x.data.ptr and _ptr(args["y"]) == h.data.ptr


@pytest.mark.parametrize("kernel", ["tile_scan", "serial_scan", "row_scan"])
def test_parameter_table_matches_the_kernel_source(kernel):
    """``abi``'s table names each parameter of the ``.cu`` signature, in order, with its type."""
    import re

    from linscan.backends.cuda import abi, source

    text = source.assemble()
    signature = re.search(rf"{kernel}\(([^)]*)\)", text).group(1)
    signature = re.sub(r"<[^<>]*>", "", signature)  # template arguments hold commas
    found = []
    for part in signature.split(","):
        declaration, name = part.rsplit(None, 1)
        if "*" in part:
            kind = abi.POINTER
        elif "Num::T" in declaration:
            kind = abi.VALUE
        else:
            kind = {"long long": abi.LONG, "int": abi.INT, "unsigned": abi.UINT}[
                " ".join(declaration.split())
            ]
        found.append((name.lstrip("*"), kind))
    assert tuple(found) == abi.PARAMETERS[kernel]


def test_the_serial_kernel_gets_its_short_argument_list(gpu):
    x = gpu.empty((3, 100, 5), np.float64)
    h = linscan.scan(0.5, x, axis=1, method="sequential")
    launch = gpu.launches[-1]
    args = _args(launch)
    assert launch["lp"].kernel == "serial_scan" and "status" not in args
    _check_types(args, np.dtype(np.float64))
    assert _ptr(args["v"]) == x.data.ptr and _ptr(args["y"]) == h.data.ptr
    assert (args["O"], args["Tn"], args["I"]) == (3, 100, 5) and args["a_value"] == 0.5


@pytest.fixture
def fast(gpu, monkeypatch):
    """The lean kernels opted in (``LINSCAN_FAST_KERNELS=1``)."""
    from linscan.backends.cuda import plan

    monkeypatch.setattr(plan, "FAST", True)
    return gpu


def test_rows_take_the_row_kernel_with_its_short_argument_list(fast):
    a, x = fast.empty((3, 5000), np.float32), fast.empty((3, 5000), np.float32)
    h0 = fast.empty((3,), np.float32)
    h = linscan.scan(a, x, h0, reverse=True)
    launch = fast.launches[-1]
    args, lp = _args(launch), launch["lp"]
    assert lp.kernel == "row_scan" and launch["block"] == (128,) and launch["smem"] == 0
    _check_types(args, np.dtype(np.float32))
    assert launch["grid"] == (lp.grid,) == (-(-15000 // (128 * 16)),)
    assert _ptr(args["a"]) == a.data.ptr and _ptr(args["v"]) == x.data.ptr
    assert _ptr(args["y"]) == h.data.ptr and _ptr(args["h0"]) == h0.data.ptr
    assert (args["N"], args["Tn"], args["h0_so"], int(args["down"])) == (15000, 5000, 1, 1)
    ((ptr, value, nbytes, stream),) = fast.memsets  # several tiles: scratch, one memset
    assert _ptr(args["status"]) == ptr and nbytes == lp.status_bytes
    state = linscan.final_state(0.5, x, resets=fast.empty((3, 5000), np.bool_))
    launch = fast.launches[-1]
    args = _args(launch)
    assert launch["lp"].kernel == "row_scan" and launch["mode"] == 1
    assert _ptr(args["a"]) == 0 and args["a_value"] == 0.5 and _ptr(args["r"]) != 0
    assert _ptr(args["s_out"]) == state.data.ptr


def test_time_major_channels_take_the_channel_kernel(fast):
    """Many channels laid out as x (time-major): chan_scan, with its short argument list and
    h0 through its strides; a broadcast decay or too few channels take tile_scan."""
    x = fast.empty((2, 300, 256), np.float32)
    a = fast.empty((2, 300, 256), np.float32)
    h0 = fast.empty((256,), np.float32)  # broadcast over the rows: a zero row stride
    h = linscan.scan(a, x, h0, axis=1, reverse=True)
    launch = fast.launches[-1]
    args, lp = _args(launch), launch["lp"]
    assert lp.kernel == "chan_scan" and launch["block"] == (128,) and launch["smem"] == 0
    _check_types(args, np.dtype(np.float32))
    assert launch["grid"] == (lp.grid,) == (2 * 2 * -(-300 // 32),)
    assert _ptr(args["a"]) == a.data.ptr and _ptr(args["v"]) == x.data.ptr
    assert _ptr(args["y"]) == h.data.ptr and _ptr(args["h0"]) == h0.data.ptr
    assert (args["O"], args["Tn"], args["I"], int(args["down"])) == (2, 300, 256, 1)
    assert (args["h0_so"], args["h0_si"]) == (0, 1)
    ((ptr, _, nbytes, _),) = fast.memsets  # several tiles along time: scratch, one memset
    assert _ptr(args["status"]) == ptr and nbytes == lp.status_bytes
    state = linscan.final_state(0.5, x, axis=1, resets=fast.empty((2, 300, 256), np.bool_))
    args = _args(fast.launches[-1])
    assert fast.launches[-1]["lp"].kernel == "chan_scan" and fast.launches[-1]["mode"] == 1
    assert _ptr(args["a"]) == 0 and args["a_value"] == 0.5 and _ptr(args["r"]) != 0
    assert _ptr(args["s_out"]) == state.data.ptr
    linscan.scan(fast.empty((256,), np.float32), x, axis=1)  # a decay per channel
    linscan.scan(0.5, fast.empty((300, 40), np.float32), axis=0)  # 40 channels: idle lanes
    assert [launch["lp"].kernel for launch in fast.launches[-2:]] == ["tile_scan"] * 2


@pytest.mark.parametrize("shape, axis, kernel", [((2, 3000), -1, "row_scan"),
                                                  ((2, 300, 256), 1, "chan_scan")])  # fmt: skip
def test_the_backward_pass_takes_the_lean_kernels(fast, shape, axis, kernel):
    a, h, gh = (fast.empty(shape, np.float32) for _ in range(3))
    h0 = fast.empty(shape[:1] + shape[2:], np.float32)
    grad_a, grad_x, grad_h0 = linscan.scan_backward(a, h, gh, h0, axis=axis, reverse=True)
    launch = fast.launches[-1]
    args = _args(launch)
    assert launch["lp"].kernel == kernel and launch["mode"] == 2
    _check_types(args, np.dtype(np.float32))
    assert int(args["down"]) == 0  # walks against the forward scan
    assert _ptr(args["v"]) == gh.data.ptr and _ptr(args["hf"]) == h.data.ptr
    assert _ptr(args["y"]) == grad_x.data.ptr and _ptr(args["ga"]) == grad_a.data.ptr
    assert _ptr(args["h0"]) == h0.data.ptr and _ptr(args["s_out"]) != 0
    linscan.scan_backward(a, h, gh, axis=axis)  # no h0: no gradient for it
    assert _ptr(_args(fast.launches[-1])["s_out"]) == 0


@pytest.mark.parametrize("dtype", [np.float16, np.float64, np.complex64, np.complex128])
def test_row_kernel_items_by_arithmetic_type(fast, dtype):
    x = fast.empty((1, 100000), dtype)
    linscan.scan(0.5, x)
    lp = fast.launches[-1]["lp"]
    assert lp.kernel == "row_scan"
    assert lp.steps * lp.itemsize == 64 and lp.tile_steps == 128 * lp.steps


def test_calls_the_row_kernel_does_not_fit_take_the_tile_kernel(fast):
    x = fast.empty((3, 5000), np.float32)
    base = fast.empty((3, 5000), np.float32)
    per_step = fast.empty((5000,), np.float32)
    calls = [
        lambda: linscan.scan(per_step, x),  # decays broadcast over the rows
        lambda: linscan.scan(base[:, ::-1], x),  # decays read backwards
        lambda: linscan.scan(0.5, x, resets=fast.empty((5000,), np.bool_)),  # resets broadcast
        lambda: linscan.scan(0.5, fast.empty((300, 8), np.float32), axis=0),  # eight channels
        lambda: linscan.scan_backward(x, x, x, axis=0),  # channels of three steps each
        lambda: linscan.scan(0.5, x, method="sequential"),
    ]
    for call in calls:
        call()
        assert fast.launches[-1]["lp"].kernel in ("tile_scan", "serial_scan")
    linscan.scan(base, x, out=fast.empty((3, 5000), np.float32))
    assert fast.launches[-1]["lp"].kernel == "row_scan"


def test_the_row_kernel_is_opt_in(gpu, monkeypatch):
    """Off unless LINSCAN_FAST_KERNELS=1 (read at import): it has not run on a GPU yet."""
    import os
    import subprocess
    import sys

    from linscan.backends.cuda import plan

    code = "from linscan.backends.cuda import plan; print(plan.FAST)"
    for value, want in (("", "False"), ("0", "False"), ("1", "True")):
        env = dict(os.environ, LINSCAN_FAST_KERNELS=value)
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                              text=True, check=True)  # fmt: skip
        assert done.stdout.strip() == want
    monkeypatch.setattr(plan, "FAST", False)
    linscan.scan(0.5, gpu.empty((3, 5000), np.float32))
    assert gpu.launches[-1]["lp"].kernel == "tile_scan"


def test_scratch_is_kept_per_stream_and_zeroed_before_each_launch(gpu):
    """The look-back scratch is allocated once per device and stream (a small call must not
    pay for it), grown when a call needs more, zeroed before every launch, and let go with
    its stream."""
    import gc

    from linscan.backends.cuda import backend

    x, big = gpu.empty((3, 5000), np.float32), gpu.empty((3, 500_000), np.float32)
    for _ in range(2):
        linscan.scan(0.5, x)
    first, second = (_ptr(_args(launch)["status"]) for launch in gpu.launches)
    assert first == second and [m[0] for m in gpu.memsets] == [first, second]
    linscan.scan(0.5, big)  # more tiles than the scratch holds: a larger one
    grown = _args(gpu.launches[-1])["status"]
    assert len(gpu.memsets) == 3 and gpu.memsets[-1][0] == grown
    held = backend._SCRATCH._held[(0, 77, False)].values
    assert held.data.ptr == grown and held.nbytes >= gpu.launches[-1]["lp"].scratch_bytes
    linscan.scan(0.5, x)  # a smaller call keeps the larger scratch
    assert _args(gpu.launches[-1])["status"] == grown

    others = [FakeStream(78)]  # another stream: its own scratch
    cupy.cuda.get_current_stream = lambda: others[0]
    linscan.scan(0.5, x)
    assert _args(gpu.launches[-1])["status"] != grown and gpu.memsets[-1][3] == 78
    assert (0, 78, False) in backend._SCRATCH._held
    cupy.cuda.get_current_stream = lambda: gpu.stream
    others.clear()  # the stream is gone
    gc.collect()
    assert (0, 78, False) not in backend._SCRATCH._held
    assert (0, 77, False) in backend._SCRATCH._held


def test_memset_and_launch_happen_under_one_lock(gpu):
    """Threads sharing a stream must not interleave one call's memset with another's launch
    (the second memset would land after the first launch was queued, or before it ran)."""
    from linscan.backends.cuda import backend

    held = []
    launch = gpu.launch

    def checking(dtype, mode, lp, device_id):
        kernel = launch(dtype, mode, lp, device_id)

        def launching(*args, **kw):
            held.append(backend._SCRATCH.lock.locked())
            return kernel(*args, **kw)

        return launching

    from linscan.backends.cuda import source

    source.function = checking
    linscan.scan(0.5, gpu.empty((3, 5000), np.float32))  # several tiles: scratch
    linscan.scan(0.5, gpu.empty((3, 50), np.float32))  # one tile: none, no lock needed
    assert held == [True, False] and not backend._SCRATCH.lock.locked()


def test_lean_kernels_keep_status_words_without_a_memset_per_call(fast, monkeypatch):
    """row_scan and chan_scan tag their status words with the call's epoch and run their tile
    counter on: their scratch is zeroed when first allocated, when grown, and when the epochs
    run out; each call gets the next epoch and the counter the calls before it left. A launch
    that fails forgets the scratch (its counter is then unknown). tile_scan keeps its own."""
    from linscan.backends.cuda import backend, plan, source

    x = fast.empty((3, 5000), np.float32)
    linscan.scan(0.5, x)
    first = _args(fast.launches[-1])
    lp = fast.launches[-1]["lp"]
    assert lp.kernel == "row_scan" and len(fast.memsets) == 1
    assert fast.memsets[0][0] == _ptr(first["status"]) and fast.memsets[0][2] >= lp.status_bytes
    assert (first["epoch"], first["tile0"]) == (1, 0)
    linscan.scan(0.5, x)
    second = _args(fast.launches[-1])
    assert len(fast.memsets) == 1  # no memset for the second call
    assert (second["epoch"], second["tile0"]) == (2, lp.grid)
    assert _ptr(second["status"]) == _ptr(first["status"])
    assert _ptr(second["agg_a"]) != _ptr(second["status"]) + lp.status_bytes  # apart

    chans = fast.empty((2, 300, 256), np.float32)  # chan_scan: the same scratch, on it runs
    linscan.scan(0.5, chans, axis=1)
    third = _args(fast.launches[-1])
    assert fast.launches[-1]["lp"].kernel == "chan_scan" and len(fast.memsets) == 1
    assert (third["epoch"], third["tile0"]) == (3, 2 * lp.grid)

    linscan.scan(0.5, fast.empty((3, 500_000), np.float32))  # more tiles: grown and zeroed
    grown = _args(fast.launches[-1])
    assert len(fast.memsets) == 2 and (grown["epoch"], grown["tile0"]) == (1, 0)

    monkeypatch.setattr(plan, "MAX_EPOCH", 2)
    linscan.scan(0.5, x)
    assert len(fast.memsets) == 2 and _args(fast.launches[-1])["epoch"] == 2
    linscan.scan(0.5, x)  # out of epochs: zeroed, from 1 again
    assert len(fast.memsets) == 3 and _args(fast.launches[-1])["epoch"] == 1

    linscan.scan(fast.empty((3, 5000), np.float32)[:, ::-1], x)  # tile_scan: its own, zeroed
    assert fast.launches[-1]["lp"].kernel == "tile_scan" and len(fast.memsets) == 4
    assert _ptr(_args(fast.launches[-1])["status"]) != _ptr(grown["status"])

    def failing(dtype, mode, lp, device_id):
        def kernel(*args, **kwargs):
            raise RuntimeError("launch failed")

        return kernel

    monkeypatch.setattr(source, "function", failing)
    with pytest.raises(RuntimeError, match="launch failed"):
        linscan.scan(0.5, x)
    assert (0, 77, True) not in backend._SCRATCH._held
    monkeypatch.setattr(source, "function", fast.launch)
    linscan.scan(0.5, x)
    assert len(fast.memsets) == 5 and _args(fast.launches[-1])["epoch"] == 1


@pytest.mark.parametrize("fast_kernels", [False, True])
def test_chaining_calls_refuse_a_capturing_stream(gpu, monkeypatch, fast_kernels):
    """While the stream captures a CUDA graph, a call whose tiles chain through the kept
    scratch raises (a replay would reuse the scratch after later calls): nothing is queued
    and the call names the way out. Calls of one tile and sequential calls take no scratch
    and are captured as they are."""
    from linscan.backends.cuda import plan

    monkeypatch.setattr(plan, "FAST", fast_kernels)
    gpu.stream.capturing = True
    x = gpu.empty((3, 5000), np.float32)
    with pytest.raises(RuntimeError, match="CUDA graph.*method='sequential'"):
        linscan.scan(0.5, x)
    assert gpu.launches == [] and gpu.memsets == []
    linscan.scan(0.5, x, method="sequential")
    linscan.scan(0.5, gpu.empty((3, 50), np.float32))
    assert [launch["lp"].chained for launch in gpu.launches] == [False, False]
    gpu.stream.capturing = False
    linscan.scan(0.5, x)
    assert gpu.launches[-1]["lp"].chained and len(gpu.memsets) == 1


def test_another_librarys_stream_is_one_cupy_stream(gpu, monkeypatch):
    """PyTorch's and XLA's streams reach linscan as pointers, call after call: each becomes
    one CuPy stream object, so that the look-back scratch kept per stream object is found
    again (a new object per call allocated and zeroed it each time)."""
    import contextlib

    from linscan.backends.cuda import backend

    monkeypatch.setattr(cupy.cuda, "Device", lambda device: contextlib.nullcontext())
    monkeypatch.setattr(backend, "_EXTERNAL", {})
    first = backend.external_stream(0x1234, 0)
    assert first.ptr == 0x1234 and backend.external_stream(0x1234, 0) is first
    assert backend.external_stream(0x1234, 1) is not first  # another device's
    assert backend.external_stream(0x5678, 0).ptr == 0x5678
