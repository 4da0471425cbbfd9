"""The GPU launch plan and source loading: plain Python, no GPU needed."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

from linscan.backends.cuda import plan, source

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "inner, cw",
    [(1, 1), (2, 2), (3, 4), (5, 8), (8, 8), (12, 16), (20, 8), (32, 32), (33, 8), (48, 16),
     (64, 32), (1024, 32), (1000, 8)],
)  # fmt: skip
def test_channel_width_wastes_fewest_lanes(inner, cw):
    assert plan.channel_width(inner) == cw
    groups = -(-inner // cw)
    for other in plan.CHANNEL_WIDTHS:
        if other >= 8 or other >= inner:
            assert -(-inner // other) * other >= groups * cw


@pytest.mark.parametrize("resets", [False, True])
@pytest.mark.parametrize("itemsize", [4, 8, 16])
@pytest.mark.parametrize("mode", plan.MODES)
@pytest.mark.parametrize(
    "O, T, I", [(1, 1, 1), (1, 2**26, 1), (1024, 2**16, 1), (1, 2**16, 1024), (1, 65536, 4),
                (7, 13, 3), (1, 16, 128), (3, 1000, 33), (2**20, 16, 1)],
)  # fmt: skip
def test_tile_plan_covers_every_element_once(O, T, I, mode, itemsize, resets):
    lp = plan.launch(O, T, I, itemsize, mode, "parallel", sms=132, resets=resets)
    assert lp.kernel == "tile_scan"
    assert lp.steps in plan.STEPS[itemsize]
    assert 1 << lp.log2s == lp.steps
    assert lp.groups * lp.cw >= I > (lp.groups - 1) * lp.cw
    flat = O * T
    assert lp.tiles_t * lp.tile_steps >= flat > (lp.tiles_t - 1) * lp.tile_steps
    assert lp.grid == lp.tiles_t * lp.groups
    assert lp.chained == (lp.tiles_t > 1)
    # Shared memory: staged arrays of BLOCK * (S + 1) values (and a byte of flags per staged
    # step with resets), within what an sm_80 block gets.
    values = plan.STAGED_ARRAYS[mode] * itemsize + (1 if resets else 0)
    assert lp.smem == values * plan.BLOCK * (lp.steps + 1)
    assert lp.smem <= 160 * 1024
    if lp.chained:
        assert lp.status_bytes >= 4 * (1 + lp.grid) and lp.status_bytes % 256 == 0
        assert lp.values_bytes >= lp.grid * lp.cw * itemsize and lp.values_bytes % 256 == 0
        assert lp.resets_bytes >= lp.grid * lp.cw * 4
        assert lp.scratch_bytes == lp.status_bytes + 3 * lp.values_bytes + lp.resets_bytes
    else:
        assert lp.scratch_bytes == 0


def test_large_problems_use_large_tiles_and_small_ones_enough_blocks():
    big = plan.launch(1, 2**26, 1, 4, plan.FORWARD, "auto")
    assert big.steps == 32 and big.grid == 2**26 // 8192
    small = plan.launch(1, 65536, 4, 4, plan.FORWARD, "auto", sms=132)
    assert small.steps == 4 and small.grid == 256
    assert plan.launch(1, 16, 4, 4, plan.FORWARD, "auto").grid == 1


@pytest.mark.parametrize("itemsize", [4, 8, 16])
@pytest.mark.parametrize("mode", plan.MODES)
@pytest.mark.parametrize(
    "O, T, I", [(1, 1, 1), (1, 2**26, 1), (1024, 2**16, 1), (2**20, 16, 1), (3, 1000, 2)]
)
def test_row_plan_takes_one_channel_forward_and_final(O, T, I, mode, itemsize):
    lp = plan.launch(O, T, I, itemsize, mode, "auto", flat=True)
    if I != 1 or mode not in plan.ROW_MODES:
        assert lp.kernel == "tile_scan"
        return
    assert lp.kernel == "row_scan" and lp.threads == plan.ROW_THREADS and lp.smem == 0
    assert lp.steps == plan.ROW_ITEMS[itemsize] and lp.cw == lp.groups == 1
    assert lp.tile_steps == plan.ROW_THREADS * lp.steps
    assert lp.tiles_t * lp.tile_steps >= O * T > (lp.tiles_t - 1) * lp.tile_steps
    assert lp.grid == lp.tiles_t and lp.chained == (lp.grid > 1)
    if lp.chained:  # tile_scan's scratch layout, one channel a tile
        assert lp.status_bytes >= 4 * (1 + lp.grid) and lp.values_bytes >= lp.grid * itemsize
    assert plan.launch(O, T, I, itemsize, mode, "auto").kernel == "tile_scan"  # not flat
    assert plan.launch(O, T, I, itemsize, mode, "sequential", flat=True).kernel == "serial_scan"


@pytest.mark.parametrize("itemsize", [4, 8, 16])
@pytest.mark.parametrize("mode", plan.MODES)
@pytest.mark.parametrize(
    "O, T, I", [(1, 2**16, 1024), (3, 1000, 128), (1, 33, 200), (2, 5, 1024), (1, 4000, 100),
                (1, 4000, 129), (1, 4000, 250), (7, 64, 107)],
)  # fmt: skip
def test_channel_plan_takes_many_channels(O, T, I, mode, itemsize):
    """chan_scan: tiles of 128 channels by four warps' items of one row, time tiles fastest;
    only where few of its lanes idle and a row fills a tile's steps."""
    lp = plan.launch(O, T, I, itemsize, mode, "auto", flat=True)
    tile_t = plan.CHAN_THREADS // plan.WARP * plan.CHAN_ITEMS[itemsize]
    groups = -(-I // plan.CHAN_WIDTH)
    fits = 5 * groups * plan.CHAN_WIDTH <= 6 * I and T >= tile_t
    assert plan.chan_fits(T, I, itemsize) == fits
    if not fits or mode not in plan.CHAN_MODES:
        assert lp.kernel == "tile_scan"
        return
    assert lp.kernel == "chan_scan" and lp.threads == plan.CHAN_THREADS and lp.smem == 0
    assert lp.steps == plan.CHAN_ITEMS[itemsize] and lp.cw == plan.CHAN_WIDTH
    assert lp.steps * itemsize == 32 and lp.tile_steps == tile_t
    assert lp.groups == groups and lp.tiles_t * tile_t >= T > (lp.tiles_t - 1) * tile_t
    assert lp.grid == O * groups * lp.tiles_t and lp.chained == (lp.tiles_t > 1)
    if lp.chained:  # a status word a tile, CHAN_WIDTH channels of values and flags
        assert lp.status_bytes >= 4 * (1 + lp.grid)
        assert lp.values_bytes >= lp.grid * plan.CHAN_WIDTH * itemsize
        assert lp.resets_bytes >= lp.grid * plan.CHAN_WIDTH * 4
    assert plan.launch(O, T, I, itemsize, mode, "auto").kernel == "tile_scan"  # not flat


def test_sequential_plan_is_one_thread_per_lane():
    lp = plan.launch(5, 1000, 300, 8, plan.BACKWARD, "sequential")
    assert lp.kernel == "serial_scan" and not lp.chained and lp.smem == 0
    assert lp.grid == -(-5 * 300 // plan.BLOCK)


def test_bad_plans_raise():
    with pytest.raises(ValueError, match="steps"):
        plan.launch(1, 100, 1, 4, plan.FORWARD, "parallel", steps=6)
    with pytest.raises(ValueError, match="itemsize"):
        plan.launch(1, 100, 1, 2, plan.FORWARD, "parallel")
    with pytest.raises(ValueError, match="blocks"):
        plan.launch(2**40, 2**10, 1, 4, plan.FORWARD, "parallel")


def test_plan_constants_match_the_kernel_source():
    text = source.assemble()
    for name in ("BLOCK", "MIN_BLOCKS", "BATCH", "WARP", "ROW_THREADS", "CHAN_THREADS"):
        found = re.search(rf"constexpr int {name} = (\d+);", text)
        assert found and int(found.group(1)) == getattr(plan, name), name
    # row_scan's items (64 bytes of each array) and launch bounds, by arithmetic itemsize
    assert "constexpr int ROW_ITEMS = 64 / static_cast<int>(sizeof(T));" in text
    assert plan.ROW_ITEMS == {size: 64 // size for size in plan.STEPS}
    bounds = re.search(r"constexpr int ROW_MIN_BLOCKS = sizeof\(T\) > 8 \? (\d+) : (\d+);", text)
    assert bounds, "ROW_MIN_BLOCKS changed: update plan.ROW_MIN_BLOCKS and this test"
    wide, narrow = map(int, bounds.groups())
    assert plan.ROW_MIN_BLOCKS == {4: narrow, 8: narrow, 16: wide}
    bounds = re.search(
        r"constexpr int ROW_BACKWARD_MIN_BLOCKS = sizeof\(T\) > 8 \? (\d+) : (\d+);", text
    )
    assert bounds, "ROW_BACKWARD_MIN_BLOCKS changed: update plan and this test"
    wide, narrow = map(int, bounds.groups())
    assert plan.ROW_BACKWARD_MIN_BLOCKS == {4: narrow, 8: narrow, 16: wide}
    # chan_scan's items (32 bytes of each array per channel) and channels per lane
    assert "constexpr int CHAN_ITEMS = 32 / static_cast<int>(sizeof(T));" in text
    assert plan.CHAN_ITEMS == {size: 32 // size for size in plan.STEPS}
    assert "constexpr int CHAN_WIDTH = WARP * CHAN_LANE;" in text
    assert "constexpr int CHAN_LANE = 4;" in text and plan.CHAN_WIDTH == 4 * plan.WARP
    bounds = re.search(r"constexpr int CHAN_MIN_BLOCKS = sizeof\(T\) > 4 \? (\d+) : (\d+);", text)
    assert bounds, "CHAN_MIN_BLOCKS changed: update plan.CHAN_MIN_BLOCKS and this test"
    wide, narrow = map(int, bounds.groups())
    assert plan.CHAN_MIN_BLOCKS == {4: narrow, 8: wide, 16: wide}
    bounds = re.search(
        r"constexpr int CHAN_BACKWARD_MIN_BLOCKS = sizeof\(T\) > 4 \? (\d+) : (\d+);", text
    )
    assert bounds, "CHAN_BACKWARD_MIN_BLOCKS changed: update plan and this test"
    wide, narrow = map(int, bounds.groups())
    assert plan.CHAN_BACKWARD_MIN_BLOCKS == {4: narrow, 8: wide, 16: wide}
    assert "FORWARD = 0, FINAL = 1, BACKWARD = 2" in text
    assert (plan.FORWARD, plan.FINAL, plan.BACKWARD) == (0, 1, 2)


def test_assemble_pastes_local_headers_once(tmp_path):
    (tmp_path / "one.cuh").write_text('#pragma once\n#include "two.cuh"\nint one;\n')
    (tmp_path / "two.cuh").write_text("#pragma once\nint two;\n")
    (tmp_path / "k.cu").write_text('#include "one.cuh"\n#include "two.cuh"\nint k;\n')
    text = source.assemble("k.cu", tmp_path)
    assert "#include" not in text and "#pragma once" not in text
    assert text.count("int two;") == 1 and text.index("int two;") < text.index("int one;")
    assert source.assemble().count("struct Affine") == 1


def test_name_expressions_come_from_the_tables():
    names = source.all_name_expressions()
    per_dtype = 3 * (len(plan.CHANNEL_WIDTHS) + 1) + len(plan.ROW_MODES) + len(plan.CHAN_MODES)
    assert len(names) == len(set(names)) == len(source.C_TYPES) * per_dtype
    assert "linscan::tile_scan<double, 32, 2>" in names
    assert "linscan::row_scan<linscan::half_t, 1>" in names
    assert "linscan::chan_scan<linscan::Complex<double>, 0>" in names
    assert "linscan::row_scan<float, 2>" in names  # the backward pass on rows
    assert "linscan::chan_scan<float, 2>" in names  # and on time-major channels
    assert "linscan::serial_scan<float, 1>" in names


def _kernel_dir_from(path: Path, cwd: Path) -> str:
    code = "import linscan.backends.cuda.source as s; print(s.kernel_dir())"
    env = {"PYTHONPATH": str(path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sources_found_from_a_checkout(tmp_path):
    """A checkout (and an editable install, which points at one): kernels_cu/ beside linscan/."""
    assert Path(_kernel_dir_from(ROOT, tmp_path)) == ROOT / "kernels_cu"


def test_sources_found_in_a_wheel_layout(tmp_path):
    """An installed wheel holds linscan/kernels_cu (setup.cfg maps it there)."""
    import shutil

    site = tmp_path / "site"
    shutil.copytree(ROOT / "linscan", site / "linscan")
    shutil.copytree(ROOT / "kernels_cu", site / "linscan" / "kernels_cu")
    assert Path(_kernel_dir_from(site, tmp_path)) == site / "linscan" / "kernels_cu"


def test_setup_cfg_ships_the_sources_in_the_package():
    text = (ROOT / "setup.cfg").read_text()
    assert re.search(r"package_dir\s*=\s*\n\s*linscan\.kernels_cu = kernels_cu", text)
    assert re.search(r"linscan\.kernels_cu = \*\.cu, \*\.cuh", text)


def test_installed_copy_finds_its_sources(tmp_path):
    """Where linscan is pip-installed (CI installs the checkout), the installed copy has them."""
    code = (
        "import linscan, linscan.backends.cuda.source as s, pathlib;"
        "print(pathlib.Path(linscan.__file__).parent); print(s.kernel_dir())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip("linscan is not installed in this environment (only used from the checkout)")
    package, kernels = (Path(p) for p in done.stdout.split())
    if package.parent == ROOT:  # an editable install: the checkout itself
        assert kernels == ROOT / "kernels_cu"
    else:
        assert kernels == package / "kernels_cu"
