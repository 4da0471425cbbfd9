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

// A flag read that orders the reads after it (the publisher fenced its values before the flag).
__device__ __forceinline__ unsigned load_acquire(const unsigned* p) {
    unsigned v;
    asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
}

}  // namespace linscan
