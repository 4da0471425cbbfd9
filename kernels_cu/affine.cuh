// Affine maps h -> A * h + B: the algebra of the linear recurrence h[t] = a[t] * h[t-1] + x[t].
//
// A run of steps is one such map; running two runs one after the other composes their maps.
// A run that contains the first step of a row (the canonical layout strings the rows of a call
// one after another along flat time) or a step the caller resets ignores the state it is
// given: `reset` marks it, and then B alone is its result. Keeping that as a flag, not as A = 0, keeps an inf or NaN of one row
// out of the next (0 * inf is NaN).
#pragma once

#include "numeric.cuh"

namespace linscan {

template <typename T>
struct Affine {
    T A;
    T B;
    int reset;
};

template <typename T>
__device__ __forceinline__ Affine<T> identity_map() {
    return {T(1), T(0), 0};
}

// A * h where A is a product of decays that may have underflowed to (signed) zero or
// overflowed to infinity: the serial loop, multiplying one decay at a time, keeps an infinite
// state infinite (with the product's sign) and a zero state zero, where 0 * inf would give NaN.
// (An exact zero or infinite decay meeting an infinite or zero state gives NaN in the loop and
// not here.)
template <typename T>
__device__ __forceinline__ T scale(T A, T h) {
    if (isinf(A) && h == T(0)) return T(0);
    if (A == T(0) && isinf(h)) return signbit(A) ? -h : h;
    return A * h;
}
// Complex products have no such rule in the loop either ((inf + 0j) * 0 is NaN there too).
template <typename R>
__device__ __forceinline__ Complex<R> scale(const Complex<R>& A, const Complex<R>& h) {
    return A * h;
}

// The map of `earlier` followed by `later`.
template <typename T>
__device__ __forceinline__ Affine<T> compose(const Affine<T>& earlier, const Affine<T>& later) {
    if (later.reset) return later;
    return {later.A * earlier.A, scale(later.A, earlier.B) + later.B, earlier.reset};
}

template <typename T>
__device__ __forceinline__ T apply(const Affine<T>& m, T h) {
    return m.reset ? m.B : scale(m.A, h) + m.B;
}

// The map held `delta` lanes below this one in the warp (this lane's own where there is none).
template <typename T>
__device__ __forceinline__ Affine<T> shuffle_up(const Affine<T>& m, int delta) {
    return {shfl_up(m.A, delta), shfl_up(m.B, delta), shfl_up(m.reset, delta)};
}

// The map held `delta` lanes above this one in the warp (this lane's own where there is none).
template <typename T>
__device__ __forceinline__ Affine<T> shuffle_down(const Affine<T>& m, int delta) {
    return {shfl_down(m.A, delta), shfl_down(m.B, delta), shfl_down(m.reset, delta)};
}

}  // namespace linscan
