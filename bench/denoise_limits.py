"""Where the denoiser's SNR >= 20 retrieval is lost, and what matching against denoised library copies buys.

The denoiser benchmark (``crevkit bench --only denoise``) scores one held-out
tile draw.  This script trains the default :class:`crevkit.denoise.Denoiser`
on the same library and noise model (or loads a checkpoint of it) and looks
at two tile draws, the validation tiles the hyper-parameters were chosen on
(``make_library(3000, seed=6)``, shots seed 7) and the benchmark's held-out
tiles (``make_library(3000, seed=2)``, shots seed 3):

1. **Retrieval against the library plus denoised noisy copies of it**
   (:func:`crevkit.denoise.noisy_library_copies` at ``COPY_SNRS``, denoised by
   the same network and blend): each waveform a match of its own, as the
   pipeline's ``match.library_copies`` matches (a tile can come back once per
   waveform), and, for comparison, the 30 nearest *distinct* tiles.
2. **The information limit.**  For every crevassed shot at SNR >= 20 the
   integrated significance of its tail ``z = SNR · Σ tail / (peak · √n_tail)``
   (the tail: everything after the main return drops under 10 % of its peak),
   and the retrieval of clean and denoised shots by ``z``, plus the
   non-crevassed shots (false crevasse calls).

Not part of the pipeline; every number is printed as a markdown table.

Usage::

    PYTHONPATH=python OMP_WAIT_POLICY=PASSIVE python bench/denoise_limits.py [--checkpoint model.pt]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from crevkit.benchmarks.denoise import SNR_LEVELS, bench_noise_model, make_library, make_shots
from crevkit.denoise import COPY_SNRS, Denoiser, matching_vectors, noisy_library_copies

K = 30
Z_BINS = ((0.0, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, np.inf))


def vote_share(queries: np.ndarray, vectors: np.ndarray, row_of: np.ndarray, labels: np.ndarray, *,
               distinct: bool, k: int = K, batch: int = 2048) -> np.ndarray:
    """Share of crevassed tiles among each query's ``k`` nearest waveforms (exact GEMM; ``row_of``: each
    waveform's library row), or among its ``k`` nearest *distinct* library rows (``distinct``)."""
    per_row = len(vectors) // (row_of.max() + 1)  # waveforms per library row
    depth = min(len(vectors), k * per_row) if distinct else k  # enough to hold k distinct rows
    share = np.empty(len(queries))
    for s in range(0, len(queries), batch):
        sim = queries[s:s + batch] @ vectors.T
        top = np.argpartition(-sim, depth - 1, axis=1)[:, :depth]
        top = np.take_along_axis(top, np.argsort(-np.take_along_axis(sim, top, 1), axis=1), 1)
        for i, cand in enumerate(row_of[top]):
            if distinct:
                _, first = np.unique(cand, return_index=True)
                cand = cand[np.sort(first)[:k]]
            share[s + i] = (labels[cand] == 1).mean()
    return share


def tail_significance(clean: np.ndarray, snr: np.ndarray) -> np.ndarray:
    """``z = SNR · Σ tail / (peak · √n_tail)`` per waveform (0 where there is no tail)."""
    z = np.zeros(len(clean))
    for i, w in enumerate(clean):
        p = int(w.argmax())
        peak = w[p]
        below = np.flatnonzero(w[p:] < 0.1 * peak)
        if below.size == 0:
            continue
        tail = w[p + below[0]:]
        support = np.flatnonzero(tail > 1e-6 * peak)
        if support.size:
            tail = tail[: support[-1] + 1]
            z[i] = snr[i] * tail.sum() / (peak * np.sqrt(tail.size))
    return z


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a trained default Denoiser (default: train one, ~5 min on 2 threads)")
    args = parser.parse_args()

    t0 = time.perf_counter()
    library, labels = make_library(12000, seed=1)
    noise = bench_noise_model()
    if args.checkpoint:
        model = Denoiser.load(args.checkpoint, device="cpu", n_threads=2)
    else:
        model = Denoiser(seed=0, n_threads=2, device="cpu").fit(library, noise)
    lib_vectors = matching_vectors(library)
    n, m = len(library), len(COPY_SNRS)
    copies = model.transform(noisy_library_copies(library, noise, COPY_SNRS, seed=11))
    with_copies = (np.concatenate([lib_vectors, matching_vectors(copies)]), np.tile(np.arange(n), m + 1))
    libraries = {"library (row (c) of the benchmark)": ((lib_vectors, np.arange(n)), False),
                 f"library + {m} denoised copies, each waveform a match (the pipeline, row (c*))": (with_copies, False),
                 f"library + {m} denoised copies, 30 distinct tiles": (with_copies, True)}

    print(f"Default Denoiser; copies at peak SNR {', '.join(f'{v:g}' for v in COPY_SNRS)}; "
          f"{time.perf_counter() - t0:.0f} s to here.\n")
    rows, limit_rows = [], []
    for draw, tile_seed, shot_seed in (("validation", 6, 7), ("held-out", 2, 3)):
        tiles, truth_tiles = make_library(3000, seed=tile_seed)
        snr = np.repeat(np.asarray(SNR_LEVELS, np.float32), len(tiles))
        clean = np.tile(tiles, (len(SNR_LEVELS), 1))
        truth = np.tile(truth_tiles, len(SNR_LEVELS))
        noisy, _ = make_shots(clean, noise, snr, seed=shot_seed)
        queries = {"denoised": matching_vectors(model.transform(noisy)), "clean": matching_vectors(clean)}
        high = snr >= 20
        agree = {}
        for lib_name, ((vectors, row_of), distinct) in libraries.items():
            for q_name, q in queries.items():
                ok = (vote_share(q, vectors, row_of, labels, distinct=distinct) > 0.5) == (truth == 1)
                agree[lib_name, q_name] = ok
                rows.append(f"| {draw} | {q_name} | {lib_name} | {ok.mean():.3f} | {ok[snr == 20].mean():.3f} | "
                            f"{ok[snr == 50].mean():.3f} | {ok[high].mean():.4f} |")
        z = tail_significance(clean, snr)
        base = next(iter(libraries))
        crevassed = high & (truth == 1)
        for lo, hi in Z_BINS:
            sel = crevassed & (z >= lo) & (z < hi)
            limit_rows.append(f"| {draw} | crevassed, tail z in [{lo:g}, {hi:g}) | {sel.sum()} | "
                              f"{agree[base, 'clean'][sel].mean():.3f} | {agree[base, 'denoised'][sel].mean():.3f} |")
        sel = high & (truth != 1)
        limit_rows.append(f"| {draw} | not crevassed | {sel.sum()} | {agree[base, 'clean'][sel].mean():.3f} | "
                          f"{agree[base, 'denoised'][sel].mean():.3f} |")

    print("| tiles | shots | matched against | mixed SNR | SNR 20 | SNR 50 | SNR >= 20 |")
    print("|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print("\nSNR >= 20 shots by class and integrated tail significance z (library as in the benchmark):\n")
    print("| tiles | shots | n | clean | denoised |")
    print("|---|---|---|---|---|")
    print("\n".join(limit_rows))
    print(f"\n{time.perf_counter() - t0:.0f} s in all.")


if __name__ == "__main__":
    main()
