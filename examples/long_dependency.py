"""The synthetic long-dependency task of Martin & Cundy (2018), section 5, with linscan alone.

A sequence of ``n`` steps: step 0 is ``(+1 or -1, 0, ..., 0)``, every later step a one-hot
vector of 128 dimensions drawn uniformly; the label is the sign at step 0, to be read after the
last step. Fresh data every minibatch. Model: two GILR-LSTM layers (examples/linear_rnn.py)
and a linear readout of the last step, softmax cross-entropy, Adam with gradient clipping.
Converged: 100% accuracy on 5 consecutive minibatches.

    python examples/long_dependency.py --length 1024            # NumPy, a few minutes on 2 cores
    python examples/long_dependency.py --length 1048576 --gpu   # CuPy: the paper's million steps

The decay gates start with "chrono" biases (Tallec & Ollivier, 2018): unit k remembers over
a timescale drawn from [1, n], so that from the first update some units carry step 0 to the
end. Prints progress; writes the accuracy against iterations and wall time as CSV, and as a
plot where matplotlib is installed.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import linear_rnn as rnn  # noqa: E402

DIM = 128


def batch(rng, n, size, xp=np, dtype=np.float32):
    """``(x, labels)``: ``x`` of shape ``(n, size, 128)``, labels 0 (for -1) or 1 (for +1)."""
    signs = rng.choice([-1.0, 1.0], size)
    hot = rng.integers(0, DIM, (n - 1, size))
    x = np.zeros((n, size, DIM), dtype)
    x[0, :, 0] = signs
    x[np.arange(1, n)[:, None], np.arange(size)[None, :], hot] = 1.0
    return xp.asarray(x), xp.asarray((signs > 0).astype(np.int64))


def chrono_bias(rng, length, hidden):
    """Decay-gate biases whose timescales are drawn from ``[1, length]`` (chrono init)."""
    tau = rng.uniform(1.0, max(2.0, float(length)), hidden)
    return np.log(np.maximum(tau - 1.0, 1e-3))


class Model:
    """Two GILR-LSTM layers and a linear readout of the last step."""

    def __init__(self, hidden, length, rng, xp=np, dtype=np.float32, method="auto"):
        self.xp = xp
        layers = [
            rnn.GILRLSTM(DIM, hidden, rng, xp, dtype),
            rnn.GILRLSTM(hidden, hidden, rng, xp, dtype),
        ]
        for layer in layers:
            bias = xp.asarray(chrono_bias(rng, length, hidden), dtype=dtype)
            layer.params["gilr.b_g"][...] = bias
            layer.params["b"][:hidden] = bias
        self.stack = rnn.Stack(layers, method)
        limit = np.sqrt(6.0 / (hidden + 2))
        self.params = dict(self.stack.params)
        self.params["R"] = xp.asarray(rng.uniform(-limit, limit, (hidden, 2)), dtype=dtype)
        self.params["r"] = xp.zeros((2,), dtype)

    def loss_and_grads(self, x, labels):
        """Mean cross-entropy, accuracy and the gradients of the loss."""
        xp = self.xp
        h, caches = self.stack.forward(x)
        last = h[-1]
        logits = last @ self.params["R"] + self.params["r"]
        logits = logits - logits.max(axis=1, keepdims=True)
        p = xp.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        size = labels.shape[0]
        rows = xp.arange(size)
        loss = float(-xp.log(p[rows, labels] + 1e-12).mean())
        accuracy = float((p.argmax(axis=1) == labels).mean())
        dlogits = p
        dlogits[rows, labels] -= 1.0
        dlogits /= size
        grads = {"R": last.T @ dlogits, "r": dlogits.sum(axis=0)}
        dh = xp.zeros_like(h)
        dh[-1] = dlogits @ self.params["R"].T
        _, stack_grads = self.stack.backward(caches, dh)
        grads.update(stack_grads)
        return loss, accuracy, grads


def train(length=1024, hidden=32, size=32, lr=3e-3, max_iters=5000, seed=0, xp=np,
          method="auto", time_limit=None, progress=print, every=25):  # fmt: skip
    """Train until 5 consecutive minibatches are all right (or ``max_iters`` / ``time_limit``
    seconds). Returns the history: one ``(iteration, seconds, loss, accuracy)`` per step."""
    rng = np.random.default_rng(seed)
    model = Model(hidden, length, rng, xp, method=method)
    opt = rnn.Adam(model.params, lr=lr, clip=1.0)

    def step():
        x, labels = batch(rng, length, size, xp)
        loss, accuracy, grads = model.loss_and_grads(x, labels)
        opt.step(grads)
        return loss, accuracy

    return _fit(step, max_iters, time_limit, progress, every, "")


def _fit(step, max_iters, time_limit, progress, every, label) -> list:
    """Call ``step()`` (one update, returning ``(loss, accuracy)``) until 5 consecutive
    minibatches are all right, ``max_iters`` or ``time_limit`` seconds; report progress.
    Returns one ``(iteration, seconds, loss, accuracy)`` per update."""
    history, streak, start = [], 0, time.perf_counter()
    for it in range(1, max_iters + 1):
        loss, accuracy = step()
        elapsed = time.perf_counter() - start
        history.append((it, elapsed, loss, accuracy))
        streak = streak + 1 if accuracy == 1.0 else 0
        if it % every == 0 or streak == 5:
            progress(f"{label}iter {it:6d}  {elapsed:8.1f} s  {it / elapsed:6.2f} it/s  "
                     f"loss {loss:.4f}  accuracy {accuracy:.3f}")  # fmt: skip
        if streak == 5:
            progress(f"{label}converged after {it} iterations, {elapsed:.1f} s")
            break
        if time_limit is not None and elapsed > time_limit:
            progress(f"{label}stopped at the time limit after {it} iterations ({elapsed:.1f} s)")
            break
    return history


def train_torch_lstm(length=1024, hidden=32, size=32, lr=3e-3, max_iters=5000, seed=0,
                     time_limit=None, progress=print, every=25):  # fmt: skip
    """The baseline of the paper's comparison: the same task, data and criterion with two
    ``torch.nn.LSTM`` layers (PyTorch's own kernels, CPU or cuDNN), the same readout,
    optimizer and clipping, and the same chrono initialization of the forget gates. Returns
    the history like :func:`train`."""
    import torch

    torch.manual_seed(seed)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    lstm = torch.nn.LSTM(DIM, hidden, num_layers=2)
    init = np.random.default_rng(seed + 1)
    with torch.no_grad():
        for layer in range(2):  # gate order i, f, g, o; the forget bias is split over two
            bias = torch.from_numpy(chrono_bias(init, length, hidden))
            getattr(lstm, f"bias_ih_l{layer}")[hidden : 2 * hidden] = bias
            getattr(lstm, f"bias_hh_l{layer}")[hidden : 2 * hidden] = 0.0
    lstm = lstm.to(device)
    readout = torch.nn.Linear(hidden, 2).to(device)
    params = list(lstm.parameters()) + list(readout.parameters())
    opt = torch.optim.Adam(params, lr=lr)
    rng = np.random.default_rng(seed)

    def step():
        x, labels = batch(rng, length, size)
        x, labels = torch.from_numpy(x).to(device), torch.from_numpy(labels).to(device)
        logits = readout(lstm(x)[0][-1])
        loss = torch.nn.functional.cross_entropy(logits, labels)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.item(), float((logits.argmax(dim=1) == labels).float().mean())

    return _fit(step, max_iters, time_limit, progress, every, "torch LSTM ")


def converged(history) -> bool:
    return len(history) >= 5 and all(acc == 1.0 for *_, acc in history[-5:])


def write(history, stem: Path) -> list:
    """The history as ``stem.csv`` and, where matplotlib is installed, ``stem.png``."""
    written = [stem.with_suffix(".csv")]
    with open(written[0], "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(["iteration", "seconds", "loss", "accuracy"])
        out.writerows(history)
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return written
    it, sec, _, acc = zip(*history)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5), sharey=True)
    for ax, xs, label in ((axes[0], it, "iteration"), (axes[1], sec, "seconds")):
        ax.plot(xs, acc, lw=0.8)
        ax.set_xlabel(label)
    axes[0].set_ylabel("minibatch accuracy")
    fig.suptitle(f"long-dependency task, n = {stem.name.split('-')[-1]}")
    fig.tight_layout()
    fig.savefig(stem.with_suffix(".png"), dpi=120)
    written.append(stem.with_suffix(".png"))
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--max-iters", type=int, default=5000)
    parser.add_argument("--time-limit", type=float, default=None, help="seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--method", default="auto", choices=["auto", "parallel", "sequential"])
    parser.add_argument("--gpu", action="store_true", help="CuPy arrays on the current GPU")
    parser.add_argument(
        "--baseline", action="store_true", help="also train torch.nn.LSTM (needs PyTorch)"
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for CSV and plot")
    args = parser.parse_args(argv)
    xp = np
    if args.gpu:
        import cupy as xp
    history = train(args.length, args.hidden, args.batch, args.lr, args.max_iters, args.seed,
                    xp, args.method, args.time_limit)  # fmt: skip
    args.out.mkdir(parents=True, exist_ok=True)
    for path in write(history, args.out / f"long-dependency-{args.length}"):
        print(f"wrote {path}")
    if args.baseline:
        base = train_torch_lstm(args.length, args.hidden, args.batch, args.lr, args.max_iters,
                                args.seed, args.time_limit)  # fmt: skip
        for path in write(base, args.out / f"long-dependency-torch-lstm-{args.length}"):
            print(f"wrote {path}")
        for name, h in (("linscan GILR-LSTM", history), ("torch.nn.LSTM", base)):
            state = "converged" if converged(h) else "not converged"
            print(f"{name:18s} {state:14s} after {h[-1][0]:6d} iterations, {h[-1][1]:8.1f} s")
    return history


if __name__ == "__main__":
    main()
