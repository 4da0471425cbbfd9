// Matrix recurrences h[t] = A[t] @ h[t-1] + x[t] (linscan.matscan) on CuPy arrays, with the
// state a vector of D = 1..8 values held in registers (D a template argument). Opt-in until a
// GPU run shows them right (linscan.backends.cuda.matrix.ENABLED): they have only run on the
// host (tests/cuda/test_cuda_matrix.py builds this file for the CPU and runs it there).
//
// The canonical layout is the scalar kernels' with the state last: x and h are (O, T, I, D),
// contiguous; A is (O, T, I, D, D) read through element strides (zero where one matrix
// serves every step or lane). A lane is (o, i); its steps are cut into C chunks of L steps in
// walk order (the last may be shorter), and each kernel gives a thread one (chunk, lane) pair,
// lanes fastest, so that the threads of a warp read neighbouring lanes of one step:
//
//   mat_reduce     the affine map of a chunk, s -> M s + b, in the wide type (double, or
//                  complex<double>): b walked from zero, M the product of the chunk's matrices
//                  (one D x D product per step; skipped where A is the same at every step,
//                  whose power the host computes by repeated squaring). The maps are stored
//                  as a matrix recurrence of their own, (O, C - 1, I) with the chunks as its
//                  steps: the host scans them with these same kernels into each chunk's
//                  entering state (linscan.backends.cuda.matrix), a lane whose states are not
//                  all finite, rounded, being walked whole (as the loop would walk it);
//   mat_walk       each chunk walked from its entering state, writing h (or, for the final
//                  state alone, only the last chunk); the walk of a lane's last chunk leaves
//                  the lane's final state.
//
// The backward pass (linscan.matscan_backward) walks against the forward scan with a carry c,
// the gradient flowing into the step walked from: g[t] = grad_h[t] + c, grad_x[t] = g,
// grad_A[t] = g h[t-1]^H, c <- A[t]^H g. The carry is itself an affine recurrence
// (c <- A[t]^H c + A[t]^H grad_h[t]), so it runs the same way: mat_reduce with `back` (the
// conjugate transposes), the maps scanned from a zero carry, and mat_back_walk.
//
// The launches run in order on one stream, so no kernel needs a look-back or a flag.
#include "numeric.cuh"

