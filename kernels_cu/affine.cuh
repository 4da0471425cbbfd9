// Affine maps h -> A * h + B: the algebra of the linear recurrence h[t] = a[t] * h[t-1] + x[t].
//
// A run of steps is one such map; running two runs one after the other composes their maps.
// A run that contains the first step of a row (the canonical layout strings the rows of a call
// one after another along flat time) or a step the caller resets ignores the state it is
// given: RESET marks it, and then B alone is its result. Keeping that as a flag, not as A = 0,
// keeps an inf or NaN of one row out of the next (0 * inf is NaN).
//
// A * h + B is the serial loop's result, inf and NaN included, unless A is infinite or NaN
// (its steps met an infinite decay, or the product overflowed: from a zero state such a run
// holds inf * 0 where the loop holds inf * h), or A is zero and h infinite (a zero product
// may be an underflow the loop, multiplying one decay at a time into inf, never sees): see
// `unsafe`. A composition that applied a map where it was unsafe is marked INEXACT; the
// kernels then walk those steps one after another instead (scan.cu).
#pragma once

#include "numeric.cuh"

namespace linscan {

constexpr int RESET = 1;    // the map ignores the state it is given
constexpr int INEXACT = 2;  // B is not the loop's result: the steps must be walked

template <typename T>
struct Affine {
    T A;
    T B;
    int flags;
};

template <typename T>
__device__ __forceinline__ Affine<T> identity_map() {
    return {T(1), T(0), 0};
}

__device__ __forceinline__ bool finite(float v) { return isfinite(v); }
__device__ __forceinline__ bool finite(double v) { return isfinite(v); }
template <typename R>
__device__ __forceinline__ bool finite(const Complex<R>& v) {
    return isfinite(v.re) && isfinite(v.im);
}

// Whether m applied to h can differ from the loop walking m's steps from h (see above).
template <typename T>
__device__ __forceinline__ bool unsafe(const Affine<T>& m, const T& h) {
    return !(m.flags & RESET) && (!finite(m.A) || (m.A == T(0) && !finite(h)));
}

// The map of `earlier` followed by `later`.
template <typename T>
__device__ __forceinline__ Affine<T> compose(const Affine<T>& earlier, const Affine<T>& later) {
    if (later.flags & RESET) return later;
    const int inexact = (earlier.flags | later.flags) & INEXACT;
    return {later.A * earlier.A, later.A * earlier.B + later.B,
            (earlier.flags & RESET) | inexact | (unsafe(later, earlier.B) ? INEXACT : 0)};
}

template <typename T>
__device__ __forceinline__ T apply(const Affine<T>& m, const T& h) {
    return (m.flags & RESET) ? m.B : m.A * h + m.B;
}

// Whether apply(m, h) is the loop's result.
template <typename T>
__device__ __forceinline__ bool exact(const Affine<T>& m, const T& h) {
    return !(m.flags & INEXACT) && !unsafe(m, h);
}

// The map held `delta` lanes below this one in the warp (this lane's own where there is none).
template <typename T>
__device__ __forceinline__ Affine<T> shuffle_up(const Affine<T>& m, int delta) {
    return {shfl_up(m.A, delta), shfl_up(m.B, delta), shfl_up(m.flags, delta)};
}

// The map held `delta` lanes above this one in the warp (this lane's own where there is none).
template <typename T>
__device__ __forceinline__ Affine<T> shuffle_down(const Affine<T>& m, int delta) {
    return {shfl_down(m.A, delta), shfl_down(m.B, delta), shfl_down(m.flags, delta)};
}

}  // namespace linscan
