"""Every kernel instantiation compiles with NVRTC, without a GPU, cleanly (CI has no GPU).

Needs CuPy and pip's NVRTC (the ``nvrtc`` extra); skipped where CuPy is not installed."""

import re

import pytest

from linscan._cuda import source

cupy = pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed to compile kernels")


ARCHS = ("sm_80", "sm_90")


@pytest.fixture(scope="module")
def builds():
    """Both architectures compiled at once (NVRTC runs outside the GIL: two cores, two
    builds)."""
    import concurrent.futures

    try:
        with concurrent.futures.ThreadPoolExecutor(len(ARCHS)) as pool:
            return dict(zip(ARCHS, pool.map(source.compile_offline, ARCHS)))
    except source.CompileError:
        raise
    except Exception as exc:  # NVRTC itself missing: say so rather than pass quietly
        pytest.fail(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); install '.[nvrtc]'")


@pytest.fixture(params=ARCHS)
def compiled(request, builds):
    cubin, log = builds[request.param]
    return request.param, cubin, log


def test_compiles_to_a_cubin(compiled):
    arch, cubin, _ = compiled
    assert cubin[:4] == b"\x7fELF"


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
