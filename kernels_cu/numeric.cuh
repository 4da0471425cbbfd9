// The number types of linscan's kernels: what an array stores (S) and what the arithmetic runs
// in (Num<S>::T).
//
//   S                 arithmetic   arrays given by
//   half_t            float        numpy.float16
//   bf16_t            float        ml_dtypes.bfloat16
//   float, double     themselves   numpy.float32, numpy.float64
//   Complex<float>    itself       numpy.complex64
//   Complex<double>   itself       numpy.complex128
//
// 16-bit values are widened on load and rounded to nearest even on store, with PTX's cvt
// (no CUDA headers needed: NVRTC compiles this without an include path). Complex is a plain
// pair laid out as NumPy's complex types; its products use fused multiply-adds.
#pragma once

namespace linscan {

struct half_t {
    unsigned short bits;
};
struct bf16_t {
    unsigned short bits;
};

template <typename R>
struct alignas(2 * sizeof(R)) Complex {
    R re, im;
    Complex() = default;  // trivial: a Complex can live in __shared__ memory
    __device__ __forceinline__ constexpr Complex(R r) : re(r), im(R(0)) {}
    __device__ __forceinline__ constexpr Complex(R r, R i) : re(r), im(i) {}
};

template <typename R>
__device__ __forceinline__ Complex<R> operator*(const Complex<R>& p, const Complex<R>& q) {
    return {fma(p.re, q.re, -p.im * q.im), fma(p.re, q.im, p.im * q.re)};
}
template <typename R>
__device__ __forceinline__ Complex<R> operator+(const Complex<R>& p, const Complex<R>& q) {
    return {p.re + q.re, p.im + q.im};
}
template <typename R>
__device__ __forceinline__ bool operator==(const Complex<R>& p, const Complex<R>& q) {
    return p.re == q.re && p.im == q.im;
}

// p * q + r, fused where the type allows.
__device__ __forceinline__ float muladd(float p, float q, float r) { return fmaf(p, q, r); }
__device__ __forceinline__ double muladd(double p, double q, double r) { return fma(p, q, r); }
template <typename R>
__device__ __forceinline__ Complex<R> muladd(const Complex<R>& p, const Complex<R>& q,
                                             const Complex<R>& r) {
    return {fma(p.re, q.re, fma(-p.im, q.im, r.re)), fma(p.re, q.im, fma(p.im, q.re, r.im))};
}

// The complex conjugate (nothing for real numbers): the backward pass's convention.
__device__ __forceinline__ float conj_of(float v) { return v; }
__device__ __forceinline__ double conj_of(double v) { return v; }
template <typename R>
__device__ __forceinline__ Complex<R> conj_of(const Complex<R>& v) {
    return {v.re, -v.im};
}

// Storage and arithmetic types.
template <typename S>
struct Num {
    using T = S;
    __device__ __forceinline__ static T load(S v) { return v; }
    __device__ __forceinline__ static S store(T v) { return v; }
};
template <>
struct Num<half_t> {
    using T = float;
    __device__ __forceinline__ static float load(half_t v) {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(v.bits));
        return f;
    }
    __device__ __forceinline__ static half_t store(float f) {
        half_t v;
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(v.bits) : "f"(f));
        return v;
    }
};
template <>
struct Num<bf16_t> {
    using T = float;
    __device__ __forceinline__ static float load(bf16_t v) {
        return __uint_as_float(static_cast<unsigned>(v.bits) << 16);
    }
    __device__ __forceinline__ static bf16_t store(float f) {
        bf16_t v;
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(v.bits) : "f"(f));
        return v;
    }
};

// Warp shuffles and cache-global loads of any arithmetic type.
template <typename R>
__device__ __forceinline__ R shfl_up(R v, int delta) {
    return __shfl_up_sync(0xffffffffu, v, delta);
}
template <typename R>
__device__ __forceinline__ Complex<R> shfl_up(const Complex<R>& v, int delta) {
    return {shfl_up(v.re, delta), shfl_up(v.im, delta)};
}
template <typename R>
__device__ __forceinline__ R shfl_down(R v, int delta) {
    return __shfl_down_sync(0xffffffffu, v, delta);
}
template <typename R>
__device__ __forceinline__ Complex<R> shfl_down(const Complex<R>& v, int delta) {
    return {shfl_down(v.re, delta), shfl_down(v.im, delta)};
}
template <typename R>
__device__ __forceinline__ R load_cg(const R* p) {
    return __ldcg(p);
}
template <typename R>
__device__ __forceinline__ Complex<R> load_cg(const Complex<R>* p) {
    const R* parts = reinterpret_cast<const R*>(p);
    return {__ldcg(parts), __ldcg(parts + 1)};
}

}  // namespace linscan
