// row_scan: the lean kernel for time-contiguous rows (the canonical layout with I = 1: flat
// time n = o * Tn + t is the address itself), opt-in until a GPU run shows it right and faster
// (linscan.backends.cuda.plan.FAST).
//
// A block of ROW_THREADS threads takes a tile of ROW_THREADS * ITEMS logical steps; thread k
// holds steps k * ITEMS .. k * ITEMS + ITEMS - 1 of it in registers (ITEMS: 64 bytes of each
// array per thread). Each warp loads its part of the tile with coalesced loads and hands every
// lane its consecutive items through a padded shared-memory exchange (and back for the
// stores), so no address is computed per element beyond base + offset, and offsets inside a
// tile are 32-bit. Row starts cost one 64-bit division per thread; the state h0 enters there,
// folded into the step's x, so that a walk is `h = cut ? x : a * h + x` for every item.
//
// Then as tile_scan (scan.cu): the thread's map of its items, a block scan of the maps, a
// look-back for the state entering the tile, the items walked again from the state entering
// them. The look-back is one warp reading 32 predecessors at once (lane l the (l+1)-th
// nearest) and folding them with shuffles, farthest first. The non-finite rule is tile_scan's:
// a tile whose map is inexact publishes only its prefix, a look-back that composed an inexact
// map waits for its predecessor's prefix, and where a map cannot give the loop's result the
// threads walk their items in turn.
//
// Modes FORWARD (writes h), FINAL (writes each row's last state) and BACKWARD (the forward
// scan's vector-Jacobian product, walked the other way as in tile_scan: writes grad_x and
// grad_a, and the gradient for h0 where asked; the shifted decays, flags and forward states
// come from the neighbouring lane, across warps from one element loaded beside); a decay array
// read as x is (the same flat layout) or a decay by value; resets laid out as x, or none.
// Other calls take tile_scan.
#pragma once

#include "lookback.cuh"

namespace linscan {

constexpr int ROW_THREADS = 128;
constexpr int ROW_WARPS = ROW_THREADS / WARP;
// Resident blocks per SM the register budget must allow: 80 registers a thread (128 for
// complex128), 768 threads an SM (512).
template <typename T>
constexpr int ROW_MIN_BLOCKS = sizeof(T) > 8 ? 4 : 6;
// The backward pass holds a third array (the forward states): 128 registers (170).
template <typename T>
constexpr int ROW_BACKWARD_MIN_BLOCKS = sizeof(T) > 8 ? 3 : 4;

// Items per thread: 64 bytes of each array (16 float, 8 double or complex64, 4 complex128).
template <typename T>
constexpr int ROW_ITEMS = 64 / static_cast<int>(sizeof(T));

// Warp w's ROW_ITEMS * WARP consecutive logical steps from `p` (the address of its first step;
// DIR -1 walking down), `count` of them in the array, loaded striped (coalesced): lane l
// gets steps j * WARP + l in out[j]; past `count`, `fill`. (DIR is a template argument so
// that each load is one base register plus an immediate offset.)
template <int DIR, typename S, typename T, int ITEMS>
__device__ __forceinline__ void load_striped(const S* p, int count, T fill, int lane,
                                             T (&out)[ITEMS]) {
    p += DIR * lane;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j)
        out[j] = j * WARP + lane < count ? Num<S>::load(p[DIR * j * WARP]) : fill;
}

// Striped items handed over blocked through the warp's part of shared memory: lane l then
// holds steps l * ITEMS + j in items[j].
template <typename T, int ITEMS>
__device__ __forceinline__ void to_blocked(T* exchange, int lane, T (&items)[ITEMS]) {
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) exchange[j * WARP + lane + j] = items[j];
    __syncwarp();
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int e = lane * ITEMS + j;
        items[j] = exchange[e + e / WARP];  // the padding keeps both orders free of bank conflicts
    }
    __syncwarp();
}