namespace linscan {

constexpr int MAT_THREADS = 128;  // threads per block (the host build runs blocks of 128)

// The wide type of the maps, and the conversion to it from the work type.
template <typename S>
struct Wide {
    using T = double;
};
template <typename R>
struct Wide<Complex<R>> {
    using T = Complex<double>;
};
__device__ __forceinline__ double widen(float v) { return v; }
__device__ __forceinline__ double widen(double v) { return v; }
template <typename R>
__device__ __forceinline__ Complex<double> widen(const Complex<R>& v) {
    return {static_cast<double>(v.re), static_cast<double>(v.im)};
}

// Where one chunk's steps are, and the strides of A (elements). Kernels take the fields as
// scalars (MAT_PARAMS) and build it.
struct MatLayout {
    long long O, T, I, L, C;  // outer rows, steps, channels, chunk length, chunks
    long long sa_o, sa_t, sa_i, sa_j, sa_k;  // A's strides
    int down;
    __device__ __forceinline__ long long step(long long k) const { return down ? T - 1 - k : k; }
    __device__ __forceinline__ long long begin(long long c) const { return c * L; }
    __device__ __forceinline__ long long end(long long c) const { return min(T, (c + 1) * L); }
    __device__ __forceinline__ long long a_at(long long o, long long t, long long i) const {
        return o * sa_o + t * sa_t + i * sa_i;
    }
};
#define MAT_PARAMS                                                                           \
    long long O, long long T, long long I, long long L, long long C, long long sa_o,          \
        long long sa_t, long long sa_i, long long sa_j, long long sa_k, int down
#define MAT_LAYOUT MatLayout{O, T, I, L, C, sa_o, sa_t, sa_i, sa_j, sa_k, down}

// A thread's (chunk, lane) pair, the lane as (o, i), and the steps [k0, k1) of its chunk in
// walk order.
struct Chunk {
    long long c, lane, o, i, k0, k1;
};

// The pair of this thread in a launch over `count` chunks of every lane, lanes fastest; false
// past them.
__device__ __forceinline__ bool chunk_of(const MatLayout& g, long long count, Chunk& w) {
    const long long lanes = g.O * g.I;
    const long long n = static_cast<long long>(blockIdx.x) * MAT_THREADS + threadIdx.x;
    if (n >= lanes * count) return false;
    w.c = n / lanes;
    w.lane = n % lanes;
    w.o = w.lane / g.I;
    w.i = w.lane % g.I;
    w.k0 = g.begin(w.c);
    w.k1 = g.end(w.c);
    return true;
}

// chunk_of for a walk over all C chunks: a lane marked bad is walked whole, from its entering
// state, by its chunk-0 thread (its other threads: false).
__device__ __forceinline__ bool walk_of(const MatLayout& g, const int* bad, Chunk& w) {
    if (!chunk_of(g, g.C, w)) return false;
    if (bad[w.lane]) {
        if (w.c != 0) return false;
        w.k1 = g.T;
    }
    return true;
}

// One step of the walk: s <- A s + v (A read through its strides).
template <typename U, typename S, int D>
__device__ __forceinline__ void step_state(const S* a, const MatLayout& g, const S* v,
                                           U (&s)[D]) {
    U n[D];
#pragma unroll
    for (int j = 0; j < D; ++j) {
        U acc = U(v[j]);
#pragma unroll
        for (int k = 0; k < D; ++k) acc = muladd(U(a[j * g.sa_j + k * g.sa_k]), s[k], acc);
        n[j] = acc;
    }
#pragma unroll
    for (int j = 0; j < D; ++j) s[j] = n[j];
}

// Entry (j, q) of the matrix a walk applies: A's, or with `back` its conjugate transpose's.
template <typename W, typename S>
__device__ __forceinline__ W entry(const S* a, const MatLayout& g, int j, int q, bool back) {
    return back ? conj_of(widen(a[q * g.sa_j + j * g.sa_k])) : widen(a[j * g.sa_j + q * g.sa_k]);
}

// The map of chunk c of each lane (threads: lanes x chunks `count`, lanes fastest): b from
// zero and, with PRODUCT, M the product of the chunk's matrices, in the wide type, stored as
// (O, count, I, D, D) and (O, count, I, D). With `back` the map of the backward carry, x being
// grad_h: a step takes b to A^H (x + b), and M is the product of the A^H. PRODUCT is a
// template argument: its two D x D arrays of the wide type spill registers at large D, which
// the launches for a matrix constant in time (a filter's) need not carry.
template <typename S, int D, bool PRODUCT>
__global__ void __launch_bounds__(MAT_THREADS)
    mat_reduce(const S* A, const S* x, MAT_PARAMS, long long count, int back,
               typename Wide<S>::T* M, typename Wide<S>::T* b) {
    using W = typename Wide<S>::T;
    const MatLayout g = MAT_LAYOUT;
    Chunk w;
    if (!chunk_of(g, count, w)) return;
    const long long o = w.o, i = w.i;
    W s[D], P[D][D];
#pragma unroll
    for (int j = 0; j < D; ++j) {
        s[j] = W(0.0);
#pragma unroll
        for (int k = 0; k < D; ++k) P[j][k] = W(j == k ? 1.0 : 0.0);
    }
    for (long long k = w.k0; k < w.k1; ++k) {
        const long long t = g.step(k);
        const S* a = A + g.a_at(o, t, i);
        const S* v = x + ((o * g.T + t) * g.I + i) * D;
        W n[D];
        if (back) {
#pragma unroll
            for (int q = 0; q < D; ++q) s[q] = s[q] + widen(v[q]);
#pragma unroll
            for (int j = 0; j < D; ++j) {
                W acc = W(0.0);
#pragma unroll
                for (int q = 0; q < D; ++q) acc = muladd(entry<W>(a, g, j, q, true), s[q], acc);
                n[j] = acc;
            }
        } else {
#pragma unroll
            for (int j = 0; j < D; ++j) {
                W acc = widen(v[j]);
#pragma unroll
                for (int q = 0; q < D; ++q) acc = muladd(entry<W>(a, g, j, q, false), s[q], acc);
                n[j] = acc;
            }
        }
#pragma unroll
        for (int j = 0; j < D; ++j) s[j] = n[j];
        if (PRODUCT) {
            W Q[D][D];
#pragma unroll
            for (int j = 0; j < D; ++j)
#pragma unroll
                for (int m = 0; m < D; ++m) {
                    W acc = W(0.0);
#pragma unroll
                    for (int q = 0; q < D; ++q)
                        acc = muladd(entry<W>(a, g, j, q, back), P[q][m], acc);
                    Q[j][m] = acc;
                }
#pragma unroll
            for (int j = 0; j < D; ++j)
#pragma unroll
                for (int m = 0; m < D; ++m) P[j][m] = Q[j][m];
        }
    }
    const long long at = (o * count + w.c) * g.I + i;  // (O, count, I)
    W* bm = b + at * D;
#pragma unroll
    for (int j = 0; j < D; ++j) bm[j] = s[j];
    if (PRODUCT) {
        W* Mm = M + at * D * D;
#pragma unroll
        for (int j = 0; j < D; ++j)
#pragma unroll
            for (int m = 0; m < D; ++m) Mm[j * D + m] = P[j][m];
    }
}

// Chunk c of each lane walked from its entering state, starts (O, C, I, D) (threads: lanes x C,
// lanes fastest),
// writing h where `write`; a lane marked bad is walked whole by its chunk-0 thread. Without
// `write` only the last chunk is walked (a final state). The walk that ends a lane writes its
// final state to s.
template <typename S, int D>
__global__ void __launch_bounds__(MAT_THREADS)
    mat_walk(const S* A, const S* x, MAT_PARAMS, const S* starts, const int* bad, S* h, S* s,
             int write) {
    using U = typename Num<S>::T;
    const MatLayout g = MAT_LAYOUT;
    Chunk w;
    if (!walk_of(g, bad, w) || (!write && w.k1 != g.T)) return;
    const long long o = w.o, i = w.i;
    const S* start = starts + ((o * g.C + w.c) * g.I + i) * D;
    U st[D];
#pragma unroll
    for (int j = 0; j < D; ++j) st[j] = Num<S>::load(start[j]);
    for (long long k = w.k0; k < w.k1; ++k) {
        const long long t = g.step(k);
        const long long at = ((o * g.T + t) * g.I + i) * D;
        step_state<U, S, D>(A + g.a_at(o, t, i), g, x + at, st);
        if (write) {
#pragma unroll
            for (int j = 0; j < D; ++j) h[at + j] = Num<S>::store(st[j]);
        }
    }
    if (w.k1 == g.T) {
#pragma unroll
        for (int j = 0; j < D; ++j) s[w.lane * D + j] = Num<S>::store(st[j]);
    }
}

// The backward walk of chunk c of each lane from its entering carry, starts (O, C, I, D) (threads:
// lanes x C, lanes fastest; a lane marked bad walked whole by its chunk-0 thread): writes
// grad_x (gx, shaped as h) and grad_A (gA, (O, T, I, D, D)); h[t-1] is the forward state before
// step t in the forward scan's order (hb, (O, I, D), before its first step). The walk that
// ends a lane writes the carry it leaves, the gradient for h0, to c_out.
template <typename S, int D>
__global__ void __launch_bounds__(MAT_THREADS)
    mat_back_walk(const S* A, const S* h, const S* gh, const S* hb, MAT_PARAMS, const S* starts,
                  const int* bad, S* gx, S* gA, S* c_out) {
    using U = typename Num<S>::T;
    const MatLayout g = MAT_LAYOUT;
    Chunk w;
    if (!walk_of(g, bad, w)) return;
    const long long o = w.o, i = w.i, lane = w.lane;
    U carry[D];
#pragma unroll
    for (int j = 0; j < D; ++j)
        carry[j] = Num<S>::load(starts[((o * g.C + w.c) * g.I + i) * D + j]);
    for (long long k = w.k0; k < w.k1; ++k) {
        const long long t = g.step(k);
        const long long prev = g.down ? t - 1 : t + 1;  // the forward scan's previous step
        const long long at = ((o * g.T + t) * g.I + i) * D;
        const S* hp = (prev >= 0 && prev < g.T) ? h + ((o * g.T + prev) * g.I + i) * D
                                                : hb + lane * D;
        const S* a = A + g.a_at(o, t, i);
        U grad[D];
#pragma unroll
        for (int j = 0; j < D; ++j) {
            grad[j] = Num<S>::load(gh[at + j]) + carry[j];
            gx[at + j] = Num<S>::store(grad[j]);
        }
#pragma unroll
        for (int j = 0; j < D; ++j)
#pragma unroll
            for (int q = 0; q < D; ++q)
                gA[(at + j) * D + q] = Num<S>::store(grad[j] * conj_of(Num<S>::load(hp[q])));
#pragma unroll
        for (int q = 0; q < D; ++q) {  // A^H g: the carry to the step before
            U acc = U(0.0);
#pragma unroll
            for (int j = 0; j < D; ++j)
                acc = muladd(conj_of(U(a[j * g.sa_j + q * g.sa_k])), grad[j], acc);
            carry[q] = acc;
        }
    }
    if (w.k1 == g.T) {
#pragma unroll
        for (int j = 0; j < D; ++j) c_out[lane * D + j] = Num<S>::store(carry[j]);
    }
}

}  // namespace linscan
