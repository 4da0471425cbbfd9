"""The example scripts run and do what they say."""

import numpy as np

from helpers import load_example as load


def test_streaming_matches_one_scan():
    assert load("streaming").main() < 1e-4  # float32 over a million steps, 37 pieces


def test_fit_decay_recovers_the_decays():
    true, learned = load("fit_decay").main()
    np.testing.assert_allclose(learned, true, atol=1e-3)


def test_dask_scan_filters_a_zarr_store(tmp_path):
    import pytest

    pytest.importorskip("zarr")
    # dask.array, not dask: tests/dask is a namespace package named dask on the test path
    pytest.importorskip("dask.array")
    error = load("dask_scan").main(["--samples", "2**16", "--chunk", "2**12", "--channels",
                                    "3", "--dir", str(tmp_path)])  # fmt: skip
    assert error < 1e-4  # float32, 16 chunks forwards and backwards


def test_filter_recording_band_passes_as_scipy():
    import pytest

    pytest.importorskip("scipy")
    residual, difference = load("filter_recording").main(["--samples", "2**16"])
    assert residual < 0.2  # the 10 Hz rhythm recovered from noise of rms 1.1
    assert difference < 1e-9  # float64: the same result as scipy.signal.sosfiltfilt
