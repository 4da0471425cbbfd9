"""Every kernel instantiation compiles with NVRTC, without a GPU, cleanly (CI has no GPU).

Needs CuPy and pip's NVRTC (the ``nvrtc`` extra); skipped where CuPy is not installed."""

import os
import re

import pytest

from linscan.backends.cuda import source

cupy = pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed to compile kernels")


#: The architectures built: by default the lent GPUs' (H100 and H200, sm_90); a deliberate run
#: adds others, e.g. LINSCAN_ARCHS="sm_80 sm_90" (A100). The lean kernels (row_scan,
#: chan_scan) are built for sm_80 as well in every run (they are few and cheap to build).
ARCHS = tuple(os.environ.get("LINSCAN_ARCHS", "sm_90").split())
ROW_ARCHS = tuple(sorted(set(ARCHS) | {"sm_80", "sm_90"}))
#: Registers and shared memory of an SM by architecture (for the occupancy the plan assumes).
REGISTERS = 65536
SMEM_PER_SM = {"sm_80": 164 * 1024, "sm_90": 228 * 1024}
SMEM_PER_BLOCK_RESERVED = 1024  # the system's share of each resident block
#: The arithmetic itemsize of each mangled storage type.
ITEMSIZES = {"f": 4, "d": 8, "NS_6half_tE": 4, "NS_6bf16_tE": 4, "NS_7ComplexIfEE": 8,
             "NS_7ComplexIdEE": 16}  # fmt: skip


def _lean_names():
    return [n for n in source.all_name_expressions() if "row_scan" in n or "chan_scan" in n]


@pytest.fixture(scope="module")
def builds():
    """Each architecture's instantiations in two interleaved halves, compiled at once (NVRTC
    runs outside the GIL: two cores, half the time of one build), and the row kernels for the
    architectures of ``ROW_ARCHS`` not in ``ARCHS``: the lean kernels. ``{arch: (cubins, log)}``."""
    import concurrent.futures

    names, lean = source.all_name_expressions(), _lean_names()
    jobs = [(arch, names[k::2]) for arch in ARCHS for k in range(2)]
    # (in halves too, so that the two threads finish together; by dtype, each half holding
    # both kernels: a build without one warns of its unused constants)
    half = len(lean) // 2
    jobs += [(arch, part) for arch in ROW_ARCHS if arch not in ARCHS
             for part in (lean[:half], lean[half:])]  # fmt: skip
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda job: source.compile_offline(*job), jobs))
    except source.CompileError:
        raise
    except Exception as exc:  # NVRTC itself missing: say so rather than pass quietly
        pytest.fail(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); install '.[nvrtc]'")
    result = {arch: ([], []) for arch in ROW_ARCHS + ARCHS}
    for (arch, _), (cubin, log) in zip(jobs, done):
        result[arch][0].append(cubin)
        result[arch][1].append(log)
    return {arch: (cubins, "\n".join(logs)) for arch, (cubins, logs) in result.items()}


@pytest.fixture(params=sorted(set(ARCHS + ROW_ARCHS)))
def compiled(request, builds):
    cubins, log = builds[request.param]
    return request.param, cubins, log


def test_compiles_to_a_cubin(compiled):
    arch, cubins, _ = compiled
    assert cubins and all(cubin[:4] == b"\x7fELF" for cubin in cubins)


def test_log_is_free_of_warnings(compiled):
    arch, _, log = compiled
    noise = [
        line
        for line in log.splitlines()
        if line.strip() and not line.startswith(("ptxas info", "ptxas         ."))
    ]
    assert not noise, "\n".join(noise)


def _entries(log) -> list:
    """ptxas's report per kernel: (mangled name, registers, static shared memory in bytes)."""
    found = re.findall(
        r"Compiling entry function '(\w+)'.*?Used (\d+) registers[^\n]*?(?:(\d+) bytes smem|$)",
        log, re.S | re.M,
    )  # fmt: skip
    return [(name, int(regs), int(smem or 0)) for name, regs, smem in found]


def test_every_instantiation_is_built_without_spills(compiled):
    arch, _, log = compiled
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    built = source.all_name_expressions() if arch in ARCHS else _lean_names()
    assert len(entries) == len(built)
    spills = re.findall(
        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill", log
    )
    assert len(spills) == len(entries)
    assert all(frame == stores == loads == "0" for frame, stores, loads in spills), log


def test_resources_allow_the_occupancy_the_plan_assumes(compiled):
    """Registers and shared memory of each kernel leave room for the resident blocks its
    launch bounds name (tile_scan: MIN_BLOCKS of 256 threads, its shared memory from the plan;
    row_scan and chan_scan: ROW_MIN_BLOCKS and CHAN_MIN_BLOCKS of 128 threads by arithmetic
    type, their backward passes' own, static shared memory)."""
    from linscan.backends.cuda import plan

    arch, _, log = compiled
    entries = _entries(log)
    assert len(entries) == len(re.findall("Compiling entry function", log))
    rows = chans = 0
    for name, regs, smem in entries:
        if "row_scan" in name:
            rows += 1
            stored, mode = re.search(r"row_scanI(.+?)Li(\d+)EE", name).groups()
            table = plan.ROW_BACKWARD_MIN_BLOCKS if int(mode) == 2 else plan.ROW_MIN_BLOCKS
            blocks = table[ITEMSIZES[stored]]
            assert regs * plan.ROW_THREADS * blocks <= REGISTERS, (name, regs)
            assert (smem + SMEM_PER_BLOCK_RESERVED) * blocks <= SMEM_PER_SM[arch], (name, smem)
        elif "chan_scan" in name:
            chans += 1
            stored, mode = re.search(r"chan_scanI(.+?)Li(\d+)EE", name).groups()
            table = plan.CHAN_BACKWARD_MIN_BLOCKS if int(mode) == 2 else plan.CHAN_MIN_BLOCKS
            blocks = table[ITEMSIZES[stored]]
            assert regs * plan.CHAN_THREADS * blocks <= REGISTERS, (name, regs)
            assert (smem + SMEM_PER_BLOCK_RESERVED) * blocks <= SMEM_PER_SM[arch], (name, smem)
        elif "tile_scan" in name:
            assert regs * plan.BLOCK * plan.MIN_BLOCKS <= REGISTERS, (name, regs)
    assert rows + chans == len(_lean_names())


def test_a_broken_source_fails_with_the_compiler_log(tmp_path, monkeypatch):
    for path in source.kernel_dir().iterdir():
        (tmp_path / path.name).write_text(path.read_text())
    text = (tmp_path / "scan.cu").read_text()
    broken = text.replace("muladd(d, m.B, x)", "muladd(d, m.B, x, x)")
    assert broken != text
    (tmp_path / "scan.cu").write_text(broken)
    monkeypatch.setattr(source, "kernel_dir", lambda: tmp_path)
    with pytest.raises(source.CompileError, match="muladd"):
        source.compile_offline("sm_90", ["linscan::tile_scan<float, 1, 0>"])
    # The failure is the GPU path's alone: the CPU path still works in this process.
    import numpy as np

    import linscan

    np.testing.assert_allclose(linscan.scan(0.5, np.ones(3)), [1.0, 1.5, 1.75])
