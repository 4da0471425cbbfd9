// Just enough CUDA to run linscan's lean kernels (row_scan, chan_scan) on the host: every GPU
// thread of a block is a fiber (ucontext) of the calling thread, __syncthreads and __syncwarp
// are barriers at which a fiber yields until its group has arrived, warp shuffles and votes go
// through a per-warp buffer. Fibers, not host threads: 128 threads per block meeting at every
// barrier on a 2-core machine cost the kernel's scheduler (the tests ran 10x slower while the
// other test worker was busy); fibers switch in user space, in a fixed order, so a run is also
// reproducible. Blocks run one after another in launch order, so a
// look-back always finds its predecessors published; to reach the paths where a predecessor
// has published only its map, a prefix published over a map may be hidden (`hide`): a status
// read then shows the map instead, at random, until a spin loop reads again. Memory
// `__shared__` is static: one block at a time uses it. Test code only
// (tests/cuda/test_cuda_host.py); not a CUDA emulator.
#pragma once

#include <ucontext.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <map>
#include <memory>
#include <random>
#include <vector>

#define __global__
#define __device__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define asm(...) ((void)0)  // numeric.cuh's 16-bit conversions: the host runs no 16-bit type

struct HostDim {
    unsigned x;
};
inline HostDim threadIdx{0}, blockIdx{0};  // the running fiber's (set on each switch)
inline HostDim gridDim{0};
[[noreturn]] inline void __trap() { std::abort(); }  // the launch fails: here, the process

// The fibers of the block being run, and the context of `host_launch` that resumes them.
struct HostFiber {
    ucontext_t context;
    std::unique_ptr<char[]> stack;
    bool done = false;
};
inline ucontext_t host_scheduler;
inline HostFiber* host_fibers = nullptr;
inline std::function<void()> host_body;

// Back to `host_launch`, which resumes the other fibers in turn before this one again.
inline void host_yield() { swapcontext(&host_fibers[threadIdx.x].context, &host_scheduler); }

// A barrier of `count` fibers: the last to arrive goes on, the others yield until it has.
struct HostBarrier {
    explicit HostBarrier(unsigned count) : count(count) {}
    void arrive_and_wait() {
        const unsigned seen = generation;
        if (++arrived == count) {
            arrived = 0;
            ++generation;
            return;
        }
        while (generation == seen) host_yield();
    }
    unsigned count, arrived = 0, generation = 0;
};

struct HostWarp {
    HostBarrier sync{32};
    unsigned char lanes[32][8];
};
struct HostBlock {
    HostBarrier sync{128};
    HostWarp warps[4];
    int any = 0;
};
inline HostBlock* host_block = nullptr;

