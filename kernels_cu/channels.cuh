// chan_scan: the lean kernel for time-major channels (the canonical layout with many channels
// I: element (o, t, i) at (o * Tn + t) * I + i), opt-in until a GPU run shows it right and
// faster (linscan.backends.cuda.plan.FAST).
//
// A tile is CHAN_WIDTH = 128 channels of one row o over CHAN_WARPS * ITEMS consecutive steps;
// warp w takes ITEMS of those steps, and lane l of it channels l, l + 32, l + 64 and l + 96 of
// the tile's group, every step in registers. Each load instruction of a warp then reads 32
// consecutive elements of one step (coalesced for any I and any offset, no alignment needed)
// and every thread walks its own channels along time: no exchange, no transpose. The tile's
// address is one 64-bit product; the rest are additions.
//
// Then as row_scan (rows.cuh), per channel: each thread's map of its steps, a scan over the
// warps' maps through shared memory, a look-back along the tiles of the same row and channel
// group (warp 0, each lane for its four channels, one predecessor at a time: a predecessor
// publishes all its 128 channels under one status word), the steps walked again from the
// exact entering state. Tiles never cross a row: the first tile of a row starts from h0
// (folded into the first step's x, as row_scan does) and publishes its prefix at once. The
// non-finite rule is tile_scan's: a tile with an inexact channel map publishes only its
// prefix, a look-back that composed an inexact map waits for its predecessor's prefix, and
// where a map cannot give the loop's result the warps walk their steps in turn.
//
// Modes FORWARD (writes h), FINAL (writes each row's last state per channel) and BACKWARD
// (the forward scan's vector-Jacobian product, walked the other way as in row_scan: writes
// grad_x and grad_a, and the gradient for h0 where asked). A warp's steps lie along time in
// its own registers, so BACKWARD's shifted arrays are its loads moved by one step: the
// decays and flags of the step before, the forward states of the step after. Decays laid out
// as x or by value, resets laid out as x or none, h0 through its strides. Other calls take
// tile_scan.
#pragma once

#include "lookback.cuh"

