// The lean kernels (kernels_cu/rows.cuh, channels.cuh, pasted in below the shim by the test)
// built for the host and called through ctypes: tests/cuda/test_cuda_host.py.

// @KERNELS@

#include <type_traits>

namespace {

// `run` called with a value of the storage type numbered `type` (0 float, 1 double, 2 and 3
// complex64 and complex128; 16-bit storage is not built for the host), and with the mode as
// a compile-time constant.
template <typename F>
int by_type(int type, int mode, F run) {
    auto with_mode = [&](auto stored) {
        if (mode == linscan::FORWARD)
            run(stored, std::integral_constant<int, linscan::FORWARD>{});
        else if (mode == linscan::FINAL)
            run(stored, std::integral_constant<int, linscan::FINAL>{});
        else
            run(stored, std::integral_constant<int, linscan::BACKWARD>{});
    };
    switch (type) {
        case 0:
            with_mode(float{});
            return 0;
        case 1:
            with_mode(double{});
            return 0;
        case 2:
            with_mode(linscan::Complex<float>{});
            return 0;
        case 3:
            with_mode(linscan::Complex<double>{});
            return 0;
    }
    return 1;
}

void seed_status(unsigned seed, int hide) {
    host_rng.seed(seed);
    host_hide = hide != 0;
    host_hidden.clear();
}

}  // namespace

extern "C" int run_row_scan(int type, int mode, const void* a, const void* a_value,
                            const unsigned char* r, const void* v, const void* hf,
                            const void* h0, long long h0_so, void* y, void* ga, void* s_out,
                            long long N, long long Tn, int down, unsigned epoch,
                            unsigned tile0, long long grid, unsigned* status, void* agg_a,
                            void* agg_b, int* agg_r, void* incl, unsigned seed, int hide) {
    seed_status(seed, hide);
    return by_type(type, mode, [&](auto stored, auto mode_constant) {
        using S = decltype(stored);
        using T = typename linscan::Num<S>::T;
        host_launch(grid, [&] {
            linscan::row_scan<S, decltype(mode_constant)::value>(
                static_cast<const S*>(a), *static_cast<const T*>(a_value), r,
                static_cast<const S*>(v), static_cast<const S*>(hf), static_cast<const S*>(h0),
                h0_so, static_cast<S*>(y), static_cast<T*>(ga), static_cast<T*>(s_out), N, Tn,
                down, epoch, tile0, status,
                static_cast<T*>(agg_a), static_cast<T*>(agg_b), agg_r, static_cast<T*>(incl));
        });
    });
}

extern "C" int run_chan_scan(int type, int mode, const void* a, const void* a_value,
                             const unsigned char* r, const void* v, const void* hf,
                             const void* h0, long long h0_so, long long h0_si, void* y, void* ga,
                             void* s_out, long long O,
                             long long Tn, long long I, int down, unsigned epoch,
                             unsigned tile0, long long grid, unsigned* status, void* agg_a,
                             void* agg_b, int* agg_r, void* incl, unsigned seed, int hide) {
    seed_status(seed, hide);
    return by_type(type, mode, [&](auto stored, auto mode_constant) {
        using S = decltype(stored);
        using T = typename linscan::Num<S>::T;
        host_launch(grid, [&] {
            linscan::chan_scan<S, decltype(mode_constant)::value>(
                static_cast<const S*>(a), *static_cast<const T*>(a_value), r,
                static_cast<const S*>(v), static_cast<const S*>(hf), static_cast<const S*>(h0),
                h0_so, h0_si, static_cast<S*>(y), static_cast<T*>(ga), static_cast<T*>(s_out), O,
                Tn, I, down, epoch, tile0,
                status, static_cast<T*>(agg_a), static_cast<T*>(agg_b), agg_r,
                static_cast<T*>(incl));
        });
    });
}
