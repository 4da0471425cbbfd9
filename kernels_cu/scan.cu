// linscan's CUDA kernels: the linear recurrence h[t] = a[t] * h[t-1] + x[t] on the canonical
// layout (O, T, I), C-contiguous: row o, step t, channel i at flat index (o * T + t) * I + i.
//
// The rows of a call are strung one after another along "flat time" n = o * T + t (N = O * T
// steps for each channel i); a row's first step ignores the state before it (affine.cuh). Time
// is walked in logical order u = 0 .. N-1, the flat step being n = u, or n = N-1-u when `down`.
//
// tile_scan: a single-pass scan with decoupled look-back (Merrill & Garland, 2016). A block
//   takes a tile of NS * S logical steps by CW channels (a dynamic tile number keeps
//   predecessors running), stages it through shared memory with coalesced loads, scans it
//   (each thread S steps of one channel, then a block-wide combine), publishes the tile's map,
//   looks back over its predecessors' published maps or prefixes for the state entering the
//   tile, publishes its own prefix, and writes its results coalesced. Each input and output
//   element crosses device memory once. Where a map cannot stand for its steps (an infinite
//   or NaN product, or a zero one meeting an infinite state: affine.cuh), the tile publishes
//   no map, looks back no further than its predecessor's prefix, and its threads walk their
//   steps in turn: inf and NaN land where the serial loop puts them.
// serial_scan: one thread per (row, channel) walking time: the serial baseline of Martin &
//   Cundy, kept for comparison (method="sequential").
// row_scan (rows.cuh) and chan_scan (channels.cuh): lean tile kernels for calls whose arrays
//   are all laid out as x, time-contiguous rows and time-major channels; opt-in (issue 17).
//
// MODE FORWARD writes h; FINAL writes only each row's last state; BACKWARD runs the
// vector-Jacobian product of a forward scan walked the other way: g[u] = grad_h[u] +
// conj(a[u-1]) g[u-1] in logical order (a of the step the forward scan took after), writing
// grad_x = g, grad_a = g * conj(the forward state before that step) and the gradient for h0
// (conj: the complex convention of linscan.scan_backward; nothing for real numbers).
//
// A step the caller resets (r[t] true) takes x[t] as its state: a reset map, never a multiply
// by zero, so an inf or NaN state stays behind it; in BACKWARD it passes nothing back (grad_a
// and the carry into earlier steps are zero there).
//
// S is the storage type of the arrays and T = Num<S>::T the arithmetic type (numeric.cuh):
// 16-bit arrays are computed in float. Scratch values, a_value, grad_a and s_out are T: the
// gradients of broadcast inputs are summed afterwards, and the sum must not add up 16-bit
// roundings; states are small.
//
// Every size and offset is 64-bit. Arguments (all modes, both kernels):
//   a, a_so, a_st, a_si, a_value  decays read through their own strides (a broadcast decay is
//                                 never materialized); a null `a` means a_value everywhere
//   r, r_so, r_st, r_si           resets (bytes, 0 or 1) by strides; null means none
//   v                             x (FORWARD, FINAL) or grad_h (BACKWARD)
//   hf                            BACKWARD: the forward states h; else unused
//   h0, h0_so, h0_si              initial states by strides over (O, I); null means zeros
//   y                             FORWARD: h; BACKWARD: grad_x
//   ga                            BACKWARD: grad_a
//   s_out                         (O, I) contiguous: FINAL: the last states; BACKWARD: the
//                                 gradient for h0 (may be null)
//   O, Tn, I, down                the canonical shape and the walking direction
//   log2s, groups                 tile_scan: S = 2^log2s steps per thread; ceil(I / CW)
//   status, agg_a, agg_b, agg_r,  tile_scan scratch: status = [tile counter, flag per tile]
//   incl                          zeroed before the launch; CW values per tile (agg_r: the
//                                 reset flag of a published map). status is null when a
//                                 single tile covers all of flat time.
#include "lookback.cuh"
#include "rows.cuh"
#include "channels.cuh"

