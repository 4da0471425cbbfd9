"""The paper's layers in examples/linear_rnn.py: hand-written backward passes against float64
central differences, every parameter and the input; Adam; NumPy and (on a GPU) CuPy."""

import numpy as np
import pytest

from helpers import load_example as load

rnn = load("linear_rnn")

LAYERS = {
    "GILR": lambda rng: rnn.GILR(3, 4, rng, dtype=np.float64),
    "GILR-LSTM": lambda rng: rnn.GILRLSTM(3, 4, rng, dtype=np.float64),
    "QRNN f k=1": lambda rng: rnn.QRNN(3, 4, rng, dtype=np.float64, k=1, pooling="f"),
    "QRNN fo k=2": lambda rng: rnn.QRNN(3, 4, rng, dtype=np.float64, k=2, pooling="fo"),
    "QRNN fo k=3": lambda rng: rnn.QRNN(3, 4, rng, dtype=np.float64, k=3, pooling="fo"),
    "SRU projected": lambda rng: rnn.SRU(3, 4, rng, dtype=np.float64),
    "SRU same size": lambda rng: rnn.SRU(4, 4, rng, dtype=np.float64),
    "two GILR-LSTM": lambda rng: rnn.Stack(
        [rnn.GILRLSTM(3, 4, rng, dtype=np.float64), rnn.GILRLSTM(4, 4, rng, dtype=np.float64)]
    ),
}


def _numeric(f, arr, eps=1e-6):
    grad = np.zeros_like(arr)
    for k in np.ndindex(arr.shape):
        keep = arr[k]
        arr[k] = keep + eps
        up = f()
        arr[k] = keep - eps
        down = f()
        arr[k] = keep
        grad[k] = (up - down) / (2 * eps)
    return grad


@pytest.mark.parametrize("method", ["sequential", "parallel"])
@pytest.mark.parametrize("name", list(LAYERS))
def test_backward_matches_finite_differences(name, method):
    rng = np.random.default_rng(0)
    layer = LAYERS[name](rng)
    if isinstance(layer, rnn.Stack):
        for sub in layer.layers:
            sub.method = method
    else:
        layer.method = method
    d_in = 4 if name == "SRU same size" else 3
    x = rng.standard_normal((6, 2, d_in))
    w = rng.standard_normal((6, 2, 4))

    def loss():
        y, _ = layer.forward(x)
        return float((w * y).sum())

    y, cache = layer.forward(x)
    assert y.shape == (6, 2, 4)
    dx, grads = layer.backward(cache, w)
    assert set(grads) == set(layer.params)
    np.testing.assert_allclose(dx, _numeric(loss, x), rtol=1e-5, atol=1e-8)
    for key, value in layer.params.items():
        np.testing.assert_allclose(grads[key], _numeric(loss, value), rtol=1e-5, atol=1e-8,
                                   err_msg=key)  # fmt: skip


def test_adam_minimizes_a_quadratic_and_clips():
    target = np.array([3.0, -2.0])
    params = {"p": np.zeros(2)}
    opt = rnn.Adam(params, lr=0.1, clip=1.0)
    norms = [opt.step({"p": 2 * (params["p"] - target)}) for _ in range(500)]
    np.testing.assert_allclose(params["p"], target, atol=1e-2)
    assert norms[0] == pytest.approx(2 * np.linalg.norm(target))


def test_bad_pooling_is_refused():
    with pytest.raises(ValueError, match="pooling"):
        rnn.QRNN(3, 4, np.random.default_rng(0), pooling="x")


@pytest.mark.gpu
def test_same_layers_on_cupy():
    from linscan._dispatch import gpu_status

    if not gpu_status()[0]:
        pytest.skip("no usable GPU")
    import cupy

    for name, make in LAYERS.items():
        d_in = 4 if name == "SRU same size" else 3
        cpu = make(np.random.default_rng(1))
        gpu = make(np.random.default_rng(1))
        layers = gpu.layers if isinstance(gpu, rnn.Stack) else [gpu]
        for layer in layers:
            for key in layer.params:
                layer.params[key] = cupy.asarray(layer.params[key])
        if isinstance(gpu, rnn.Stack):
            gpu.params = {f"{k}.{n}": v for k, sub in enumerate(gpu.layers)
                          for n, v in sub.params.items()}  # fmt: skip
        x = np.random.default_rng(2).standard_normal((50, 3, d_in))
        y_cpu, cache_cpu = cpu.forward(x)
        y_gpu, cache_gpu = gpu.forward(cupy.asarray(x))
        np.testing.assert_allclose(cupy.asnumpy(y_gpu), y_cpu, rtol=1e-10, atol=1e-12)
        dx_cpu, g_cpu = cpu.backward(cache_cpu, np.ones_like(y_cpu))
        dx_gpu, g_gpu = gpu.backward(cache_gpu, cupy.ones_like(y_gpu))
        np.testing.assert_allclose(cupy.asnumpy(dx_gpu), dx_cpu, rtol=1e-9, atol=1e-12)
        for key in g_cpu:
            np.testing.assert_allclose(cupy.asnumpy(g_gpu[key]), g_cpu[key], rtol=1e-9,
                                       atol=1e-12, err_msg=f"{name} {key}")  # fmt: skip


def test_long_dependency_batches():
    task = load("long_dependency")
    x, labels = task.batch(np.random.default_rng(0), 50, 8)
    assert x.shape == (50, 8, 128) and labels.shape == (8,)
    np.testing.assert_array_equal(x[0, :, 0], np.where(labels == 1, 1.0, -1.0))
    assert np.all(x[0, :, 1:] == 0)
    np.testing.assert_array_equal(x[1:].sum(axis=2), 1.0)  # one-hot after step 0


def test_long_dependency_converges_at_a_short_length(tmp_path):
    """The section 5 task at n = 64: two GILR-LSTM layers reach 100% on 5 consecutive fresh
    minibatches (the script's own criterion) well within the iteration budget."""
    task = load("long_dependency")
    history = task.train(length=64, max_iters=500, seed=0, progress=lambda line: None)
    assert task.converged(history), history[-5:]
    assert len(history) < 500
    written = task.write(history, tmp_path / "long-dependency-64")
    assert written[0].read_text().count("\n") == len(history) + 1


def test_model_speed_table_runs_small():
    speed = load("model_speed")
    lines = []
    rows = speed.table(lengths=(4, 64), total=256, hidden=8, repeat=1, progress=lines.append)
    assert [(r["model"], r["length"]) for r in rows] == [
        (m, t) for m in speed.MODELS for t in (4, 64)
    ]
    assert all(r["sequential_s"] > 0 and r["parallel_s"] > 0 for r in rows)
    assert len(lines) == len(rows)


def test_torch_lstm_baseline_trains_on_the_same_task():
    pytest.importorskip("torch")
    task = load("long_dependency")
    history = task.train_torch_lstm(length=16, max_iters=3, progress=lambda line: None)
    assert len(history) == 3 and all(0.0 <= acc <= 1.0 for *_, acc in history)
