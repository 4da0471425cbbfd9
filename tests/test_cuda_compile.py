"""Every kernel instantiation compiles with NVRTC, without a GPU, cleanly (CI has no GPU).

Needs CuPy and pip's NVRTC (the ``nvrtc`` extra); skipped where CuPy is not installed."""

import re

import pytest

from linscan._cuda import source

cupy = pytest.importorskip("cupy", reason="CuPy (the nvrtc extra) is needed to compile kernels")


@pytest.fixture(scope="module", params=["sm_80", "sm_90"])
def compiled(request):
    try:
        cubin, log = source.compile_offline(request.param)
    except source.CompileError:
        raise
    except Exception as exc:  # NVRTC itself missing: say so rather than pass quietly
        pytest.fail(f"NVRTC is not usable here ({type(exc).__name__}: {exc}); install '.[nvrtc]'")
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
    for name in ("scan.cu", "affine.cuh"):
        (tmp_path / name).write_text((source.kernel_dir() / name).read_text())
    broken = (tmp_path / "scan.cu").read_text().replace("fma(d, m.B, x)", "fma(d, m.B, x, x)")
    (tmp_path / "scan.cu").write_text(broken)
    monkeypatch.setattr(source, "kernel_dir", lambda: tmp_path)
    with pytest.raises(source.CompileError, match="fma"):
        source.compile_offline("sm_90", ["linscan::tile_scan<float, 1, 0>"])