// Flags (bytes) loaded striped and handed over blocked, as bits of one word.
template <int DIR, int ITEMS>
__device__ __forceinline__ unsigned gather_flags(const unsigned char* p, int count,
                                                 unsigned char* exchange, int lane) {
    p += DIR * lane;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int e = j * WARP + lane;
        exchange[e] = e < count ? p[DIR * j * WARP] : 0;
    }
    __syncwarp();
    unsigned bits = 0;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j)
        if (exchange[lane * ITEMS + j]) bits |= 1u << j;
    __syncwarp();
    return bits;
}

// The opposite of load_striped and to_blocked: lane l's items in[j] stored at the warp's
// steps l * ITEMS + j.
template <int DIR, typename S, typename T, int ITEMS>
__device__ __forceinline__ void scatter(S* p, int count, T* exchange, int lane,
                                        const T (&in)[ITEMS]) {
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int e = lane * ITEMS + j;
        exchange[e + e / WARP] = in[j];
    }
    __syncwarp();
    p += DIR * lane;
#pragma unroll
    for (int j = 0; j < ITEMS; ++j) {
        const int e = j * WARP + lane;
        if (e < count) p[DIR * j * WARP] = Num<S>::store(exchange[e + j]);
    }
    __syncwarp();
}

template <typename S, int MODE>
__global__ void __launch_bounds__(ROW_THREADS, MODE == BACKWARD
                                                    ? ROW_BACKWARD_MIN_BLOCKS<typename Num<S>::T>
                                                    : ROW_MIN_BLOCKS<typename Num<S>::T>)
    row_scan(const S* a, typename Num<S>::T a_value, const unsigned char* r, const S* v,
             const S* hf, const S* h0, long long h0_so, S* y, typename Num<S>::T* ga,
             typename Num<S>::T* s_out, long long N,
             long long Tn, int down, unsigned epoch, unsigned tile0, unsigned* status,
             typename Num<S>::T* agg_a, typename Num<S>::T* agg_b, int* agg_r,
             typename Num<S>::T* incl) {
    using T = typename Num<S>::T;
    constexpr int ITEMS = ROW_ITEMS<T>;
    constexpr int SPAN = WARP * ITEMS;  // steps per warp
    constexpr int TILE = ROW_THREADS * ITEMS;
    static_assert(ITEMS < 32, "the flags of a thread's items (and one more) are bits of a word");

    __shared__ T exchange[ROW_WARPS][SPAN + SPAN / WARP];
    __shared__ unsigned char exchange_flags[ROW_WARPS][SPAN];
    __shared__ T warp_A[ROW_WARPS], warp_B[ROW_WARPS];
    __shared__ int warp_flags[ROW_WARPS];
    __shared__ T carry;
    __shared__ unsigned tile_s;
    __shared__ int head_cut;
    __shared__ long long end_row[MODE != FORWARD ? ROW_THREADS : 1];  // a thread's first end's row

    const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP;
    const long long o_step = down ? -1 : 1;  // the row after, walking

    // Tiles are numbered in the order blocks start (predecessors are running or done).
    if (tid == 0) tile_s = tile_number(status, tile0);
    __syncthreads();
    const long long jt = tile_s;
    const long long wb = jt * TILE + static_cast<long long>(w) * SPAN;  // the warp's first step
    const int count = static_cast<int>(max(0LL, min(static_cast<long long>(SPAN), N - wb)));
    const long long at = down ? N - 1 - wb : wb;  // its flat index (unused past the end)

    // The arrays loaded before any is handed over: one wait for memory, not two or three.
    // (BACKWARD: p holds the forward states h.)
    T d[ITEMS], x[ITEMS], p[ITEMS];  // (p: BACKWARD only; elsewhere the compiler drops it)
    auto load = [&](const S* array, T fill, T(&out)[ITEMS]) {
        if (down)
            load_striped<-1>(array + at, count, fill, lane, out);
        else
            load_striped<1>(array + at, count, fill, lane, out);
    };
    load(v, T(0), x);
    if (a) load(a, T(1), d);
    if (MODE == BACKWARD) load(hf, T(0), p);
    to_blocked<T, ITEMS>(exchange[w], lane, x);
    if (a) {
        to_blocked<T, ITEMS>(exchange[w], lane, d);
    } else {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) d[j] = a_value;
    }
    if (MODE == BACKWARD) to_blocked<T, ITEMS>(exchange[w], lane, p);
    unsigned cut = 0;  // items that ignore the state before them: resets, then row starts
    if (r)
        cut = down ? gather_flags<-1, ITEMS>(r + at, count, exchange_flags[w], lane)
                   : gather_flags<1, ITEMS>(r + at, count, exchange_flags[w], lane);
    // BACKWARD walks against the forward scan: g[u] = grad_h[u] + conj(a[u-1]) g[u-1] in
    // logical order, with the flags of step u-1 (a reset there passes nothing back), and writes
    // grad_a[u] = g[u] conj(h[u+1]) (h0 at a row's last step) unless step u itself resets
    // (`mute`). So the decays and flags move one item up and the forward states one item down:
    // from the neighbouring lane's registers, across warps from one element loaded beside.
    unsigned mute = 0;
    if (MODE == BACKWARD) {
        mute = cut;
        const long long before = wb - 1, after = wb + SPAN;  // logical steps beside the warp's
        const long long at_before = down ? N - 1 - before : before;
        const long long at_after = down ? N - 1 - after : after;
        T d_in = shfl_up(d[ITEMS - 1], 1);
        unsigned cut_in = __shfl_up_sync(0xffffffffu, cut >> (ITEMS - 1), 1) & 1u;
        T p_in = shfl_down(p[0], 1);
        if (lane == 0) {  // (a warp past the end, in the last tile, reads nothing)
            const bool inside = before >= 0 && before < N;
            d_in = a && inside ? Num<S>::load(a[at_before]) : a_value;
            cut_in = r && inside ? r[at_before] != 0 : 0u;
        }
        if (lane == WARP - 1) p_in = after < N ? Num<S>::load(hf[at_after]) : T(0);
#pragma unroll
        for (int j = ITEMS - 1; j > 0; --j) d[j] = d[j - 1];
        d[0] = d_in;
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) d[j] = conj_of(d[j]);
#pragma unroll
        for (int j = 0; j + 1 < ITEMS; ++j) p[j] = p[j + 1];
        p[ITEMS - 1] = p_in;
        cut = (cut << 1 | cut_in) & ((1u << ITEMS) - 1u);
    }

    // This thread's items: `steps` of them from logical step ub. Where rows start among them,
    // h0 enters (folded into x: 0 * inf is NaN, as in the loop) and the walk is cut.
    const long long ub = wb + lane * ITEMS;
    const int steps = max(0, min(ITEMS, count - lane * ITEMS));
    unsigned ends = 0;  // items that end a row (FINAL writes them)
    if (steps > 0) {
        const long long n = down ? N - 1 - ub : ub;
        long long row = n / Tn;  // the first item's row and its position there
        const long long t = n - row * Tn;
        const long long q = down ? Tn - 1 - t : t;
        if (q == 0 || q + steps >= Tn) {  // a row starts or ends among the items
            // Rows start at items first, first + Tn, ... (first <= steps here; rows longer than
            // ITEMS start once at most among them); bit ITEMS: the step after the last item.
            const int first = q == 0 ? 0 : static_cast<int>(Tn - q);
            const int period = Tn <= ITEMS ? static_cast<int>(Tn) : ITEMS + 1;
            unsigned marks = 0;
            int next = first;
#pragma unroll
            for (int j = 0; j <= ITEMS; ++j) {
                if (j == next) {
                    marks |= 1u << j;
                    next += period;
                }
            }
            const unsigned held = (1u << steps) - 1u;  // this thread's items
            const unsigned starts = marks & held;
            ends = (marks >> 1) & held;
            if (MODE != FORWARD && ends) end_row[tid] = row;  // kept out of registers
            if (q != 0) row += o_step;  // the row of the first start
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                if (MODE != BACKWARD && (starts >> j & 1u)) {
                    if (!(cut >> j & 1u)) {
                        const T start = h0 ? Num<S>::load(h0[row * h0_so]) : T(0);
                        x[j] = muladd(d[j], start, x[j]);
                    }
                    row += o_step;
                }
            }
            cut |= starts;
        }
    }
    if (tid == 0) head_cut = cut & 1u;

    // The map of this thread's items (walked: exact). Most threads hold ITEMS steps that
    // neither start a row nor reset: for them, a multiply and a multiply-add a step.
    const bool plain = steps == ITEMS && cut == 0u && (MODE != BACKWARD || (mute | ends) == 0u);
    Affine<T> m = identity_map<T>();
    if (plain) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            m.A = m.A * d[j];
            m.B = muladd(d[j], m.B, x[j]);
        }
    } else {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            if (j < steps) {
                if (cut >> j & 1u) {
                    m = {T(0), x[j], RESET};
                } else {
                    m.A = m.A * d[j];
                    m.B = muladd(d[j], m.B, x[j]);
                }
            }
        }
    }

    // Block scan of the maps: within each warp, then over the warps' totals.
    Affine<T> inc = m;
