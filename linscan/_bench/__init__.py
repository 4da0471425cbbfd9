"""``python -m linscan bench``: :mod:`.cpu` (the Numba backend, ``bench``) and :mod:`.gpu`
(the CUDA kernels, ``bench --gpu``), on what :mod:`.common` holds for both (the layout cases,
timing in interleaved pairs, the environment record, peers, Markdown and JSON)."""