namespace linscan {

// (inline: a build of row_scan alone leaves these unused without a warning)
inline constexpr int BLOCK = 256;
inline constexpr int WARPS = BLOCK / WARP;
inline constexpr int MIN_BLOCKS = 2;  // resident blocks per SM the register budget must allow
inline constexpr int BATCH = 8;  // staging loads in flight per thread and array (4 if 16-byte)

inline constexpr unsigned char CUT = 1;   // staged flag: the step's map ignores the state before it
inline constexpr unsigned char MUTE = 2;  // staged flag (BACKWARD): the step resets, grad_a = 0

// Row o and step t of a flat step, moved along in logical order.
struct Cursor {
    long long o, t;

    __device__ __forceinline__ void seek(long long n, long long Tn) {
        o = n / Tn;
        t = n - o * Tn;
    }
    __device__ __forceinline__ void advance(long long steps, long long Tn, bool down) {
        if (!down) {
            t += steps;
            if (t >= Tn) {
                const long long q = t / Tn;
                o += q;
                t -= q * Tn;
            }
        } else {
            t -= steps;
            if (t < 0) {
                const long long q = (Tn - 1 - t) / Tn;
                o -= q;
                t += q * Tn;
            }
        }
    }
    __device__ __forceinline__ void next(long long Tn, bool down) {
        if (!down) {
            if (++t == Tn) t = 0, ++o;
        } else {
            if (t-- == 0) t = Tn - 1, --o;
        }
    }
    __device__ __forceinline__ bool row_start(long long Tn, bool down) const {
        return t == (down ? Tn - 1 : 0);
    }
    __device__ __forceinline__ bool row_end(long long Tn, bool down) const {
        return t == (down ? 0 : Tn - 1);
    }
};

template <typename S>
__device__ __forceinline__ typename Num<S>::T decay(const S* a, long long so, long long st,
                                                    long long si, typename Num<S>::T value,
                                                    long long o, long long t, long long i) {
    return a ? Num<S>::load(a[o * so + t * st + i * si]) : value;
}

template <typename S>
__device__ __forceinline__ typename Num<S>::T initial(const S* h0, long long so, long long si,
                                                      long long o, long long i) {
    return h0 ? Num<S>::load(h0[o * so + i * si]) : typename Num<S>::T(0);
}

__device__ __forceinline__ bool resets(const unsigned char* r, long long so, long long st,
                                       long long si, long long o, long long t, long long i) {
    return r && r[o * so + t * st + i * si];
}

template <typename S, int CW, int MODE>
__global__ void __launch_bounds__(BLOCK, MIN_BLOCKS)
    tile_scan(const S* a, long long a_so, long long a_st, long long a_si,
              typename Num<S>::T a_value, const unsigned char* r, long long r_so,
              long long r_st, long long r_si, const S* v, const S* hf, const S* h0,
              long long h0_so, long long h0_si, S* y, typename Num<S>::T* ga,
              typename Num<S>::T* s_out, long long O, long long Tn, long long I, int down,
              int log2s, long long groups, unsigned int* status, typename Num<S>::T* agg_a,
              typename Num<S>::T* agg_b, int* agg_r, typename Num<S>::T* incl) {
    using T = typename Num<S>::T;
    static_assert(CW >= 1 && CW <= WARP && (CW & (CW - 1)) == 0, "CW: a power of 2 up to 32");
    constexpr int NS = BLOCK / CW;  // threads per channel, each S consecutive steps
    constexpr int LOADS = sizeof(T) > 8 ? BATCH / 2 : BATCH;
    constexpr int STAGED = MODE == BACKWARD ? 3 : 2;
    const int S_ = 1 << log2s;
    const long long TT = static_cast<long long>(NS) * S_;  // steps per tile
    const long long N = O * Tn;
    const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP;
    const int c = tid % CW, k = tid / CW;

    // Staged tile: step j of channel c at (j + j / S) * CW + c; the CW words of padding after
    // each thread's S steps keep the walks below free of bank conflicts.
    extern __shared__ __align__(16) unsigned char smem_raw[];
    T* staged_a = reinterpret_cast<T*>(smem_raw);  // decays
    T* staged_v = staged_a + BLOCK * (S_ + 1);     // x or grad_h; results are written over them
    T* staged_h = staged_v + BLOCK * (S_ + 1);     // BACKWARD: the next forward state; grad_a
    unsigned char* staged_flags =
        reinterpret_cast<unsigned char*>(staged_a + STAGED * BLOCK * (S_ + 1));
    // Warp totals (A, B, reset flags), then the look-back window.
    __shared__ T window_A[BLOCK], window_B[BLOCK];
    __shared__ int window_reset[BLOCK];
    __shared__ T carry[WARP];  // the state entering the tile, per channel
    __shared__ unsigned s_tile;
    __shared__ int s_flag;

    long long tile = blockIdx.x;
    if (status) {
        if (tid == 0) s_tile = atomicAdd(status, 1u);
        __syncthreads();
        tile = s_tile;
    }
    const long long jt = tile / groups, g = tile - jt * groups;
    const long long u0 = jt * TT;
    const long long i = g * CW + c;
    const bool chan = i < I;

    // Stage: thread (k, c) loads steps k, k + NS, k + 2 NS, ... of channel c (coalesced).
    {
        Cursor cur{0, 0};
        if (u0 + k < N) cur.seek(down ? N - 1 - (u0 + k) : u0 + k, Tn);
        for (int it0 = 0; it0 < S_; it0 += LOADS) {
            T d[LOADS], x[LOADS], p[LOADS];
            unsigned char f[LOADS];
#pragma unroll
            for (int b = 0; b < LOADS; ++b) {
                const long long u = u0 + k + static_cast<long long>(it0 + b) * NS;
                d[b] = T(1);
                x[b] = T(0);
                p[b] = T(0);
                f[b] = 0;
                if (it0 + b < S_ && chan && u < N) {
                    x[b] = Num<S>::load(v[(cur.o * Tn + cur.t) * I + i]);
                    if (MODE != BACKWARD) {
                        d[b] = decay(a, a_so, a_st, a_si, a_value, cur.o, cur.t, i);
                        f[b] = resets(r, r_so, r_st, r_si, cur.o, cur.t, i) ? CUT : 0;
                    } else {
                        const long long tp = cur.t + (down ? 1 : -1);  // logical step before
                        const long long tn = cur.t - (down ? 1 : -1);  // logical step after
                        if (tp >= 0 && tp < Tn) {
                            d[b] = conj_of(decay(a, a_so, a_st, a_si, a_value, cur.o, tp, i));
                            if (resets(r, r_so, r_st, r_si, cur.o, tp, i)) f[b] = CUT;
                        }
                        if (tn >= 0 && tn < Tn) p[b] = Num<S>::load(hf[(cur.o * Tn + tn) * I + i]);
                        if (resets(r, r_so, r_st, r_si, cur.o, cur.t, i)) f[b] |= MUTE;
                    }
                }
                if (u + NS < N) cur.advance(NS, Tn, down);
            }
#pragma unroll
            for (int b = 0; b < LOADS; ++b) {
                if (it0 + b >= S_) break;
                const int j = k + (it0 + b) * NS;
                const int slot = (j + (j >> log2s)) * CW + c;
                staged_a[slot] = d[b];
                staged_v[slot] = x[b];
                if (MODE == BACKWARD) staged_h[slot] = p[b];
                if (r) staged_flags[slot] = f[b];
            }
        }
    }
    __syncthreads();

    // This thread's steps: S consecutive ones from ub (fewer at the end of flat time).
    const long long ub = u0 + static_cast<long long>(k) * S_;
    int steps = 0;
    Cursor first{0, 0};
    if (chan && ub < N) {
        steps = static_cast<int>(min(static_cast<long long>(S_), N - ub));
        first.seek(down ? N - 1 - ub : ub, Tn);
    }
    const int base = k * (S_ + 1) * CW + c;

    // A step's state from the state before it: a row's first step (and a reset step) ignore it.
    auto step = [&](const Cursor& cur, T d, T x, unsigned char f, T before) -> T {
        if (f & CUT) return x;
        if (cur.row_start(Tn, down))
            return MODE == BACKWARD ? x : muladd(d, initial(h0, h0_so, h0_si, cur.o, i), x);
        return muladd(d, before, x);
    };

    // This thread's steps walked from `state`, writing the results where `write`.
    auto walk = [&](T state, bool write) -> T {
        Cursor cur = first;
        for (int s = 0; s < steps; ++s) {
            const int slot = base + s * CW;
            const T d = staged_a[slot], x = staged_v[slot];
            const unsigned char f = r ? staged_flags[slot] : 0;
            const bool end = cur.row_end(Tn, down);
            const T h = step(cur, d, x, f, state);
            state = h;
            if (write && MODE == FORWARD) staged_v[slot] = h;
            if (write && MODE == FINAL && end) s_out[cur.o * I + i] = h;
            if (write && MODE == BACKWARD) {
                staged_v[slot] = h;
                const T before = end ? initial(h0, h0_so, h0_si, cur.o, i) : staged_h[slot];
                staged_h[slot] = (f & MUTE) ? T(0) : h * conj_of(before);
                if (end && s_out) {
                    const T da = conj_of(decay(a, a_so, a_st, a_si, a_value, cur.o, cur.t, i));
                    s_out[cur.o * I + i] = (f & MUTE) ? T(0) : da * h;
                }
            }
            cur.next(Tn, down);
        }
        return state;
    };

    Affine<T> m = identity_map<T>();  // the map of this thread's steps (walked: exact)
    {
        Cursor cur = first;
        for (int s = 0; s < steps; ++s) {
            const int slot = base + s * CW;
            const T d = staged_a[slot], x = staged_v[slot];
            const unsigned char f = r ? staged_flags[slot] : 0;
            if ((f & CUT) || cur.row_start(Tn, down)) {
                m.flags = RESET;
                m.A = T(0);
                m.B = step(cur, d, x, f, T(0));
            } else {
                m.A = m.A * d;
                m.B = muladd(d, m.B, x);
            }
            cur.next(Tn, down);
        }
    }

    // Block-wide scan over the NS threads of each channel: within the warp, then warp totals.
    Affine<T> inc = m;
#pragma unroll
    for (int off = CW; off < WARP; off <<= 1) {
        const Affine<T> below = shuffle_up(inc, off);
        if (lane >= off) inc = compose(below, inc);
    }
    if (lane >= WARP - CW) {
        window_A[w * CW + c] = inc.A;
        window_B[w * CW + c] = inc.B;
        window_reset[w * CW + c] = inc.flags;
    }
    __syncthreads();
    Affine<T> excl = identity_map<T>();  // the map of the tile's steps before this thread's
    for (int q = 0; q < w; ++q)
        excl = compose(excl, Affine<T>{window_A[q * CW + c], window_B[q * CW + c],
                                       window_reset[q * CW + c]});
    if constexpr (CW < WARP) {
        const Affine<T> below = shuffle_up(inc, CW);
        if (lane >= CW) excl = compose(excl, below);
    }
    Affine<T> agg = identity_map<T>();  // the tile's map (threads tid < CW)
    if (tid < CW) {
        for (int q = 0; q < WARPS; ++q)
            agg = compose(agg, Affine<T>{window_A[q * CW + c], window_B[q * CW + c],
                                         window_reset[q * CW + c]});
    }
    __syncthreads();  // the look-back window reuses window_A, window_B, window_reset

    // What the tile publishes at once: its prefix where its map ignores its input in every
    // channel (rows start at the same steps in every channel; caller's resets need not), else
    // its map; nothing where its map is inexact in a channel (its prefix comes after it walks).
    constexpr int ABSOLUTE = 0, MAPPED = 1, HELD = 2;
    int kind = ABSOLUTE;
    if (!status) {
        // One tile covers flat time: it starts at a row's first step, so nothing enters it.
        if (tid < CW) carry[c] = T(0);
    } else {
        if (tid < WARP) {
            const bool all = __all_sync(0xffffffffu, tid >= CW || !chan || (agg.flags & RESET));
            const bool held = __any_sync(0xffffffffu, tid < CW && chan && (agg.flags & INEXACT));
            if (tid == 0) s_flag = held ? HELD : (jt == 0 || all) ? ABSOLUTE : MAPPED;
        }
        __syncthreads();
        kind = s_flag;
        if (tid < CW && kind != HELD) {
            if (kind == ABSOLUTE) {
                incl[tile * CW + c] = agg.B;
            } else {
                agg_a[tile * CW + c] = agg.A;
                agg_b[tile * CW + c] = agg.B;
                agg_r[tile * CW + c] = agg.flags;
            }
            __threadfence();
        }
        __syncthreads();
        if (tid == 0 && kind != HELD) {
            __threadfence();
            atomicExch(status + 1 + tile, kind == ABSOLUTE ? PREFIX : AGGREGATE);
        }
        Cursor head{0, 0};
        head.seek(down ? N - 1 - u0 : u0, Tn);
        if (head.row_start(Tn, down)) {
            if (tid < CW) carry[c] = T(0);  // unused: the tile's first step starts a row
        } else {
            // Look back over windows of NS predecessors (same channel group), thread k
            // taking the k-th nearest, until every channel has met a map that ignores its
            // input (a published prefix, or a map with a reset).
            Affine<T> acc = identity_map<T>();  // the maps between that point and this tile
            int ended = 0;  // 1: acc holds the carry; 2: acc is inexact in some channel
            for (long long back = 0;; back += NS) {
                const long long pj = jt - 1 - back - k;
                Affine<T> e{T(1), T(0), RESET};  // before the first tile (never reached)
                if (pj >= 0) {
                    const long long pid = pj * groups + g;
                    unsigned fl;
                    while ((fl = load_acquire(status + 1 + pid)) == 0u) __nanosleep(64);
                    if (fl == PREFIX)
                        e = Affine<T>{T(0), load_cg(incl + pid * CW + c), RESET};
                    else
                        e = Affine<T>{load_cg(agg_a + pid * CW + c), load_cg(agg_b + pid * CW + c),
                                      __ldcg(agg_r + pid * CW + c)};
                }
                window_A[k * CW + c] = e.A;
                window_B[k * CW + c] = e.B;
                window_reset[k * CW + c] = e.flags;
                __syncthreads();
                if (tid < WARP) {
                    // Warp 0 folds the window: lane (cc, part) its part's entries, farthest
                    // first; then the parts fold pairwise, a farther part before a nearer.
                    constexpr int PARTS = WARP / CW, PER = NS / PARTS;
                    const int cc = lane % CW, part = lane / CW;
                    Affine<T> seg = identity_map<T>();
                    for (int q = PER - 1; q >= 0; --q) {
                        const int at = (part * PER + q) * CW + cc;
                        seg = compose(seg, Affine<T>{window_A[at], window_B[at], window_reset[at]});
                    }
#pragma unroll
                    for (int off = CW; off < WARP; off <<= 1) {
                        const Affine<T> farther = shuffle_down(seg, off);
                        if (lane + off < WARP) seg = compose(farther, seg);
                    }
                    if (tid < CW) acc = compose(seg, acc);
                    const bool done =
                        __all_sync(0xffffffffu, tid >= CW || !chan || (acc.flags & RESET));
                    const bool lost =
                        __any_sync(0xffffffffu, tid < CW && chan && (acc.flags & INEXACT));
                    if (tid == 0) s_flag = done ? (lost ? 2 : 1) : 0;
                }
                __syncthreads();
                ended = s_flag;
                if (ended) break;
            }
            if (tid < CW) {
                if (ended == 2) {
                    // An inexact composition: the predecessor's own prefix instead (every
                    // tile publishes one, after its own look-back).
                    const long long pid = (jt - 1) * groups + g;
                    while (load_acquire(status + 1 + pid) != PREFIX) __nanosleep(64);
                    carry[c] = load_cg(incl + pid * CW + c);
                } else {
                    carry[c] = acc.B;  // acc ignores its input now: B is the state itself
                }
            }
        }
    }
    __syncthreads();

    // The states entering this thread's steps and leaving the tile, from the maps; where a map
    // cannot give the loop's result, the threads of each channel walk their steps in turn,
    // each from the state the one before left (in carry[]).
    T entering = apply(excl, carry[c]);
    bool fits = exact(excl, carry[c]);
    T leaving = T(0);
    if (tid < CW) {
        leaving = apply(agg, carry[c]);
        fits = fits && exact(agg, carry[c]);
    }
    if (__syncthreads_or(!fits)) {
        for (int q = 0; q < NS; ++q) {
            if (k == q) {
                entering = carry[c];
                carry[c] = walk(entering, false);
            }
            __syncthreads();
        }
        leaving = carry[c];
    }
    if (status && kind != ABSOLUTE && tid < WARP) {
        if (tid < CW) {
            incl[tile * CW + c] = leaving;
            __threadfence();
        }
        __syncwarp();
        if (tid == 0) {
            __threadfence();
            atomicExch(status + 1 + tile, PREFIX);
        }
    }

    // Walk this thread's steps again from the state entering them, writing the results.
    walk(entering, true);

    if (MODE != FINAL) {
        __syncthreads();
        for (int it = 0; it < S_; ++it) {
            const int j = k + it * NS;
            const long long u = u0 + j;
            if (!chan || u >= N) break;
            const long long n = (down ? N - 1 - u : u) * I + i;
            const int slot = (j + (j >> log2s)) * CW + c;
            y[n] = Num<S>::store(staged_v[slot]);
            if (MODE == BACKWARD) ga[n] = staged_h[slot];
        }
    }
}

template <typename S, int MODE>
__global__ void __launch_bounds__(BLOCK)
    serial_scan(const S* a, long long a_so, long long a_st, long long a_si,
                typename Num<S>::T a_value, const unsigned char* r, long long r_so,
                long long r_st, long long r_si, const S* v, const S* hf, const S* h0,
                long long h0_so, long long h0_si, S* y, typename Num<S>::T* ga,
                typename Num<S>::T* s_out, long long O, long long Tn, long long I, int down) {
    using T = typename Num<S>::T;
    const long long lane = static_cast<long long>(blockIdx.x) * BLOCK + threadIdx.x;
    if (lane >= O * I) return;
    const long long o = lane / I, i = lane - o * I;
    const long long next = down ? -I : I;  // flat offset of the logical step after
    T state = T(0);
    for (long long u = 0; u < Tn; ++u) {
        const long long t = down ? Tn - 1 - u : u;
        const long long n = (o * Tn + t) * I + i;
        const T x = Num<S>::load(v[n]);
        T h;
        if (MODE != BACKWARD) {
            const T d = decay(a, a_so, a_st, a_si, a_value, o, t, i);
            if (resets(r, r_so, r_st, r_si, o, t, i))
                h = x;
            else
                h = muladd(d, u == 0 ? initial(h0, h0_so, h0_si, o, i) : state, x);
            if (MODE == FORWARD) y[n] = Num<S>::store(h);
        } else {
            const long long tp = down ? t + 1 : t - 1;  // the forward step after
            if (u == 0 || resets(r, r_so, r_st, r_si, o, tp, i))
                h = x;
            else
                h = muladd(conj_of(decay(a, a_so, a_st, a_si, a_value, o, tp, i)), state, x);
            const bool end = u == Tn - 1;
            const bool mute = resets(r, r_so, r_st, r_si, o, t, i);
            const T before = end ? initial(h0, h0_so, h0_si, o, i) : Num<S>::load(hf[n + next]);
            y[n] = Num<S>::store(h);
            ga[n] = mute ? T(0) : h * conj_of(before);
            if (end && s_out) {
                const T da = conj_of(decay(a, a_so, a_st, a_si, a_value, o, t, i));
                s_out[o * I + i] = mute ? T(0) : da * h;
            }
        }
        state = h;
    }
    if (MODE == FINAL) s_out[o * I + i] = state;
}

}  // namespace linscan
