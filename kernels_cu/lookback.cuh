// What the tile kernels (tile_scan in scan.cu, row_scan in rows.cuh, chan_scan in channels.cuh)
// share: the modes and the status words of the decoupled look-back (Merrill & Garland, 2016).
#pragma once

#include "affine.cuh"

namespace linscan {

constexpr int WARP = 32;

enum Mode : int { FORWARD = 0, FINAL = 1, BACKWARD = 2 };

constexpr unsigned AGGREGATE = 1u;  // status flag: the tile's own map is published
constexpr unsigned PREFIX = 2u;     // status flag: the state leaving the tile is published

// The lean kernels' status words carry the call's epoch above the flag, so that scratch kept
// between calls needs no zeroing: a word another call wrote reads as no flag at all. Their
// tile counter is never reset either: a call's tiles are numbered from `tile0`, the count the
// calls before it on this scratch took (linscan.backends.cuda.backend._Scratch).
__device__ __forceinline__ unsigned tagged(unsigned epoch, unsigned flag) {
    return epoch << 2 | flag;
}
__device__ __forceinline__ unsigned flag_of(unsigned word, unsigned epoch) {
    return (word >> 2) == epoch ? (word & 3u) : 0u;
}

// This block's tile: the number of blocks of this launch that took theirs before it (blocks
// start in any order, so a tile's predecessors are running or done), or without scratch its
// index. A number past the grid means that the scratch's counter and the call's tile0
// disagree (a launch counted that never ran, or one replayed): stop the kernel (the launch
// fails) rather than compute a tile that is not there and write past the arrays.
__device__ __forceinline__ unsigned tile_number(unsigned* status, unsigned tile0) {
    const unsigned tile = status ? atomicAdd(status, 1u) - tile0 : blockIdx.x;
    if (tile >= gridDim.x) __trap();
    return tile;
}

// A flag read that orders the reads after it (the publisher fenced its values before the flag).
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

}  // namespace linscan
