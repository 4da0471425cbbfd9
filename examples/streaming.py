"""Scan a long signal piece by piece, carrying the state with final_state.

An exponential moving average of a signal that arrives in chunks (from a file, a socket, a
sensor) equals the moving average of the whole signal when each chunk starts from the
previous chunk's final state. Run: python examples/streaming.py
"""

import numpy as np

import linscan


def stream(chunks, decay):
    """Yield the moving average of each chunk; ``h = decay * h + (1 - decay) * x``."""
    state = None
    for chunk in chunks:
        x = (1 - decay) * chunk
        yield linscan.scan(decay, x, state)
        state = linscan.final_state(decay, x, state)


def main():
    rng = np.random.default_rng(0)
    signal = np.cumsum(rng.standard_normal(1_000_000)).astype(np.float32)
    chunks = np.array_split(signal, 37)  # uneven pieces
    pieces = np.concatenate(list(stream(chunks, decay=0.999)))
    whole = linscan.scan(0.999, (1 - 0.999) * signal)
    err = np.max(np.abs(pieces - whole)) / np.max(np.abs(whole))
    print(f"{len(chunks)} chunks of ~{len(chunks[0])} steps; max relative difference {err:.1e}")
    return err


if __name__ == "__main__":
    main()
