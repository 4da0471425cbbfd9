// row_scan (kernels_cu/rows.cuh, pasted in below the shim by the test) built for the host and
// called through ctypes: tests/cuda/test_cuda_host.py.

// @KERNELS@

namespace {

template <typename S>
void run(int mode, const void* a, const void* a_value, const unsigned char* r, const void* v,
         const void* h0, long long h0_so, void* y, void* s_out, long long N, long long Tn,
         int down, long long grid, unsigned* status, void* agg_a, void* agg_b, int* agg_r,
         void* incl) {
    using T = typename linscan::Num<S>::T;
    const T value = *static_cast<const T*>(a_value);
    auto kernel = [&](auto mode_constant) {
        host_launch(grid, [&] {
            linscan::row_scan<S, decltype(mode_constant)::value>(
                static_cast<const S*>(a), value, r, static_cast<const S*>(v),
                static_cast<const S*>(h0), h0_so, static_cast<S*>(y), static_cast<T*>(s_out), N,
                Tn, down, status, static_cast<T*>(agg_a), static_cast<T*>(agg_b), agg_r,
                static_cast<T*>(incl));
        });
    };
    if (mode == linscan::FORWARD)
        kernel(std::integral_constant<int, linscan::FORWARD>{});
    else
        kernel(std::integral_constant<int, linscan::FINAL>{});
}

}  // namespace

extern "C" int run_row_scan(int type, int mode, const void* a, const void* a_value,
                            const unsigned char* r, const void* v, const void* h0,
                            long long h0_so, void* y, void* s_out, long long N, long long Tn,
                            int down, long long grid, unsigned* status, void* agg_a,
                            void* agg_b, int* agg_r, void* incl, unsigned seed, int hide) {
    host_rng.seed(seed);
    host_hide = hide != 0;
    host_hidden.clear();
    switch (type) {
        case 0:
            run<float>(mode, a, a_value, r, v, h0, h0_so, y, s_out, N, Tn, down, grid, status,
                       agg_a, agg_b, agg_r, incl);
            return 0;
        case 1:
            run<double>(mode, a, a_value, r, v, h0, h0_so, y, s_out, N, Tn, down, grid, status,
                        agg_a, agg_b, agg_r, incl);
            return 0;
        case 2:
            run<linscan::Complex<float>>(mode, a, a_value, r, v, h0, h0_so, y, s_out, N, Tn,
                                         down, grid, status, agg_a, agg_b, agg_r, incl);
            return 0;
        case 3:
            run<linscan::Complex<double>>(mode, a, a_value, r, v, h0, h0_so, y, s_out, N, Tn,
                                          down, grid, status, agg_a, agg_b, agg_r, incl);
            return 0;
    }
    return 1;
}