namespace linscan {

constexpr int CHAN_THREADS = 128;
constexpr int CHAN_WARPS = CHAN_THREADS / WARP;
constexpr int CHAN_LANE = 4;                   // channels per lane
constexpr int CHAN_WIDTH = WARP * CHAN_LANE;  // channels per tile
// Resident blocks per SM the register budget must allow: 128 registers a thread for float
// (170 for the wider types).
template <typename T>
constexpr int CHAN_MIN_BLOCKS = sizeof(T) > 4 ? 3 : 4;
// The backward pass holds a third array (the forward states): 170 registers for float (255
// for the wider types; their 48 loads in flight a thread keep memory busy all the same).
template <typename T>
constexpr int CHAN_BACKWARD_MIN_BLOCKS = sizeof(T) > 4 ? 2 : 3;

// Steps per warp: 32 bytes of each array per channel (8 float, 4 double or complex64, 2
// complex128), so that a thread holds 2 * 4 * ITEMS values.
template <typename T>
constexpr int CHAN_ITEMS = 32 / static_cast<int>(sizeof(T));

// A warp's values published under one status word: every lane fences its own writes, the
// warp meets, and lane 0 fences again (cumulatively, over what the barrier showed it) before
// setting the word.
__device__ __forceinline__ void publish(unsigned* word, unsigned flag, int lane) {
    __threadfence();
    __syncwarp();
    if (lane == 0) {
        __threadfence();
        atomicExch(word, flag);
    }
}

template <typename S, int MODE>
__global__ void __launch_bounds__(CHAN_THREADS, MODE == BACKWARD
                                                     ? CHAN_BACKWARD_MIN_BLOCKS<typename Num<S>::T>
                                                     : CHAN_MIN_BLOCKS<typename Num<S>::T>)
    chan_scan(const S* a, typename Num<S>::T a_value, const unsigned char* r, const S* v,
              const S* hf, const S* h0, long long h0_so, long long h0_si, S* y,
              typename Num<S>::T* ga, typename Num<S>::T* s_out, long long O, long long Tn,
              long long I, int down, unsigned epoch, unsigned tile0,
              unsigned* status, typename Num<S>::T* agg_a, typename Num<S>::T* agg_b,
              int* agg_r, typename Num<S>::T* incl) {
    using T = typename Num<S>::T;
    constexpr int ITEMS = CHAN_ITEMS<T>;
    constexpr int TILE_T = CHAN_WARPS * ITEMS;  // steps per tile
    static_assert(ITEMS < 31, "a channel's flags (and the one before) are bits of a word");

    __shared__ T warp_A[CHAN_WARPS][CHAN_WIDTH], warp_B[CHAN_WARPS][CHAN_WIDTH];
    __shared__ int warp_flags[CHAN_WARPS][CHAN_WIDTH];
    __shared__ T carry[CHAN_WIDTH];
    __shared__ unsigned tile_s;

    const int tid = threadIdx.x, lane = tid % WARP, w = tid / WARP;

    // Tiles are numbered in the order blocks start (predecessors are running or done), time
    // tiles fastest: tile jt is time tile tt of channel group g of row o.
    if (tid == 0) tile_s = tile_number(status, tile0);
    __syncthreads();
    const long long jt = tile_s;
    const long long tiles_t = (Tn + TILE_T - 1) / TILE_T;
    const long long groups = (I + CHAN_WIDTH - 1) / CHAN_WIDTH;
    const long long tt = jt % tiles_t;
    const long long g = jt / tiles_t % groups;
    const long long o = jt / tiles_t / groups;

    // This warp's steps: logical steps s0 .. s0 + steps - 1 of row o (time t = s, or Tn - 1 - s
    // walking down), and the address of its first step's channel 0 of the group.
    const long long s0 = tt * TILE_T + static_cast<long long>(w) * ITEMS;
    const int steps = static_cast<int>(max(0LL, min(static_cast<long long>(ITEMS), Tn - s0)));
    const long long t0 = down ? Tn - 1 - s0 : s0;
    const long long base = (o * Tn + t0) * I + g * CHAN_WIDTH + lane;
    const long long step = down ? -I : I;
    const long long c0 = g * CHAN_WIDTH + lane;  // the channel of this lane's first value
    bool valid[CHAN_LANE];
#pragma unroll
    for (int c = 0; c < CHAN_LANE; ++c) valid[c] = c0 + c * WARP < I;

    // Every step of every channel loaded at once (one wait for memory), each load instruction
    // of the warp 32 consecutive elements. BACKWARD walks against the forward scan:
    // g[u] = grad_h[u] + conj(a[u-1]) g[u-1] in logical order, with the flags of step u-1 (a
    // reset there passes nothing back), and writes grad_a[u] = g[u] conj(h[u+1]) (h0 at a
    // row's last step) unless step u itself resets (`mute`): its decays and flags are loaded
    // one step back, its forward states (p) one step on.
    constexpr int BEHIND = MODE == BACKWARD ? 1 : 0;  // decays and flags: from step j - BEHIND
    // Most threads hold ITEMS steps of four channels (and BACKWARD's steps beside them): their
    // loads go unguarded.
    const bool full = steps == ITEMS && valid[CHAN_LANE - 1] &&
                      (MODE != BACKWARD || (s0 > 0 && s0 + ITEMS < Tn));
    T d[ITEMS][CHAN_LANE], x[ITEMS][CHAN_LANE], p[ITEMS][CHAN_LANE];  // (p: BACKWARD only)
    unsigned cut[CHAN_LANE];  // steps that ignore the state before them (bit j: item j)
    unsigned mute[CHAN_LANE] = {};  // BACKWARD: steps that reset (no gradient for their decay)
#pragma unroll
    for (int c = 0; c < CHAN_LANE; ++c) cut[c] = valid[c] ? 0u : ~0u;  // idle lanes: cut
    if (full) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c) {
                const long long at = base + j * step + c * WARP;
                x[j][c] = Num<S>::load(v[at]);
                d[j][c] = a ? Num<S>::load(a[at - BEHIND * step]) : a_value;
                if (MODE == BACKWARD) p[j][c] = Num<S>::load(hf[at + step]);
            }
        }
    } else {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j) {
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c) {
                const long long at = base + j * step + c * WARP;
                const bool here = j < steps && valid[c];
                x[j][c] = here ? Num<S>::load(v[at]) : T(0);
                d[j][c] = !a                               ? a_value
                          : here && (j >= BEHIND || s0 > 0) ? Num<S>::load(a[at - BEHIND * step])
                                                           : T(1);
                if (MODE == BACKWARD) {
                    // (past a row's last step: the state before its first forward step)
                    const long long h0_at = o * h0_so + (c0 + c * WARP) * h0_si;
                    p[j][c] = !here              ? T(0)
                              : s0 + j + 1 < Tn ? Num<S>::load(hf[at + step])
                              : h0             ? Num<S>::load(h0[h0_at])
                                               : T(0);
                }
            }
        }
    }
    if (r) {
        // Bit j + BEHIND: a reset at step j (BACKWARD: from the step before the first).
#pragma unroll
        for (int j = -BEHIND; j < ITEMS; ++j)
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c)
                if (j < steps && (j >= 0 || s0 > 0) && valid[c] && r[base + j * step + c * WARP]) {
                    if (j + BEHIND < ITEMS) cut[c] |= 1u << (j + BEHIND);
                    if (MODE == BACKWARD && j >= 0) mute[c] |= 1u << j;
                }
    }
    if (MODE == BACKWARD) {
#pragma unroll
        for (int j = 0; j < ITEMS; ++j)
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c) d[j][c] = conj_of(d[j][c]);
    }
    // The row's first step: h0 enters there (folded into x: 0 * inf is NaN, as in the loop);
    // BACKWARD's walk starts there from grad_h alone.
    if (s0 == 0 && steps > 0) {
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) {
            if (MODE != BACKWARD && valid[c] && !(cut[c] & 1u)) {
                const T start = h0 ? Num<S>::load(h0[o * h0_so + (c0 + c * WARP) * h0_si]) : T(0);
                x[0][c] = muladd(d[0][c], start, x[0][c]);
            }
            cut[c] |= 1u;
        }
    }

    // Each channel's map of this warp's steps (walked: exact), then the scan over the warps.
    // Threads whose steps neither start the row nor reset (most) take a multiply and a
    // multiply-add a step.
    const bool plain = full && (cut[0] | cut[1] | cut[2] | cut[3] | mute[0] | mute[1] | mute[2] |
                                mute[3]) == 0u;
    static_assert(CHAN_LANE == 4, "plain reads the four channels' cuts");
