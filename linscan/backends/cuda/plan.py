"""Launch planning for the CUDA kernels: plain Python, tested on machines without a GPU.

The numbers here must agree with ``kernels_cu/scan.cu``, ``rows.cuh`` and ``channels.cuh``
(``BLOCK``, ``BATCH``, ``ROW_THREADS``, ``CHAN_WIDTH``, the items per thread, the shared
memory layout, the scratch layout); ``linscan.backends.cuda.emulate`` runs the kernels'
algorithm with the same plan, so a wrong decomposition fails on the CPU.

Three tile kernels: ``tile_scan``, general (any strides, channels, modes), and two lean ones
for calls whose decays and resets are laid out as ``x`` or absent: ``row_scan`` for
time-contiguous rows (one channel) and ``chan_scan`` for time-major channels (many), both in
every mode. The lean kernels have not run on a GPU yet: they are opt-in
(``LINSCAN_FAST_KERNELS=1`` in the environment, read at import; ``FAST``) until a GPU run shows
them correct and faster (issue 17).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field

import numpy as np

#: The lean kernels are used where a call fits them (opt-in: see above).
FAST = os.environ.get("LINSCAN_FAST_KERNELS", "") == "1"

BLOCK = 256  # threads per block
MIN_BLOCKS = 2  # tile_scan's resident blocks per SM, by its launch bounds
BATCH = 8  # staging loads in flight per thread and array
WARP = 32
CHANNEL_WIDTHS = (1, 2, 4, 8, 16, 32)  # CW: channels per tile, the kernel's template values
#: Steps per thread S, by the itemsize of the arithmetic type (4: float32 and the 16-bit
#: types, computed in float32; 8: float64 and complex64; 16: complex128), largest first: large
#: tiles amortize the look-back, small ones give small problems enough blocks.
STEPS = {4: (32, 16, 8, 4), 8: (16, 8, 4), 16: (8, 4)}
FORWARD, FINAL, BACKWARD = 0, 1, 2
MODES = (FORWARD, FINAL, BACKWARD)
STAGED_ARRAYS = {FORWARD: 2, FINAL: 2, BACKWARD: 3}  # tile arrays held in shared memory
ROW_THREADS = 128  # threads per row_scan block
#: row_scan's items per thread (64 bytes of each array) and the resident blocks per SM its
#: launch bounds ask the register budget to allow, by the arithmetic type's itemsize.
ROW_ITEMS = {4: 16, 8: 8, 16: 4}
ROW_MIN_BLOCKS = {4: 6, 8: 6, 16: 4}
ROW_BACKWARD_MIN_BLOCKS = {4: 4, 8: 4, 16: 3}  # the backward pass: three arrays in registers
ROW_MODES = (FORWARD, FINAL, BACKWARD)  # the lean kernels' modes: row_scan's, chan_scan's
CHAN_MODES = (FORWARD, FINAL, BACKWARD)
#: The kernels whose status words carry the call's epoch (kernels_cu/lookback.cuh): their
#: scratch is kept zeroed once, not per call; epochs run 1 .. MAX_EPOCH, then it is zeroed.
TAGGED = ("row_scan", "chan_scan")
MAX_EPOCH = 2**30 - 1
CHAN_THREADS = 128  # threads per chan_scan block: CHAN_THREADS // WARP warps stacked in time
CHAN_WIDTH = 128  # chan_scan's channels per tile (four per lane)
#: chan_scan's steps per warp (32 bytes of each array per channel), by arithmetic itemsize,
#: and the resident blocks per SM its launch bounds ask for.
CHAN_ITEMS = {4: 8, 8: 4, 16: 2}
CHAN_MIN_BLOCKS = {4: 4, 8: 3, 16: 3}
CHAN_BACKWARD_MIN_BLOCKS = {4: 3, 8: 2, 16: 2}  # the backward pass: three arrays in registers
DEFAULT_SMEM = 48 * 1024  # dynamic shared memory a launch gets without opting in
TILES_PER_SM = 4  # aim for at least this many tiles per multiprocessor before shrinking S
MAX_GRID = 2**31 - 1
_ALIGN = 256


@dataclass(frozen=True)
class Launch:
    """One kernel launch. ``kernel`` is ``"tile_scan"``, ``"row_scan"`` or ``"serial_scan"``."""

    kernel: str
    cw: int  # channels per tile (tile_scan, chan_scan; 1 for row_scan)
    steps: int  # S, steps per thread (tile_scan; the lean kernels' items)
    groups: int  # channel groups, ceil(I / cw)
    tiles_t: int  # tiles along flat time
    grid: int  # blocks
    smem: int  # dynamic shared memory, bytes
    chained: bool  # tiles look back (several tiles along flat time): scratch needed
    itemsize: int  # of the arithmetic type
    threads: int = BLOCK  # per block
    # Derived once (a launch is planned once per shape and reused: calls are Python-bound):
    log2s: int = field(init=False)
    log2s_c: np.int32 = field(init=False)  # as the kernel's int argument
    tile_steps: int = field(init=False)  # NS * S, NS = threads / cw (chan_scan: warps) a channel
    status_bytes: int = field(init=False)  # zeroed scratch: a tile counter, a flag per tile
    values_bytes: int = field(init=False)  # each of three per-tile arrays: A, B, prefix
    resets_bytes: int = field(init=False)  # the per-tile reset flags of published maps (int)
    scratch_bytes: int = field(init=False)  # status, A, B, prefix, reset flags

    def __post_init__(self):
        chained = self.chained
        derived = dict(
            log2s=self.steps.bit_length() - 1,
            log2s_c=np.int32(self.steps.bit_length() - 1),
            # (chan_scan: each warp holds all the tile's channels, the warps stacked in time)
            tile_steps=self.threads // (WARP if self.kernel == "chan_scan" else self.cw)
            * self.steps,
            status_bytes=_round(4 * (1 + self.grid)) if chained else 0,
            values_bytes=_round(self.grid * self.cw * self.itemsize) if chained else 0,
            resets_bytes=_round(self.grid * self.cw * 4) if chained else 0,
        )
        derived["scratch_bytes"] = (
            derived["status_bytes"] + 3 * derived["values_bytes"] + derived["resets_bytes"]
        )
        for name, value in derived.items():
            object.__setattr__(self, name, value)


def _round(n: int) -> int:
    return -(-n // _ALIGN) * _ALIGN


def channel_width(inner: int) -> int:
    """Channels per tile for ``inner`` channels: the fewest idle lanes, ties to the widest;
    below 8 channels (32 bytes of float32) only widths that hold all of them in one group."""
    best = None
    for cw in CHANNEL_WIDTHS:
        if cw < 8 and cw < inner:
            continue
        cost = -(-inner // cw) * cw
        if best is None or cost <= best[0]:
            best = (cost, cw)
    return best[1]


def smem_bytes(mode: int, steps: int, itemsize: int, resets: bool = False) -> int:
    """Dynamic shared memory of ``tile_scan``: each staged array holds BLOCK * S values plus
    one padding row of CW values per thread's S steps, BLOCK * (S + 1) in all; with
    ``resets``, a byte of flags per staged step follows."""
    flags = BLOCK * (steps + 1) if resets else 0
    return STAGED_ARRAYS[mode] * BLOCK * (steps + 1) * itemsize + flags


@functools.lru_cache(maxsize=1024)
def launch(
    O: int, T: int, I: int, itemsize: int, mode: int, method: str, sms: int = 132, steps=None,
    resets: bool = False, flat: bool = False,
) -> Launch:  # fmt: skip
    """The launch for a call on the canonical shape ``(O, T, I)`` (``T >= 1``) whose
    arithmetic type has ``itemsize`` bytes.

    ``method`` is ``"sequential"`` (one thread per lane), or ``"parallel"`` / ``"auto"``
    (tiles). ``sms`` is the device's multiprocessor count; ``steps`` forces S (tests);
    ``resets``: the call has a resets mask; ``flat``: the lean kernels are wanted and the
    call's decays and resets are laid out as ``x`` or absent (in their modes ``row_scan``
    then takes calls of one channel, ``chan_scan`` calls of many channels (:func:`chan_fits`);
    others take ``tile_scan``).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if itemsize not in STEPS:
        raise ValueError(f"itemsize must be one of {tuple(STEPS)}, got {itemsize}")
    if method == "sequential":
        lanes = O * I
        grid = -(-lanes // BLOCK)
        _check_grid(grid)
        return Launch("serial_scan", 1, 1, 1, 1, grid, 0, False, itemsize)
    if flat and I == 1 and mode in ROW_MODES:
        items = ROW_ITEMS[itemsize]
        tiles = -(-O * T // (ROW_THREADS * items))
        _check_grid(tiles)
        return Launch("row_scan", 1, items, 1, tiles, tiles, 0, tiles > 1, itemsize, ROW_THREADS)
    if flat and mode in CHAN_MODES and chan_fits(T, I, itemsize):
        items = CHAN_ITEMS[itemsize]
        tiles_t = -(-T // (CHAN_THREADS // WARP * items))  # per row: tiles never cross rows
        groups = -(-I // CHAN_WIDTH)
        grid = O * groups * tiles_t
        _check_grid(grid)
        return Launch("chan_scan", CHAN_WIDTH, items, groups, tiles_t, grid, 0, tiles_t > 1,
                      itemsize, CHAN_THREADS)  # fmt: skip
    cw = channel_width(I)
    groups = -(-I // cw)
    flat = O * T
    options = STEPS[itemsize] if steps is None else (steps,)
    for s in options:
        if s < 1 or s & (s - 1):
            raise ValueError(f"steps must be a power of two, got {s}")
        tiles_t = -(-flat // (BLOCK // cw * s))
        if tiles_t * groups >= TILES_PER_SM * sms:
            break
    grid = tiles_t * groups
    _check_grid(grid)
    return Launch(
        "tile_scan", cw, s, groups, tiles_t, grid, smem_bytes(mode, s, itemsize, resets),
        tiles_t > 1, itemsize,
    )  # fmt: skip


def chan_fits(T: int, I: int, itemsize: int) -> bool:
    """Whether ``chan_scan`` suits a call of ``I`` channels over rows of ``T`` steps: its
    groups of 128 channels hold at most one idle lane for five channels (so ``I >= 107``),
    and a row fills at least one tile's steps (shorter rows, strung along flat time, suit
    ``tile_scan``)."""
    groups = -(-I // CHAN_WIDTH)
    return 5 * groups * CHAN_WIDTH <= 6 * I and T >= CHAN_THREADS // WARP * CHAN_ITEMS[itemsize]


def _check_grid(grid: int) -> None:
    if grid > MAX_GRID:
        raise ValueError(f"the call needs {grid} blocks, more than CUDA's {MAX_GRID}")


__all__ = ["Launch", "launch", "channel_width", "smem_bytes", "BLOCK", "MODES", "FAST"]
