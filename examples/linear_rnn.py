"""The linear recurrent layers of Martin & Cundy (2018) on linscan, with hand-written backward
passes: GILR, the GILR-LSTM, QRNN (f- and fo-pooling, filter width k) and SRU.

No deep-learning framework: the arrays are NumPy or CuPy (the same code runs on both), every
recurrence is one ``linscan.scan`` and its gradient one ``linscan.scan_backward``. Arrays are
time-major, ``(T, B, D)``: time, batch, features; each layer maps ``(T, B, D_in)`` to
``(T, B, H)``. ``method`` is passed to linscan (``"sequential"`` is the paper's serial
baseline). Also here: a small Adam with gradient-norm clipping.

A layer holds ``params`` (name -> array); ``forward(x)`` returns ``(y, cache)`` and
``backward(cache, dy)`` returns ``(dx, grads)`` with ``grads`` keyed like ``params``.
"""

from __future__ import annotations

import sys

import numpy as np

import linscan


def xp_of(arr):
    """The array module of ``arr``: CuPy for CuPy arrays, else NumPy."""
    cupy = sys.modules.get("cupy")
    if cupy is not None and isinstance(arr, cupy.ndarray):
        return cupy
    return np


def sigmoid(xp, v):
    return 0.5 * (xp.tanh(0.5 * v) + 1.0)  # no overflow for large |v|


def _matmul_grads(inp, dpre):
    """Gradient of ``inp @ W`` for ``W`` (summed over time and batch), and of ``inp``'s
    reshaped rows."""
    rows = inp.reshape(-1, inp.shape[-1])
    return rows.T @ dpre.reshape(-1, dpre.shape[-1])


def _shift(v, xp):
    """``v[t-1]`` along time (zeros at ``t = 0``)."""
    out = xp.zeros_like(v)
    out[1:] = v[:-1]
    return out


def _unshift(dv):
    """The gradient of ``_shift``: ``d[t] = dv[t+1]`` (zero at the end)."""
    out = dv.copy()
    out[:-1] = dv[1:]
    out[-1] = 0
    return out


class Layer:
    """Weights drawn like Glorot-uniform; biases zero, except ``forget_bias`` for the decay
    gates (a decay gate near 1 remembers longer from the start)."""

    method = "auto"

    def _weight(self, rng, fan_in, fan_out, xp, dtype):
        limit = np.sqrt(6.0 / (fan_in + fan_out))
        return xp.asarray(rng.uniform(-limit, limit, (fan_in, fan_out)), dtype=dtype)

    def _bias(self, n, value, xp, dtype):
        return xp.full((n,), value, dtype=dtype)


class GILR(Layer):
    """``g = sigmoid(x U + b_g)``, ``i = tanh(x V + b_z)``, ``h[t] = g[t] h[t-1] + (1 - g[t])
    i[t]``."""

    def __init__(self, d_in, hidden, rng, xp=np, dtype=np.float32, forget_bias=1.0):
        self.params = {
            "U": self._weight(rng, d_in, hidden, xp, dtype),
            "b_g": self._bias(hidden, forget_bias, xp, dtype),
            "V": self._weight(rng, d_in, hidden, xp, dtype),
            "b_z": self._bias(hidden, 0.0, xp, dtype),
        }

    def forward(self, x):
        xp, p = xp_of(x), self.params
        g = sigmoid(xp, x @ p["U"] + p["b_g"])
        i = xp.tanh(x @ p["V"] + p["b_z"])
        h = linscan.scan(g, (1 - g) * i, axis=0, method=self.method)
        return h, (x, g, i, h)

    def backward(self, cache, dh):
        x, g, i, h = cache
        p = self.params
        dg, dv, _ = linscan.scan_backward(g, h, dh, axis=0, method=self.method)
        dg = dg - dv * i  # g also scales the input (1 - g) * i
        di = dv * (1 - g)
        dpre_g = dg * g * (1 - g)
        dpre_z = di * (1 - i * i)
        grads = {
            "U": _matmul_grads(x, dpre_g),
            "b_g": dpre_g.sum(axis=(0, 1)),
            "V": _matmul_grads(x, dpre_z),
            "b_z": dpre_z.sum(axis=(0, 1)),
        }
        dx = dpre_g @ p["U"].T + dpre_z @ p["V"].T
        return dx, grads


