// The matrix kernels (kernels_cu/matrix.cu, pasted in below the shim by the test) built for the
// host and called through ctypes: tests/cuda/test_cuda_matrix.py. Each entry takes the number
// of threads the launch covers and runs ceil(threads / 128) blocks of 128.

// @KERNELS@

#include <type_traits>
#include <utility>

namespace {

// `run` called with a value of the work type numbered `type` (0 float, 1 double, 2 and 3
// complex64 and complex128) and the state size `d` (1 to 8) as a compile-time constant.
template <typename F>
int by_type_and_size(int type, int d, F run) {
    auto with_size = [&](auto stored) {
        [&]<int... K>(std::integer_sequence<int, K...>) {
            ((d == K + 1 ? run(stored, std::integral_constant<int, K + 1>{}) : void()), ...);
        }(std::make_integer_sequence<int, 8>{});
    };
    if (d < 1 || d > 8) return 1;
    switch (type) {
        case 0:
            with_size(float{});
            return 0;
        case 1:
            with_size(double{});
            return 0;
        case 2:
            with_size(linscan::Complex<float>{});
            return 0;
        case 3:
            with_size(linscan::Complex<double>{});
            return 0;
    }
    return 1;
}

long long blocks(long long threads) {
    return (threads + linscan::MAT_THREADS - 1) / linscan::MAT_THREADS;
}

}  // namespace

#define HOST_MAT_PARAMS                                                                      \
    long long O, long long T, long long I, long long L, long long C, long long sa_o,          \
        long long sa_t, long long sa_i, long long sa_j, long long sa_k, int down
#define HOST_MAT_ARGS O, T, I, L, C, sa_o, sa_t, sa_i, sa_j, sa_k, down

template <bool PRODUCT>
int run_reduce(int type, int d, long long threads, const void* A, const void* x, HOST_MAT_PARAMS,
               long long count, int back, void* M, void* b) {
    return by_type_and_size(type, d, [&](auto stored, auto size) {
        using S = decltype(stored);
        using W = typename linscan::Wide<S>::T;
        host_launch(blocks(threads), [&] {
            linscan::mat_reduce<S, decltype(size)::value, PRODUCT>(
                static_cast<const S*>(A), static_cast<const S*>(x), HOST_MAT_ARGS, count, back,
                static_cast<W*>(M), static_cast<W*>(b));
        });
    });
}

extern "C" int run_mat_reduce(int type, int d, long long threads, const void* A, const void* x,
                              HOST_MAT_PARAMS, long long count, int back, void* M, void* b) {
    return run_reduce<false>(type, d, threads, A, x, HOST_MAT_ARGS, count, back, M, b);
}

extern "C" int run_mat_reduce_product(int type, int d, long long threads, const void* A,
                                      const void* x, HOST_MAT_PARAMS, long long count, int back,
                                      void* M, void* b) {
    return run_reduce<true>(type, d, threads, A, x, HOST_MAT_ARGS, count, back, M, b);
}

extern "C" int run_mat_walk(int type, int d, long long threads, const void* A, const void* x,
                            HOST_MAT_PARAMS, const void* starts, const int* bad, void* h, void* s,
                            int write) {
    return by_type_and_size(type, d, [&](auto stored, auto size) {
        using S = decltype(stored);
        host_launch(blocks(threads), [&] {
            linscan::mat_walk<S, decltype(size)::value>(
                static_cast<const S*>(A), static_cast<const S*>(x), HOST_MAT_ARGS,
                static_cast<const S*>(starts), bad, static_cast<S*>(h), static_cast<S*>(s),
                write);
        });
    });
}

extern "C" int run_mat_back_walk(int type, int d, long long threads, const void* A, const void* h,
                                 const void* gh, const void* hb, HOST_MAT_PARAMS,
                                 const void* starts, const int* bad, void* gx, void* gA,
                                 void* c_out) {
    return by_type_and_size(type, d, [&](auto stored, auto size) {
        using S = decltype(stored);
        host_launch(blocks(threads), [&] {
            linscan::mat_back_walk<S, decltype(size)::value>(
                static_cast<const S*>(A), static_cast<const S*>(h), static_cast<const S*>(gh),
                static_cast<const S*>(hb), HOST_MAT_ARGS, static_cast<const S*>(starts), bad,
                static_cast<S*>(gx), static_cast<S*>(gA), static_cast<S*>(c_out));
        });
    });
}
