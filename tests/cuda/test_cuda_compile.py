"""Every kernel instantiation compiles with NVRTC, without a GPU, cleanly (CI has no GPU).

Needs CuPy and pip's NVRTC (the ``nvrtc`` extra); skipped where CuPy is not installed."""

import os
import re

import pytest

from linscan.backends.cuda import source

cupy = pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed to compile kernels")


#: The architectures built: by default the lent GPUs' (H100 and H200, sm_90); a deliberate run
#: adds others, e.g. LINSCAN_ARCHS="sm_80 sm_90" (A100).
ARCHS = tuple(os.environ.get("LINSCAN_ARCHS", "sm_90").split())


@pytest.fixture(scope="module")
def builds():
    """Each architecture's instantiations in two interleaved halves, compiled at once (NVRTC
    runs outside the GIL: two cores, half the time of one build). ``{arch: (cubins, log)}``."""
    import concurrent.futures

    names = source.all_name_expressions()
    jobs = [(arch, names[k::2]) for arch in ARCHS for k in range(2)]
    try:
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            done = list(pool.map(lambda job: source.compile_offline(*job), jobs))
    except source.CompileError:
        raise
    except Exception as exc:  # NVRTC itself missing: say so rather than pass quietly
        pytest.fail(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); install '.[nvrtc]'")
    result = {arch: ([], []) for arch in ARCHS}
    for (arch, _), (cubin, log) in zip(jobs, done):
        result[arch][0].append(cubin)
        result[arch][1].append(log)
    return {arch: (cubins, "\n".join(logs)) for arch, (cubins, logs) in result.items()}


@pytest.fixture(params=ARCHS)
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


def test_every_instantiation_is_built_without_spills(compiled):
    arch, _, log = compiled
    entries = re.findall(r"Compiling entry function '(\w+)'", log)
    assert len(entries) == len(source.all_name_expressions())
    spills = re.findall(
        r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill", log
    )
    assert len(spills) == len(entries)
    assert all(frame == stores == loads == "0" for frame, stores, loads in spills), log


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