#pragma unroll
    for (int c = 0; c < CHAN_LANE; ++c) {
        Affine<T> m = identity_map<T>();
        if (plain) {
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                m.A = m.A * d[j][c];
                m.B = muladd(d[j][c], m.B, x[j][c]);
            }
        } else {
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                if (j < steps) {
                    if (cut[c] >> j & 1u) {
                        m = {T(0), x[j][c], RESET};
                    } else {
                        m.A = m.A * d[j][c];
                        m.B = muladd(d[j][c], m.B, x[j][c]);
                    }
                }
            }
        }
        warp_A[w][lane + c * WARP] = m.A;
        warp_B[w][lane + c * WARP] = m.B;
        warp_flags[w][lane + c * WARP] = m.flags;
    }
    __syncthreads();
    // The map of channel slot c over the tile's warps before `upto` (all: the tile's map), read
    // from shared memory whenever needed rather than held in registers through the look-back.
    auto scan_map = [&](int c, int upto) {
        const int k = lane + c * WARP;
        Affine<T> m = identity_map<T>();
#pragma unroll
        for (int q = 0; q < CHAN_WARPS; ++q)
            if (q < upto) m = compose(m, Affine<T>{warp_A[q][k], warp_B[q][k], warp_flags[q][k]});
        return m;
    };
    // Warp 0 speaks for the tile (its lanes hold all 128 channels): it publishes what the tile
    // can at once (tile_scan's rule), then the tile's status word. Each lane writes its
    // channels' maps, and their B as a prefix too: a reader takes a tile's prefix only once
    // the status says PREFIX, by when a tile that was not ABSOLUTE has written the true one.
    constexpr int ABSOLUTE = 0, MAPPED = 1, HELD = 2;
    int kind = MAPPED;
    const long long slot = jt * CHAN_WIDTH + lane;  // this lane's first channel in scratch
    if (w == 0) {
        bool inexact = false, absolute = true;  // over the tile's channels (their tile maps)
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) {
            const Affine<T> agg = scan_map(c, CHAN_WARPS);
            inexact = inexact || (agg.flags & INEXACT);
            absolute = absolute && (agg.flags & RESET);
            if (status) {
                agg_a[slot + c * WARP] = agg.A;
                agg_b[slot + c * WARP] = agg.B;
                agg_r[slot + c * WARP] = agg.flags;
                incl[slot + c * WARP] = agg.B;
            }
        }
        kind = __any_sync(0xffffffffu, inexact)    ? HELD
               : __all_sync(0xffffffffu, absolute) ? ABSOLUTE
                                                   : MAPPED;
        if (status && kind != HELD)
            publish(status + 1 + jt, tagged(epoch, kind == ABSOLUTE ? PREFIX : AGGREGATE),
                    lane);
    }

    // Warp 0 looks back along the row's earlier tiles of this group, nearest first, until
    // every channel's composed map ignores its input.
    if (w == 0) {
        Affine<T> acc[CHAN_LANE];
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) acc[c] = identity_map<T>();
        int ended = 0;  // 1: acc holds the carry; 2: acc composed an inexact map
        for (long long pj = jt - 1; !ended && pj >= jt - tt; --pj) {
            unsigned fl;
            while ((fl = flag_of(load_acquire(status + 1 + pj), epoch)) == 0u) __nanosleep(32);
            bool all_reset = true, any_inexact = false;
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c) {
                const long long at = pj * CHAN_WIDTH + lane + c * WARP;
                const Affine<T> e = fl == PREFIX
                                        ? Affine<T>{T(0), load_cg(incl + at), RESET}
                                        : Affine<T>{load_cg(agg_a + at), load_cg(agg_b + at),
                                                    __ldcg(agg_r + at)};
                acc[c] = compose(e, acc[c]);
                all_reset = all_reset && (acc[c].flags & RESET);
                any_inexact = any_inexact || (acc[c].flags & INEXACT);
            }
            // (The row's first tile ignores its input: the loop ends there at the latest.)
            if (__all_sync(0xffffffffu, all_reset))
                ended = __any_sync(0xffffffffu, any_inexact) ? 2 : 1;
        }
        if (ended == 2) {
            // An inexact composition: the predecessor's own prefix instead.
            while (flag_of(load_acquire(status + jt), epoch) != PREFIX) __nanosleep(32);
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c)
                carry[lane + c * WARP] = load_cg(incl + (jt - 1) * CHAN_WIDTH + lane + c * WARP);
        } else {
#pragma unroll
            for (int c = 0; c < CHAN_LANE; ++c)  // a cut first step: the carry is never used
                carry[lane + c * WARP] = tt == 0 ? T(0) : acc[c].B;
        }
    }
    __syncthreads();

    // The states entering this warp's steps and leaving the tile, from the maps; where a map
    // cannot give the loop's result, the warps walk their steps in turn.
    // (leaving: warp 0's, which publishes it)
    T entering[CHAN_LANE], leaving[CHAN_LANE];
    bool off = false;