#pragma unroll
    for (int off = 1; off < WARP; off <<= 1) {
        const Affine<T> below = shuffle_up(inc, off);
        if (lane >= off) inc = compose(below, inc);
    }
    const Affine<T> below = shuffle_up(inc, 1);
    if (lane == WARP - 1) {
        warp_A[w] = inc.A;
        warp_B[w] = inc.B;
        warp_flags[w] = inc.flags;
    }
    __syncthreads();
    Affine<T> excl = identity_map<T>();  // the map of the tile's steps before this thread's
#pragma unroll
    for (int q = 0; q < ROW_WARPS; ++q)
        if (q < w) excl = compose(excl, Affine<T>{warp_A[q], warp_B[q], warp_flags[q]});
    if (lane >= 1) excl = compose(excl, below);
    // The tile's map (read again after the look-back rather than held in registers through it).
    auto tile_map = [&]() {
        Affine<T> agg = identity_map<T>();
#pragma unroll
        for (int q = 0; q < ROW_WARPS; ++q)
            agg = compose(agg, Affine<T>{warp_A[q], warp_B[q], warp_flags[q]});
        return agg;
    };

    // Publish what the tile can at once (tile_scan's rule), then look back.
    constexpr int ABSOLUTE = 0, MAPPED = 1, HELD = 2;
    int kind;
    {
        const Affine<T> agg = tile_map();
        kind = (agg.flags & INEXACT) ? HELD : (jt == 0 || (agg.flags & RESET)) ? ABSOLUTE : MAPPED;
    }
    if (status && tid == 0 && kind != HELD) {
        const Affine<T> agg = tile_map();
        if (kind == ABSOLUTE) {
            incl[jt] = agg.B;
        } else {
            agg_a[jt] = agg.A;
            agg_b[jt] = agg.B;
            agg_r[jt] = agg.flags;
        }
        __threadfence();
        atomicExch(status + 1 + jt, tagged(epoch, kind == ABSOLUTE ? PREFIX : AGGREGATE));
    }
    if (tid == 0) carry = T(0);  // stays so where the tile's first step ignores the state
    if (status && !head_cut && w == 0) {
        // Warp 0: windows of 32 predecessors, lane l the (l+1)-th nearest, folded farthest
        // first, until the maps met ignore their input.
        Affine<T> acc = identity_map<T>();  // (lane 0) the maps between that point and the tile
        int ended = 0;  // 1: acc holds the carry; 2: acc composed an inexact map
        for (long long back = 0; !ended; back += WARP) {
            const long long pj = jt - 1 - back - lane;
            Affine<T> e{T(1), T(0), RESET};  // before the first tile (never reached)
            if (pj >= 0) {
                unsigned fl;
                while ((fl = flag_of(load_acquire(status + 1 + pj), epoch)) == 0u)
                    __nanosleep(32);
                if (fl == PREFIX)
                    e = Affine<T>{T(0), load_cg(incl + pj), RESET};
                else
                    e = Affine<T>{load_cg(agg_a + pj), load_cg(agg_b + pj), __ldcg(agg_r + pj)};
            }
#pragma unroll
            for (int off = 1; off < WARP; off <<= 1) {
                const Affine<T> farther = shuffle_down(e, off);
                if (lane + off < WARP) e = compose(farther, e);
            }
            if (lane == 0) acc = compose(e, acc);
            const int flags = __shfl_sync(0xffffffffu, acc.flags, 0);
            if (flags & RESET) ended = (flags & INEXACT) ? 2 : 1;
        }
        if (lane == 0) {
            if (ended == 2) {
                // An inexact composition: the predecessor's own prefix instead.
                while (flag_of(load_acquire(status + jt), epoch) != PREFIX) __nanosleep(32);
                carry = load_cg(incl + jt - 1);
            } else {
                carry = acc.B;  // acc ignores its input: B is the state itself
            }
        }
    }
    __syncthreads();

    // The states entering this thread's items and leaving the tile, from the maps; where a map
    // cannot give the loop's result, the threads walk their items in turn.
    auto walk = [&](T state) -> T {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j)
            if (j < steps) state = (cut >> j & 1u) ? x[j] : muladd(d[j], state, x[j]);
        return state;
    };
    const T entering_map = carry;
    const Affine<T> agg = tile_map();
    T entering = apply(excl, entering_map);
    T leaving = apply(agg, entering_map);
    if (__syncthreads_or(!exact(excl, entering_map) || !exact(agg, entering_map))) {
        for (int q = 0; q < ROW_THREADS; ++q) {
            if (tid == q) {
                entering = carry;
                carry = walk(entering);
            }
            __syncthreads();
        }
        leaving = carry;
    }
    if (status && kind != ABSOLUTE && tid == 0) {
        incl[jt] = leaving;
        __threadfence();
        atomicExch(status + 1 + jt, tagged(epoch, PREFIX));
    }

    // Walk the items again from the state entering them, writing the results (FINAL: only
    // threads whose items end a row have any to write).
    T state = entering;
    if (MODE == FORWARD && plain) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) x[j] = state = muladd(d[j], state, x[j]);
    } else if (MODE == BACKWARD && plain) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            x[j] = state = muladd(d[j], state, x[j]);
            p[j] = state * conj_of(p[j]);
        }
    } else if (MODE != FINAL || ends) {
        long long o = ends ? end_row[tid] : 0;  // the row of the next end
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
            if (j < steps) {
                state = (cut >> j & 1u) ? x[j] : muladd(d[j], state, x[j]);
                x[j] = state;
                const bool end = ends >> j & 1u;
                if (MODE == FINAL && end) s_out[o] = state;
                if (MODE == BACKWARD) {
                    const bool muted = mute >> j & 1u;
                    const T before = !end ? p[j] : h0 ? Num<S>::load(h0[o * h0_so]) : T(0);
                    p[j] = muted ? T(0) : state * conj_of(before);
                    if (end && s_out) {  // the gradient for h0: the row's first forward step's
                        const long long n = down ? N - 1 - (ub + j) : ub + j;
                        const T da = conj_of(a ? Num<S>::load(a[n]) : a_value);
                        s_out[o] = muted ? T(0) : da * state;
                    }
                }
                if (end) o += o_step;
            }
        }
    }
    if (MODE != FINAL) {
        if (down)
            scatter<-1>(y + at, count, exchange[w], lane, x);
        else
            scatter<1>(y + at, count, exchange[w], lane, x);
    }
    if (MODE == BACKWARD) {
        if (down)
            scatter<-1>(ga + at, count, exchange[w], lane, p);
        else
            scatter<1>(ga + at, count, exchange[w], lane, p);
    }
}

}  // namespace linscan