inline HostWarp& host_warp() { return host_block->warps[threadIdx.x / 32]; }
inline void __syncthreads() { host_block->sync.arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { host_warp().sync.arrive_and_wait(); }
inline int __syncthreads_or(int predicate) {
    __syncthreads();
    if (predicate) host_block->any = 1;  // (a benign race: every writer writes 1)
    __syncthreads();
    const int any = host_block->any;
    __syncthreads();
    if (threadIdx.x == 0) host_block->any = 0;
    return any;
}

// The value of `v` held by lane `source(lane)` (its own where `source` gives -1).
template <typename V, typename F>
inline V host_shuffle(V v, F source) {
    static_assert(sizeof(V) <= 8, "shuffles move 32- or 64-bit values");
    HostWarp& warp = host_warp();
    const int lane = threadIdx.x % 32;
    std::memcpy(warp.lanes[lane], &v, sizeof(V));
    warp.sync.arrive_and_wait();
    const int from = source(lane);
    V out = v;
    if (from >= 0) std::memcpy(&out, warp.lanes[from], sizeof(V));
    warp.sync.arrive_and_wait();
    return out;
}
template <typename V>
inline V __shfl_up_sync(unsigned, V v, int delta) {
    return host_shuffle(v, [delta](int lane) { return lane >= delta ? lane - delta : -1; });
}
template <typename V>
inline V __shfl_down_sync(unsigned, V v, int delta) {
    return host_shuffle(v, [delta](int lane) { return lane + delta < 32 ? lane + delta : -1; });
}
template <typename V>
inline V __shfl_sync(unsigned, V v, int source) {
    return host_shuffle(v, [source](int) { return source; });
}

// Warp votes, through the same buffer.
template <typename F>
inline int host_vote(int predicate, F combine) {
    HostWarp& warp = host_warp();
    const int lane = threadIdx.x % 32;
    std::memcpy(warp.lanes[lane], &predicate, sizeof predicate);
    warp.sync.arrive_and_wait();
    int result = 0;
    std::memcpy(&result, warp.lanes[0], sizeof result);
    result = result != 0;
    for (int other = 1; other < 32; ++other) {
        int p = 0;
        std::memcpy(&p, warp.lanes[other], sizeof p);
        result = combine(result, p != 0);
    }
    warp.sync.arrive_and_wait();
    return result;
}
inline int __all_sync(unsigned, int predicate) {
    return host_vote(predicate, [](int p, int q) { return p && q; });
}
inline int __any_sync(unsigned, int predicate) {
    return host_vote(predicate, [](int p, int q) { return p || q; });
}

template <typename V>
inline V __ldcg(const V* p) {
    return *p;
}
inline void __nanosleep(unsigned) { host_yield(); }
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

// Status words: atomics (fibers switch only at barriers and sleeps, so a read-modify-write is
// never interleaved) and the hidden prefixes (each with the map's word it hides behind: flags
// in the low two bits, AGGREGATE 1, PREFIX 2).
inline std::map<const unsigned*, unsigned> host_hidden;
inline std::mt19937 host_rng{0};
inline bool host_hide = false;

inline unsigned atomicAdd(unsigned* p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
inline unsigned atomicExch(unsigned* p, unsigned v) {
    const unsigned old = *p;
    if (host_hide && (old & 3u) == 1u && (v & 3u) == 2u && host_rng() % 2) host_hidden[p] = old;
    *p = v;
    return old;
}
inline unsigned host_load_acquire(const unsigned* p) {
    const auto hidden = host_hidden.find(p);
    if (hidden != host_hidden.end() && host_rng() % 2) return hidden->second;  // the map still
    return *p;
}

namespace linscan {
using std::isfinite;
using std::max;
using std::min;
}  // namespace linscan

inline void host_fiber_main() {
    host_body();
    host_fibers[threadIdx.x].done = true;  // returns to host_scheduler (uc_link)
}

// Run `kernel` over `grid` blocks of 128 threads, one block after another: each block's
// fibers start afresh and are resumed round after round until all are done, in thread order
// or against it by turns (round r of block b ascending where r + b is even), so that a read
// of another thread's write that lacks its barrier sees the write in one order and not in
// the other, whichever of the two threads comes first.
template <typename K>
inline void host_launch(long long grid, K kernel) {
    constexpr unsigned threads = 128;
    constexpr std::size_t stack_bytes = 256 * 1024;
    std::vector<HostFiber> fibers(threads);
    for (auto& fiber : fibers) fiber.stack.reset(new char[stack_bytes]);
    HostBlock block;
    host_block = &block;
    host_fibers = fibers.data();
    host_body = kernel;
    gridDim.x = static_cast<unsigned>(grid);
    for (long long b = 0; b < grid; ++b) {
        blockIdx.x = static_cast<unsigned>(b);
        for (auto& fiber : fibers) {
            getcontext(&fiber.context);
            fiber.context.uc_stack.ss_sp = fiber.stack.get();
            fiber.context.uc_stack.ss_size = stack_bytes;
            fiber.context.uc_link = &host_scheduler;
            makecontext(&fiber.context, host_fiber_main, 0);
            fiber.done = false;
        }
        for (long long round = b, left = threads; left > 0; ++round) {
            left = 0;
            for (unsigned k = 0; k < threads; ++k) {
                const unsigned t = round % 2 ? threads - 1 - k : k;
                if (fibers[t].done) continue;
                threadIdx.x = t;
                swapcontext(&host_scheduler, &fibers[t].context);
                left += !fibers[t].done;
            }
        }
    }
    host_block = nullptr;
    host_fibers = nullptr;
    host_body = nullptr;
}