#pragma unroll
    for (int c = 0; c < CHAN_LANE; ++c) {
        const T h = carry[lane + c * WARP];
        const Affine<T> excl = scan_map(c, w);
        entering[c] = apply(excl, h);
        off = off || !exact(excl, h);
        if (w == 0) {
            const Affine<T> agg = scan_map(c, CHAN_WARPS);
            leaving[c] = apply(agg, h);
            off = off || !exact(agg, h);
        }
    }
    if (__syncthreads_or(off)) {
        for (int q = 0; q < CHAN_WARPS; ++q) {
            if (w == q) {
#pragma unroll
                for (int c = 0; c < CHAN_LANE; ++c) {
                    T state = entering[c] = carry[lane + c * WARP];
#pragma unroll
                    for (int j = 0; j < ITEMS; ++j)
                        if (j < steps)
                            state = (cut[c] >> j & 1u) ? x[j][c] : muladd(d[j][c], state, x[j][c]);
                    carry[lane + c * WARP] = state;
                }
            }
            __syncthreads();
        }
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) leaving[c] = carry[lane + c * WARP];
    }
    if (status && kind != ABSOLUTE && w == 0) {
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) incl[slot + c * WARP] = leaving[c];
        publish(status + 1 + jt, tagged(epoch, PREFIX), lane);
    }

    // Walk the steps again from the state entering them: FORWARD writes every state, FINAL
    // the row's last (held by the warp whose steps reach Tn - 1), BACKWARD every gradient
    // (grad_x the state, grad_a) and the one for h0 at the row's last step.
    if (MODE == FORWARD && plain) {
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) {
            T state = entering[c];
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                state = muladd(d[j][c], state, x[j][c]);
                y[base + j * step + c * WARP] = Num<S>::store(state);
            }
        }
    } else if (MODE == BACKWARD && plain) {
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) {
            T state = entering[c];
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                const long long at = base + j * step + c * WARP;
                state = muladd(d[j][c], state, x[j][c]);
                y[at] = Num<S>::store(state);
                ga[at] = state * conj_of(p[j][c]);
            }
        }
    } else if (MODE != FINAL || s0 + steps == Tn) {
        const bool ends = s0 + steps == Tn && steps > 0;  // the row's last step is here
#pragma unroll
        for (int c = 0; c < CHAN_LANE; ++c) {
            T state = entering[c];
#pragma unroll
            for (int j = 0; j < ITEMS; ++j) {
                if (j < steps) {
                    const long long at = base + j * step + c * WARP;
                    state = (cut[c] >> j & 1u) ? x[j][c] : muladd(d[j][c], state, x[j][c]);
                    if (MODE != FINAL && valid[c]) y[at] = Num<S>::store(state);
                    if (MODE == BACKWARD && valid[c])
                        ga[at] = (mute[c] >> j & 1u) ? T(0) : state * conj_of(p[j][c]);
                }
            }
            if (MODE != FORWARD && valid[c] && ends && s_out) {
                T out = state;
                if (MODE == BACKWARD) {  // the gradient for h0: through the first forward step
                    const long long at = base + (steps - 1) * step + c * WARP;
                    const T da = conj_of(a ? Num<S>::load(a[at]) : a_value);
                    out = (mute[c] >> (steps - 1) & 1u) ? T(0) : da * state;
                }
                if (MODE != FORWARD) s_out[o * I + c0 + c * WARP] = out;
            }
        }
    }
}

}  // namespace linscan