class GILRLSTM(Layer):
    """The paper's linear surrogate LSTM: a GILR layer gives the surrogate state ``s``; the
    gates ``f, i, o`` and candidate ``z`` come from ``[s[t-1], x[t]]`` in one matrix product
    over all steps; ``c[t] = f[t] c[t-1] + i[t] z[t]`` (a second scan); ``h[t] = o[t] c[t]``."""

    def __init__(self, d_in, hidden, rng, xp=np, dtype=np.float32, forget_bias=1.0):
        self.gilr = GILR(d_in, hidden, rng, xp, dtype, forget_bias)
        self.hidden = hidden
        bias = xp.zeros((4 * hidden,), dtype=dtype)
        bias[:hidden] = forget_bias
        self.params = {
            **{f"gilr.{k}": v for k, v in self.gilr.params.items()},
            "W": self._weight(rng, hidden + d_in, 4 * hidden, xp, dtype),
            "b": bias,
        }
        self.gilr.params = {k: self.params[f"gilr.{k}"] for k in self.gilr.params}

    def forward(self, x):
        xp, p, H = xp_of(x), self.params, self.hidden
        self.gilr.method = self.method
        s, gilr_cache = self.gilr.forward(x)
        inp = xp.concatenate([_shift(s, xp), x], axis=-1)
        pre = inp @ p["W"] + p["b"]
        f = sigmoid(xp, pre[..., :H])
        i = sigmoid(xp, pre[..., H : 2 * H])
        o = sigmoid(xp, pre[..., 2 * H : 3 * H])
        z = xp.tanh(pre[..., 3 * H :])
        c = linscan.scan(f, i * z, axis=0, method=self.method)
        return o * c, (gilr_cache, inp, f, i, o, z, c)

    def backward(self, cache, dh):
        gilr_cache, inp, f, i, o, z, c = cache
        xp, p, H = xp_of(dh), self.params, self.hidden
        do = dh * c
        df, dv, _ = linscan.scan_backward(f, c, dh * o, axis=0, method=self.method)
        dpre = xp.concatenate(
            [df * f * (1 - f), dv * z * i * (1 - i), do * o * (1 - o), dv * i * (1 - z * z)],
            axis=-1,
        )
        dinp = dpre @ p["W"].T
        ds, dx = _unshift(dinp[..., :H]), dinp[..., H:]
        dx_gilr, gilr_grads = self.gilr.backward(gilr_cache, ds)
        grads = {f"gilr.{k}": v for k, v in gilr_grads.items()}
        grads["W"] = _matmul_grads(inp, dpre)
        grads["b"] = dpre.sum(axis=(0, 1))
        return dx + dx_gilr, grads


def _unfold(x, k, xp):
    """``[x[t], x[t-1], ..., x[t-k+1]]`` along features (zeros before the start): a causal
    convolution of width ``k`` becomes one matrix product."""
    return xp.concatenate([x] + [_shifted(x, j, xp) for j in range(1, k)], axis=-1)


def _shifted(x, j, xp):
    out = xp.zeros_like(x)
    out[j:] = x[:-j]
    return out


def _fold(dunf, k, d):
    """The gradient of ``_unfold`` with respect to ``x``."""
    dx = dunf[..., :d].copy()
    for j in range(1, k):
        dx[:-j] += dunf[j:, :, j * d : (j + 1) * d]
    return dx


class QRNN(Layer):
    """Quasi-RNN: ``z = tanh(conv(x))``, ``f = sigmoid(conv(x))`` (and ``o``), causal
    convolutions of width ``k``; f-pooling ``h = scan(f, (1 - f) z)``, fo-pooling ``c =
    scan(f, (1 - f) z)``, ``h = o c``."""

    def __init__(self, d_in, hidden, rng, xp=np, dtype=np.float32, k=2, pooling="fo",
                 forget_bias=1.0):  # fmt: skip
        if pooling not in ("f", "fo"):
            raise ValueError(f"pooling must be 'f' or 'fo', got {pooling!r}")
        self.k, self.pooling, self.hidden, self.d_in = k, pooling, hidden, d_in
        gates = 3 if pooling == "fo" else 2
        bias = xp.zeros((gates * hidden,), dtype=dtype)
        bias[hidden : 2 * hidden] = forget_bias
        self.params = {"W": self._weight(rng, k * d_in, gates * hidden, xp, dtype), "b": bias}

    def forward(self, x):
        xp, p, H = xp_of(x), self.params, self.hidden
        unf = _unfold(x, self.k, xp)
        pre = unf @ p["W"] + p["b"]
        z = xp.tanh(pre[..., :H])
        f = sigmoid(xp, pre[..., H : 2 * H])
        c = linscan.scan(f, (1 - f) * z, axis=0, method=self.method)
        if self.pooling == "f":
            return c, (unf, z, f, None, c)
        o = sigmoid(xp, pre[..., 2 * H :])
        return o * c, (unf, z, f, o, c)

    def backward(self, cache, dh):
        unf, z, f, o, c = cache
        xp, p = xp_of(dh), self.params
        dc = dh if o is None else dh * o
        df, dv, _ = linscan.scan_backward(f, c, dc, axis=0, method=self.method)
        df = df - dv * z
        parts = [dv * (1 - f) * (1 - z * z), df * f * (1 - f)]
        if o is not None:
            parts.append(dh * c * o * (1 - o))
        dpre = xp.concatenate(parts, axis=-1)
        grads = {"W": _matmul_grads(unf, dpre), "b": dpre.sum(axis=(0, 1))}
        return _fold(dpre @ p["W"].T, self.k, self.d_in), grads


class SRU(Layer):
    """Simple Recurrent Unit: ``u = x W``, ``f = sigmoid(x W_f + b_f)``, ``r = sigmoid(x W_r +
    b_r)``, ``c = scan(f, (1 - f) u)``, ``h = r tanh(c) + (1 - r) x'``, where the highway
    input ``x'`` is ``x`` (or ``x P`` when the sizes differ)."""

    def __init__(self, d_in, hidden, rng, xp=np, dtype=np.float32, forget_bias=1.0):
        self.hidden = hidden
        self.params = {
            "W": self._weight(rng, d_in, 3 * hidden, xp, dtype),
            "b": xp.concatenate(
                [
                    xp.zeros((hidden,), dtype),
                    xp.full((hidden,), forget_bias, dtype),
                    xp.zeros((hidden,), dtype),
                ]  # fmt: skip
            ),
        }
        if d_in != hidden:
            self.params["P"] = self._weight(rng, d_in, hidden, xp, dtype)

    def forward(self, x):
        xp, p, H = xp_of(x), self.params, self.hidden
        pre = x @ p["W"] + p["b"]
        u = pre[..., :H]
        f = sigmoid(xp, pre[..., H : 2 * H])
        r = sigmoid(xp, pre[..., 2 * H :])
        c = linscan.scan(f, (1 - f) * u, axis=0, method=self.method)
        tc = xp.tanh(c)
        highway = x @ p["P"] if "P" in p else x
        return r * tc + (1 - r) * highway, (x, u, f, r, c, tc, highway)

    def backward(self, cache, dh):
        x, u, f, r, c, tc, highway = cache
        xp, p = xp_of(dh), self.params
        dc = dh * r * (1 - tc * tc)
        df, dv, _ = linscan.scan_backward(f, c, dc, axis=0, method=self.method)
        df = df - dv * u
        dpre = xp.concatenate(
            [dv * (1 - f), df * f * (1 - f), dh * (tc - highway) * r * (1 - r)], axis=-1
        )
        grads = {"W": _matmul_grads(x, dpre), "b": dpre.sum(axis=(0, 1))}
        dhigh = dh * (1 - r)
        dx = dpre @ p["W"].T
        if "P" in p:
            grads["P"] = _matmul_grads(x, dhigh)
            dx = dx + dhigh @ p["P"].T
        else:
            dx = dx + dhigh
        return dx, grads


class Stack:
    """Layers one after another; ``params`` and ``grads`` keyed ``"<layer>.<name>"``."""

    def __init__(self, layers, method="auto"):
        self.layers = list(layers)
        for layer in self.layers:
            layer.method = method
        self.params = {f"{k}.{n}": v for k, layer in enumerate(self.layers)
                       for n, v in layer.params.items()}  # fmt: skip

    def forward(self, x):
        caches = []
        for layer in self.layers:
            x, cache = layer.forward(x)
            caches.append(cache)
        return x, caches

    def backward(self, caches, dy):
        grads = {}
        for k in reversed(range(len(self.layers))):
            dy, layer_grads = self.layers[k].backward(caches[k], dy)
            grads.update({f"{k}.{n}": v for n, v in layer_grads.items()})
        return dy, grads


class Adam:
    """Adam (Kingma & Ba) with the gradients' global norm clipped to ``clip``; updates the
    parameter arrays in place."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, clip=1.0):
        self.params, self.lr, self.betas, self.eps, self.clip = params, lr, betas, eps, clip
        self.m = {k: v * 0 for k, v in params.items()}
        self.v = {k: v * 0 for k, v in params.items()}
        self.t = 0

    def step(self, grads) -> float:
        """Apply one update; returns the gradients' global norm before clipping."""
        norm = float(sum(float((g * g).sum()) for g in grads.values()) ** 0.5)
        scale = min(1.0, self.clip / (norm + 1e-12))
        self.t += 1
        b1, b2 = self.betas
        for k, p in self.params.items():
            g = grads[k] * scale
            self.m[k] = b1 * self.m[k] + (1 - b1) * g
            self.v[k] = b2 * self.v[k] + (1 - b2) * g * g
            m_hat = self.m[k] / (1 - b1**self.t)
            v_hat = self.v[k] / (1 - b2**self.t)
            p -= (self.lr * m_hat / ((v_hat**0.5) + self.eps)).astype(p.dtype)
        return norm
