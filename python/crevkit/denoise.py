"""The learned denoiser: noisy, scaled, shifted waveforms -> clean library waveforms (PyTorch).

A 1-D Inception-style convolutional autoencoder (:class:`InceptionAutoencoder`)
maps a noisy shot to the clean library waveform it came from: unit sum, the
highest surface point at ``lead`` (10 ns), i.e. it de-noises *and* de-shifts.
Training never sees the same noisy waveform twice: :class:`NoisyWaveformStream`
(an ``IterableDataset``, seeded) draws a fresh amplitude scale, time shift and
noise vector from the noise model for every waveform of every batch, so a
library of clean waveforms becomes an endless stream.

Design choices (measured, see ``bench/RESULTS.md``):

* Speed first.  A stride-4 stem takes 544 samples to 136 with 12 channels
  (the only full-resolution layers are the stem and the last transposed
  conv, each with one input or output channel); residual Inception blocks
  (a k=5 branch and a k=3 dilation-4 branch in parallel, mixed by a 1×1)
  work at 136, 68 and 34 samples; a dense bottleneck over the whole
  (34-sample) map lets the network move the waveform, which a purely
  convolutional net cannot do (no skip connections: they would carry the
  shift through).  On the CPU each convolution call has a large fixed cost,
  so two fused branches beat four thin ones, and training batches of 512
  give about twice the samples/s of batches of 128 on 2 threads.
  BatchNorm after every convolution: without it the scale-free output
  drifted into a constant (the mean waveform) within a few dozen steps.
* The network predicts the square root of the clean waveform: the output
  ``a`` becomes ``a² / Σ a²``, so the result is non-negative and unit-sum by
  construction and ``|a| / ||a||`` is exactly the unit-L2 square-root vector
  used for matching.  The default loss (``loss="sqrt"``) is the squared
  distance in that space, i.e. the matching space: the loss and the matching
  space are chosen by the end-to-end retrieval metric, not by RMSE.
  ``loss="mse"`` (relative waveform MSE) and ``"mixed"`` are available.
* A neighbourhood term, on by default (``neighbour_weight``): the squared
  loss gives the posterior mean, which for a shot that may or may not carry
  a weak crevasse tail keeps half a tail and lands between the classes'
  library neighbourhoods.  A reverse (mode-seeking) KL divergence between
  the output's and the target's soft neighbourhoods in a bank of library
  matching vectors pushes it into one (label-free; the target's own row is
  masked).  Benchmark, picked on validation tiles (seed 6): SNR >= 20
  retrieval +0.9 to +1.3 points, mixed +1.9; the forward KL (mode-covering) did
  nothing, and weights of 0.01 and more collapse the network.  On the
  default demo scene (a library of ~800 tiles) it did not help (seed 0: shot
  AUC 0.944 vs 0.954), so the pipeline keeps it off
  (``denoiser.neighbour_weight: 0``).  A network trained with it is blended
  with more of its own weight (``BLEND_WEIGHTS``, :attr:`Denoiser.blend_weights_`).
* Other retrieval-aware extras, off by default (measured on the benchmark's
  library, hyper-parameters picked on tiles of their own, seed 6): a
  label-free InfoNCE term (``contrastive_weight`` 0.1, ``τ`` 0.05, a bank of
  2048 library roots) plus a fourth-root tail term (``tail_weight`` 0.5)
  lifts the network alone by 1.6–3.8 points of mixed-SNR retrieval (two
  seeds, validation and held-out tiles), but after the blend the gain is
  within seed noise (-0.2 to +0.6 points).  A Cramér (CDF) term and a
  high-SNR second phase (``finetune_steps``) did not help.
  Why SNR >= 20 stays under the clean ceiling: retrieval depends on tails
  below 1 % of the peak (zeroing the clean waveforms there costs 3.5
  points, below 2 % 9 points), while at SNR 50 the noise sd is 2 % of the
  peak; with the true support known (an oracle) noisy shots at SNR 50
  retrieve 0.95.
* Input normalization is inside the model: subtract the median (background),
  divide by the maximum; any scale and offset of the shot are removed.

Threads: :class:`Denoiser` sets ``torch.set_num_threads(n_threads)`` (default:
all usable cores) around its own work and restores the previous value.  On
shared machines PyTorch's OpenMP spin-waiting can collapse multi-thread
throughput several-fold; run with ``OMP_WAIT_POLICY=PASSIVE`` (the Makefile
exports it; this module sets it as a default when it is the first to import
torch) or with one thread per process.

Devices: ``device="auto"`` uses CUDA when present, else the CPU.  On CUDA the
library lives on the GPU and the augmentation (gather, fractional shift,
scale, noise) runs there; only the noise model's draws cross the bus.

The default model is :class:`GatedInceptionUNet` (the same blocks, but the
shot is pre-aligned first so skip connections are allowed, a gated input
skip lets nearly clean shots through, and a small head undoes the
alignment): the plain autoencoder smoothed away the weak late-tail detail
crevasses leave and was 12 points under the clean ceiling at SNR >= 20.
At inference the output is blended, by estimated SNR, with a
noise-floored matched filter of the same shot (:func:`blend_with_classical`):
"floor" (the default: best on the benchmark's tiles), "max" (never below the
network's own root, so a weak crevasse tail the floor drops survives: best
on the demo scene, shot AUC +0.03 to +0.05) or "none".  The pipeline's
``denoise.blend: auto`` picks between floor and max per run on the labelled
tiles (:mod:`crevkit.blend_calibration`).

Matching like with like: :func:`noisy_library_copies` makes every library
waveform look recorded at a few peak SNRs (:data:`COPY_SNRS`); denoised as the
shots are and indexed beside the clean library
(:class:`crevkit.index.IndexWithCopies`, the pipeline's
``match.library_copies``), they give each tile a neighbourhood in the
denoiser's own output space, weak tails smoothed away as they are in the
shots'.  Benchmark: SNR >= 20 retrieval +1.0 point on the validation and the
held-out tiles, for two networks; demo shot AUC +0.004.

Training shots can be cut to the record lengths of the noise model's source
(``record_lengths``; GLAS keeps 200-sample short records beside 544-sample
long ones) and padded with their recorded median, exactly as the pipeline
pads short records before denoising.

Also here: the classical baseline :func:`classical_denoise` (Savitzky–Golay,
Wiener or Gaussian matched-filter smoothing, an optional noise floor,
leading-edge alignment) and the metrics used by the tests
and the benchmark (:func:`waveform_rmse`, :func:`shift_error`,
:func:`matching_vectors`, :func:`class_retrieval`, an exact NumPy k-NN that can
be swapped for :mod:`crevkit.index`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import math
import os
import shutil
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Iterator

if "torch" not in sys.modules:  # a deliberate thread policy, only if we are first to load OpenMP via torch
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch
from torch import nn
from torch.utils.data import IterableDataset

from ._atomic import atomic_path, atomic_write_bytes
from ._progress import StageCounts, progress as progress_bar
from ._validation import as_float32_array, check_int, check_positive, resolve_threads
from .errors import CrevkitTypeError, CrevkitValueError, IndexIntegrityError, InputFileError

__all__ = [
    "Denoiser",
    "InceptionAutoencoder",
    "GatedInceptionUNet",
    "NoisyWaveformStream",
    "noisy_library_copies",
    "COPY_SNRS",
    "classical_denoise",
    "blend_with_classical",
    "BLEND_MODES",
    "BLEND_WEIGHTS",
    "shift_waveforms",
    "thresholded_centroid",
    "matching_vectors",
    "knn_labels",
    "class_retrieval",
    "waveform_rmse",
    "shift_error",
    "noise_model_fingerprint",
]

log = logging.getLogger("crevkit.denoise")

CHECKPOINT_FORMAT = "crevkit.denoise"
CHECKPOINT_VERSION = 1
_DOWNSAMPLE = 16  # total stride of the encoder
MATCH_POSITION = 128.0  # where matching vectors put their centroid (room for late centroids)
# The neighbourhood term (:func:`_neighbour_kl`): weight and temperature picked on the benchmark's validation
# tiles (seed 6; weight 0.002-0.005 alike, 0.008 worse, 0.01+ collapses the network; tau 0.0005 ~ 0.001 > 0.002)
NEIGHBOUR_WEIGHT = 0.004
NEIGHBOUR_TEMPERATURE = 0.0005

_DEFAULTS: dict[str, Any] = {
    "n_samples": 544,
    "lead": 10.0,
    "width": 24,
    "bottleneck": 96,
    "architecture": "gated-unet",
    "loss": "sqrt",
    "contrastive_weight": 0.0,
    "contrastive_temperature": 0.05,
    "contrastive_bank": 0,
    "cdf_weight": 0.0,
    "tail_weight": 0.0,
    "neighbour_weight": NEIGHBOUR_WEIGHT,
    "neighbour_temperature": NEIGHBOUR_TEMPERATURE,
    "neighbour_bank": 4096,
    "finetune_steps": 0,
    "finetune_snr": [15.0, 100.0],
    "shift_weight": 0.002,
    "blend": "floor",
    "n_steps": 1000,
    "batch_size": 512,
    "learning_rate": 3e-3,
    "weight_decay": 0.0,
    "background": [0.0, 0.0],
    "record_lengths": True,
    "seed": 0,
    "validation_size": 1024,
    "validation_every": 100,
    "n_threads": None,
    "device": "auto",
}
_LOSSES = ("sqrt", "mse", "mixed")
_ARCHITECTURES = ("gated-unet", "autoencoder")
_SKIP_SIGMA = 1.5  # samples: the U-Net's input skip is smoothed this much ...
_SKIP_THRESHOLD = 0.0  # ... and soft-thresholded at this many (smoothed) noise sd (1.5 measured 1.5 points worse)


# --------------------------------------------------------------------------------------------------
# NumPy helpers: shifting, centroids, classical baseline, metrics
# --------------------------------------------------------------------------------------------------

def shift_waveforms(waveforms: np.ndarray, shifts: np.ndarray | float) -> np.ndarray:
    """Delay each row by ``shifts`` samples (fractional: linear interpolation; zeros enter at the edges).

    ``out[i, t] = w[i, t - shifts[i]]``: a positive shift moves the waveform later.
    """
    w = np.asarray(waveforms, dtype=np.float32)
    n, length = w.shape
    s = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (n,))
    src = np.arange(length)[None, :] - s[:, None]
    lo = np.floor(src)
    frac = (src - lo).astype(np.float32)
    lo = lo.astype(np.int64)
    hi = lo + 1
    rows = np.arange(n)[:, None]
    v_lo = np.where((lo >= 0) & (lo < length), w[rows, np.clip(lo, 0, length - 1)], 0.0)
    v_hi = np.where((hi >= 0) & (hi < length), w[rows, np.clip(hi, 0, length - 1)], 0.0)
    return ((1.0 - frac) * v_lo + frac * v_hi).astype(np.float32)


def thresholded_centroid(waveforms: np.ndarray, threshold: float = 0.1) -> np.ndarray:
    """Centroid (in samples) of each row over the samples at or above ``threshold`` × its peak.

    Rows with no positive sample give NaN.
    """
    w = np.asarray(waveforms, dtype=np.float64)
    peak = w.max(axis=1, keepdims=True)
    mask = (w >= threshold * peak) & (w > 0)
    wm = np.where(mask, w, 0.0)
    total = wm.sum(axis=1)
    t = np.arange(w.shape[1], dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, (wm * t).sum(axis=1) / total, np.nan)


def _leading_edge(w: np.ndarray, fraction: float) -> np.ndarray:
    """First crossing (sub-sample, linear) of ``fraction`` × peak in each row; NaN where no peak."""
    peak = w.max(axis=1)
    level = fraction * peak
    above = w >= level[:, None]
    i = np.argmax(above, axis=1)
    rows = np.arange(w.shape[0])
    prev = w[rows, np.maximum(i - 1, 0)]
    cur = w[rows, i]
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where((i > 0) & (cur > prev), (level - prev) / (cur - prev), 0.0)
    edge = np.where(i > 0, i - 1 + frac, 0.0)
    return np.where(peak > 0, edge, np.nan)


def _unit_sum(w: np.ndarray) -> np.ndarray:
    s = w.sum(axis=1, keepdims=True)
    return np.divide(w, s, out=np.zeros_like(w), where=s > 0).astype(np.float32)


def classical_denoise(waveforms: Any, *, method: str = "savgol", window: int = 15, polyorder: int = 3,
                      sigma: float = 2.55, noise_floor: float = 0.0,
                      edge_fraction: float = 0.3, edge_position: float | None = None,
                      reference: Any = None) -> np.ndarray:
    """Classical baseline: background removal, smoothing, leading-edge alignment, unit sum.

    Parameters
    ----------
    waveforms : array_like, shape (n, n_samples)
        Noisy shots (any scale and offset).  Converted once to float32.
    method : {"savgol", "wiener", "gaussian", "none"}
        Savitzky–Golay (``window``, ``polyorder``), Wiener (``window``), a
        Gaussian matched filter (``sigma`` samples; 2.55 = the GLAS 6 ns pulse),
        or no smoothing ("none": the noisy shot itself, only aligned; row (a)
        of the benchmark).
    noise_floor : float
        After smoothing, samples below ``noise_floor`` × the shot's noise sd
        (estimated robustly from first differences, times the smoothing's
        noise gain) are set to zero.  Default 0 (only negative samples are
        dropped).  The matching space takes square roots, which magnify the
        noise floor: a floor of 2 raised the Gaussian filter's mixed-SNR
        retrieval by ~10 points in the benchmark.
    edge_fraction : float
        The leading edge is the first (sub-sample) crossing of this fraction of
        the (smoothed) peak.
    edge_position : float, optional
        Where the leading edge is put.  Default: the median leading edge of
        ``reference`` (clean library waveforms), else 7.0 (GLAS, 6 ns pulse,
        edge fraction 0.3, highest point at 10 ns).
    reference : array_like, optional
        Clean library waveforms used to calibrate ``edge_position``.

    Returns
    -------
    ndarray of float32, shape (n, n_samples)
        Non-negative, unit sum (all-zero where a shot has no positive sample),
        the leading edge at ``edge_position``.
    """
    from scipy import signal

    w = as_float32_array(waveforms, "waveforms", ndim=2, allow_nan=False).astype(np.float64)
    if method not in ("savgol", "wiener", "gaussian", "none"):
        raise CrevkitValueError(f"method must be 'savgol', 'wiener', 'gaussian' or 'none', got {method!r}")
    window = check_int(window, "window", minimum=3, maximum=w.shape[1])
    if not 0.0 < edge_fraction < 1.0:
        raise CrevkitValueError(f"edge_fraction must be in (0, 1), got {edge_fraction!r}")
    w = w - np.median(w, axis=1, keepdims=True)
    noise_floor = float(noise_floor)
    if not noise_floor >= 0.0:
        raise CrevkitValueError(f"noise_floor must be >= 0, got {noise_floor!r}")
    # noise sd before smoothing (first differences: insensitive to the return itself)
    sd = np.median(np.abs(np.diff(w, axis=1)), axis=1) / (0.6745 * math.sqrt(2.0))
    gain = 1.0
    if method == "savgol":
        polyorder = check_int(polyorder, "polyorder", minimum=0, maximum=window - 1)
        w = signal.savgol_filter(w, window | 1, polyorder, axis=1)
        gain = float(np.sqrt((signal.savgol_coeffs(window | 1, polyorder) ** 2).sum()))
    elif method == "wiener":
        w = np.stack([signal.wiener(row, window | 1) for row in w])
        gain = 1.0 / math.sqrt(window | 1)  # roughly: a local mean where the signal is flat
    elif method == "gaussian":
        from scipy.ndimage import gaussian_filter1d

        sigma = check_positive(sigma, "sigma", maximum=w.shape[1])
        w = gaussian_filter1d(w, sigma, axis=1, mode="constant")
        gain = float(np.sqrt(1.0 / (2.0 * math.sqrt(math.pi) * sigma)))  # sd of unit-sum Gaussian-filtered white noise
    w = np.clip(w, 0.0, None)
    if noise_floor > 0:
        w = np.where(w >= noise_floor * gain * sd[:, None], w, 0.0)
    if edge_position is None:
        if reference is not None:
            ref = as_float32_array(reference, "reference", ndim=2, allow_nan=False).astype(np.float64)
            edge_position = float(np.nanmedian(_leading_edge(ref, edge_fraction)))
        else:
            edge_position = 7.0
    edge = _leading_edge(w, edge_fraction)
    shift = np.where(np.isfinite(edge), edge_position - edge, 0.0)
    return _unit_sum(shift_waveforms(w.astype(np.float32), shift))


def waveform_rmse(estimate: np.ndarray, clean: np.ndarray) -> np.ndarray:
    """Per-row RMSE between two unit-sum waveform sets, as a fraction of the clean row's peak."""
    e = np.asarray(estimate, dtype=np.float64)
    c = np.asarray(clean, dtype=np.float64)
    return np.sqrt(((e - c) ** 2).mean(axis=1)) / np.maximum(c.max(axis=1), 1e-12)


def shift_error(estimate: np.ndarray, clean: np.ndarray, bin_ns: float = 1.0, threshold: float = 0.1) -> np.ndarray:
    """Per-row time offset (ns) of ``estimate`` relative to ``clean`` (thresholded centroids)."""
    return (thresholded_centroid(estimate, threshold) - thresholded_centroid(clean, threshold)) * bin_ns


def matching_vectors(waveforms: Any, position: float = MATCH_POSITION, threshold: float = 0.1) -> np.ndarray:
    """Matching space: clip at 0, unit sum, centroid-align (sub-sample) to ``position``, square root, unit L2."""
    w = np.clip(as_float32_array(waveforms, "waveforms", ndim=2, allow_nan=False), 0.0, None)
    w = _unit_sum(w)
    c = thresholded_centroid(w, threshold)
    w = shift_waveforms(w, np.where(np.isfinite(c), position - c, 0.0))
    v = np.sqrt(np.clip(w, 0.0, None))
    norm = np.linalg.norm(v, axis=1, keepdims=True)
    return np.divide(v, norm, out=np.zeros_like(v), where=norm > 0).astype(np.float32)


def knn_labels(query_vectors: np.ndarray, library_vectors: np.ndarray, library_labels: np.ndarray,
               k: int = 30, batch: int = 2048) -> np.ndarray:
    """Labels of the ``k`` nearest library vectors of each query (exact: NumPy GEMM on unit-L2 vectors).

    A drop-in place for :mod:`crevkit.index` once it lands.
    """
    k = check_int(k, "k", minimum=1, maximum=len(library_vectors))
    out = np.empty((len(query_vectors), k), dtype=np.asarray(library_labels).dtype)
    lib = np.ascontiguousarray(library_vectors, dtype=np.float32)
    for start in range(0, len(query_vectors), batch):
        sim = query_vectors[start:start + batch] @ lib.T
        idx = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        out[start:start + batch] = np.asarray(library_labels)[idx]
    return out


def class_retrieval(waveforms: Any, library: Any, library_labels: Any, truth: Any, k: int = 30,
                    positive: int = 1) -> np.ndarray:
    """Whether each shot's ``k`` matches agree with its truth class (crevassed = ``positive`` or not).

    The shot is called crevassed when more than half of its ``k`` matches
    are; it agrees when that call equals ``truth == positive``.
    """
    q = matching_vectors(waveforms)
    lib = matching_vectors(library)
    labels = knn_labels(q, lib, np.asarray(library_labels), k=k)
    p = (labels == positive).mean(axis=1)
    return (p > 0.5) == (np.asarray(truth) == positive)


# Partners of the denoiser in :func:`blend_with_classical`, by estimated peak SNR (below / at or above
# _BLEND_SNR): (Gaussian sigma in samples, noise floor in sd, weight of the network's root).  The network
# and a noise-floored matched filter err on different shots, so their mean in the matching space retrieves
# better than either (benchmark: mixed SNR +5 points over the network alone); at high SNR a sharper filter
# with a lower floor keeps more of the crevasse tail.  Filters and weights chosen on tiles of their own
# (seed 5), not on the benchmark's held-out tiles.
_BLEND_SNR = 15.0
_BLEND = {"low": (5.0, 3.0), "high": (2.0, 1.5)}
# The network's weight (low / high SNR) by how it was trained: networks trained with the neighbourhood term
# need the filter less (weights re-chosen on validation tiles, seed 6: 0.6 / 0.6 was within 0.1 point of the
# best SNR >= 20 retrieval for each of four such networks; a network without the term is no better with them).
BLEND_WEIGHTS = {"plain": (0.4, 0.2), "neighbour": (0.6, 0.6)}
# "floor": the mean of the roots; "max": that mean, but never below the network's own root (the floor drops a
# crevasse's weak late tail, which on the demo scene carries the class); "none": the network alone.
BLEND_MODES = ("floor", "max", "none")


def _blend_mode(value: Any, name: str = "blend") -> str:
    """A blend mode from a mode name or a bool (True: "floor", False: "none")."""
    if isinstance(value, bool):
        return "floor" if value else "none"
    if isinstance(value, str) and value in BLEND_MODES:
        return value
    raise CrevkitValueError(f"{name} must be one of {BLEND_MODES} or True/False, got {value!r}")


def blend_with_classical(denoised: Any, noisy: Any, mode: str = "floor",
                         network_weights: tuple[float, float] | None = None) -> np.ndarray:
    """Mix the network's output with a noise-floored matched filter of the same shots, in the matching space.

    For each shot a classical estimate (background removed, Gaussian filter,
    samples under a noise floor dropped; filter width and floor chosen by the
    estimated SNR, see ``_BLEND``) is moved so that its thresholded centroid
    lands on the denoised one's, and the unit-L2 square roots are averaged
    with the network weighted ``w``: ``root = w · r_net + (1 − w) · r_classical``,
    returned as ``root² / Σ root²``.  The result keeps the denoised
    waveform's frame (its de-shift).  Shots whose classical estimate is empty
    keep the network's output.  :meth:`Denoiser.transform` applies this
    according to its ``blend`` mode ("floor" by default).

    Parameters
    ----------
    denoised : array_like, shape (n, n_samples)
        Unit-sum network outputs.
    noisy : array_like, shape (n, n_samples)
        The shots they came from (any scale and offset).
    mode : {"floor", "max", "none"}
        "floor": the mean of the roots above; "max": ``max(root, r_net)`` per
        sample, so that samples the floor dropped keep the network's root
        (a crevasse's weak late tail; benchmark tiles: 2.5 points of SNR ≥ 20
        retrieval worse than "floor", demo scene: shot AUC +0.03 to +0.05);
        "none": ``denoised`` unchanged (rescaled to unit sum).
    network_weights : (float, float), optional
        The network's weight ``w`` below / at or above the SNR switch, in
        [0, 1].  Pass the model's :attr:`Denoiser.blend_weights_`; default:
        those of a network trained with the neighbourhood term (the
        :class:`Denoiser` default), ``BLEND_WEIGHTS["neighbour"]``.

    Returns
    -------
    ndarray of float32, shape (n, n_samples), unit sum.
    """
    den = as_float32_array(denoised, "denoised", ndim=2, allow_nan=False)
    x = as_float32_array(noisy, "noisy", ndim=2, allow_nan=False)
    mode = _blend_mode(mode, "mode")
    if den.shape != x.shape:
        raise CrevkitValueError(f"denoised {den.shape} and noisy {x.shape} must have the same shape")
    weights = _network_weights(network_weights)
    with torch.inference_mode():
        return _blend_torch(torch.from_numpy(den), torch.from_numpy(x), mode, weights).numpy()


def _network_weights(value: Any) -> tuple[float, float]:
    if value is None:
        return BLEND_WEIGHTS["neighbour"]
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise CrevkitValueError(f"network_weights must be (low, high), got {value!r}") from None
    if not (0.0 <= low <= 1.0 and 0.0 <= high <= 1.0):
        raise CrevkitValueError(f"network_weights must lie in [0, 1], got {value!r}")
    return low, high


def _gaussian_kernel(sigma: float, device: torch.device) -> torch.Tensor:
    half = int(math.ceil(4.0 * sigma))
    k = torch.exp(-0.5 * (torch.arange(-half, half + 1, dtype=torch.float32, device=device) / sigma) ** 2)
    return (k / k.sum())[None, None, :]


def _centroid_torch(w: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Torch twin of :func:`thresholded_centroid` (rows without a positive sample: NaN)."""
    peak = w.amax(dim=1, keepdim=True)
    wm = torch.where((w >= threshold * peak) & (w > 0), w, torch.zeros_like(w))
    total = wm.sum(dim=1)
    t = torch.arange(w.shape[1], device=w.device, dtype=w.dtype)
    return torch.where(total > 0, (wm * t).sum(dim=1) / total.clamp_min(1e-30), torch.full_like(total, math.nan))


def _blend_torch(den: torch.Tensor, noisy: torch.Tensor, mode: str = "floor",
                 network_weights: tuple[float, float] = BLEND_WEIGHTS["neighbour"]) -> torch.Tensor:
    """:func:`blend_with_classical` on tensors (one pass, vectorized: it must not slow inference down)."""
    if mode == "none":
        return den / den.sum(dim=1, keepdim=True).clamp_min(1e-30)
    x = InceptionAutoencoder.normalize_input(noisy)  # peak 1, so the peak SNR is 1 / sd
    sd = GatedInceptionUNet.noise_sd(x)
    high = (1.0 / sd) >= _BLEND_SNR
    part = torch.zeros_like(x)
    weight = torch.ones_like(sd)
    for key, rows, w in (("low", ~high, network_weights[0]), ("high", high, network_weights[1])):
        sigma, floor = _BLEND[key]
        k = _gaussian_kernel(sigma, x.device)
        sm = nn.functional.conv1d(x[:, None, :], k, padding=k.shape[-1] // 2)[:, 0]
        level = floor * float(k.square().sum().sqrt()) * sd[:, None]  # noise sd after the filter
        sm = torch.where(sm >= level, sm, torch.zeros_like(sm))
        part = torch.where(rows[:, None], sm, part)
        weight = torch.where(rows, torch.full_like(weight, w), weight)
    c_den, c_part = _centroid_torch(den), _centroid_torch(part)
    ok = torch.isfinite(c_den) & torch.isfinite(c_part)
    part = _shift_torch(part, torch.where(ok, c_den - c_part, torch.zeros_like(c_den)))
    weight = torch.where(ok, weight, torch.ones_like(weight))[:, None]

    def root(w: torch.Tensor) -> torch.Tensor:
        r = w.clamp_min(0.0).sqrt()
        return r / r.norm(dim=1, keepdim=True).clamp_min(1e-30)

    r_net = root(den)
    r = weight * r_net + (1.0 - weight) * root(part)
    if mode == "max":
        r = torch.maximum(r, r_net)
    out = r * r
    return out / out.sum(dim=1, keepdim=True).clamp_min(1e-30)


def noise_model_fingerprint(noise_model: Any, length: int = 544) -> str:
    """A SHA-256 that identifies a noise model: its own hash if it has one, else a hash of fixed draws."""
    for attr in ("fingerprint", "content_hash", "sha256"):
        value = getattr(noise_model, attr, None)
        if value is not None:
            value = value() if callable(value) else value
            if isinstance(value, str) and value:
                return value
    rng = np.random.default_rng(20240601)
    scales, shifts, noise = noise_model.sample(64, length, rng)
    h = hashlib.sha256(type(noise_model).__qualname__.encode())
    for arr in (scales, shifts, noise):
        h.update(np.ascontiguousarray(arr, dtype=np.float32).tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------------
# Torch: augmentation, stream, model
# --------------------------------------------------------------------------------------------------

def _shift_torch(w: torch.Tensor, shifts: torch.Tensor) -> torch.Tensor:
    """Torch twin of :func:`shift_waveforms` (runs on ``w``'s device)."""
    n, length = w.shape
    src = torch.arange(length, device=w.device, dtype=torch.float32)[None, :] - shifts[:, None]
    lo = torch.floor(src)
    frac = src - lo
    lo = lo.long()
    hi = lo + 1
    v_lo = torch.gather(w, 1, lo.clamp(0, length - 1)) * ((lo >= 0) & (lo < length))
    v_hi = torch.gather(w, 1, hi.clamp(0, length - 1)) * ((hi >= 0) & (hi < length))
    return (1.0 - frac) * v_lo + frac * v_hi


def _pad_records(noisy: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Cut each row after ``lengths[i]`` samples and fill the rest with the median of what is left.

    The torch twin of how the pipeline feeds short records to the denoiser
    (``crevkit.pipeline.stages._recorded_rows``: NaN padding replaced by
    ``np.nanmedian`` of the recorded samples; the median of an even count is
    the mean of the two middle values, as NumPy's).
    """
    n, m = noisy.shape
    recorded = torch.arange(m, device=noisy.device)[None, :] < lengths[:, None]
    if bool(recorded.all()):
        return noisy
    ordered = torch.where(recorded, noisy, torch.full_like(noisy, math.inf)).sort(dim=1).values
    lo, hi = ((lengths - 1) // 2)[:, None], (lengths // 2)[:, None]
    median = 0.5 * (ordered.gather(1, lo) + ordered.gather(1, hi))
    return torch.where(recorded, noisy, median)


class NoisyWaveformStream(IterableDataset):
    """Endless batches ``(noisy, clean)`` from a clean library and a noise model.

    Every batch draws ``batch_size`` library rows and, for each of them, a
    fresh ``(scale, shift, noise)`` from ``noise_model.sample`` (plus an
    optional uniform background offset in ``background``, in the noise's
    units): ``noisy = scale · shift(clean, shift) + noise + offset``.  When
    ``record_lengths`` is set and the noise model knows its source's record
    lengths (:meth:`crevkit.noise.NoiseModel.sample_record_lengths`), each
    row is then cut to a drawn length and padded with its recorded median,
    as the pipeline pads short records (GLAS: 200 of 544 samples), so the
    network learns to carry a return's tail past the end of the record.
    Deterministic for a given ``seed`` (and DataLoader worker id).  The
    gather, shift and sum run on ``device`` (the library is moved there once).
    """

    def __init__(self, library: np.ndarray, noise_model: Any, batch_size: int, seed: int,
                 device: str | torch.device = "cpu", background: tuple[float, float] = (0.0, 0.0),
                 record_lengths: bool = True):
        super().__init__()
        self.record_lengths = bool(record_lengths) and bool(getattr(noise_model, "has_record_lengths", False))
        self.device = torch.device(device)
        self.library = torch.as_tensor(np.ascontiguousarray(library, dtype=np.float32), device=self.device)
        self.noise_model = noise_model
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.background = (float(background[0]), float(background[1]))

    def batch(self, rng: np.random.Generator, rows: np.ndarray | None = None, *,
              with_shifts: bool = False, snr: tuple[float, float] | None = None) -> tuple[torch.Tensor, ...]:
        """One batch drawn with ``rng`` (library rows drawn at random, or the given ``rows``).

        Returns ``(noisy, clean)``, or ``(noisy, clean, shifts)`` with ``with_shifts``
        (the drawn shifts in samples, for the denoiser's auxiliary shift loss).
        """
        n, length = self.library.shape
        idx = rng.integers(0, n, size=self.batch_size) if rows is None else np.asarray(rows)
        b = len(idx)
        scales, shifts, noise = self.noise_model.sample(b, length, rng)
        offset = rng.uniform(*self.background, size=b) if self.background[1] > self.background[0] else np.zeros(b)
        dev = self.device
        clean = self.library[torch.as_tensor(idx, device=dev)]
        t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float32), device=dev)  # noqa: E731
        moved = _shift_torch(clean, t(shifts))
        noise_t = t(noise)
        scale_t = t(scales)
        if snr is not None:  # override the scale: peak SNR log-uniform in ``snr`` (peak / noise sd)
            target = t(np.exp(rng.uniform(math.log(snr[0]), math.log(snr[1]), size=b)))
            scale_t = target * noise_t.std(dim=1) / moved.amax(dim=1).clamp_min(1e-12)
        noisy = scale_t[:, None] * moved + noise_t + t(offset)[:, None]
        if self.record_lengths:  # drawn last: models without record lengths keep their draws
            lengths = torch.as_tensor(self.noise_model.sample_record_lengths(b, rng), device=dev)
            noisy = _pad_records(noisy, lengths)
        return (noisy, clean, t(shifts)) if with_shifts else (noisy, clean)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        info = torch.utils.data.get_worker_info()
        rng = np.random.default_rng([self.seed, 0 if info is None else info.id + 1])
        while True:
            yield self.batch(rng)


def _unit_library(lib: np.ndarray) -> np.ndarray:
    """Library rows rescaled to unit sum; rows without positive energy are refused (named)."""
    sums = lib.sum(axis=1, dtype=np.float64)
    if not (sums > 0).all():
        rows = np.flatnonzero(~(sums > 0))[:10].tolist()
        raise CrevkitValueError(f"library_waveforms: rows {rows} have no positive energy")
    return (lib / sums[:, None]).astype(np.float32)


# Peak SNRs of the noisy library copies that denoised shots are matched against beside the clean library
# (:func:`noisy_library_copies`): chosen on the benchmark's validation tiles (seed 6) over 14/30/70, 30 (×1 and ×3),
# 8/15/30/60/120, log-uniform 8-120 or 3-100 (×5) and the noise model's own scales (×3, ×5); SNR >= 20 retrieval +1.0
# point there and on the held-out tiles, for two networks.
COPY_SNRS = (14.0, 30.0, 70.0)


def noisy_library_copies(library_waveforms: Any, noise_model: Any, snrs: Any = COPY_SNRS, *, seed: int = 0,
                         record_lengths: bool = True) -> np.ndarray:
    """Noisy copies of library waveforms that look recorded, one per library row and peak SNR.

    Denoised as the shots are (:meth:`Denoiser.transform`, the same blend),
    the copies let a denoised shot be matched against what the denoiser makes
    of each library tile as well as against the tile's clean waveform: like
    with like.  A copy is the row shifted by a shift and summed with a noise
    vector drawn from ``noise_model``, scaled so that its peak is ``snr``
    times the noise's standard deviation, and (``record_lengths``) cut to a
    drawn record length and padded as the pipeline pads short records: the
    draws of :class:`NoisyWaveformStream` with the SNR fixed.

    Parameters
    ----------
    library_waveforms : array_like, shape (n, n_samples)
        Library waveforms (any positive scale; rows with no positive energy
        are refused).
    noise_model : object
        As for :meth:`Denoiser.fit` (:class:`crevkit.noise.NoiseModel`).
    snrs : sequence of float
        Peak SNR of each set of copies (default :data:`COPY_SNRS`).
    seed : int
        Seeds the draws: the same library, noise model, SNRs and seed give the
        same copies.  Callers that stream a large library in blocks pass a
        seed per block.
    record_lengths : bool
        Cut to record lengths where the noise model has them (as the
        denoiser's training does).

    Returns
    -------
    ndarray of float32, shape (len(snrs) * n, n_samples)
        Row ``c * n + i`` is library row ``i`` at ``snrs[c]``.
    """
    unit = _unit_library(as_float32_array(library_waveforms, "library_waveforms", ndim=2, allow_nan=False))
    levels = [check_positive(v, "snrs") for v in np.atleast_1d(np.asarray(snrs, dtype=object)).ravel()]
    if not levels:
        raise CrevkitValueError("snrs must name at least one peak SNR")
    if not callable(getattr(noise_model, "sample", None)):
        raise CrevkitTypeError("noise_model must have a sample(n, length, rng) method (crevkit.noise.NoiseModel)")
    seed = check_int(seed, "seed", minimum=0)
    stream = NoisyWaveformStream(unit, noise_model, len(unit), seed, "cpu", record_lengths=record_lengths)
    rows = np.arange(len(unit))
    with torch.inference_mode():
        return np.concatenate([stream.batch(np.random.default_rng([seed, c]), rows=rows, snr=(v, v))[0].numpy()
                               for c, v in enumerate(levels)])


class _Inception(nn.Module):
    """Residual Inception block: a local (k=5, covers the 1/3/5 scales) and a wide (k=3, dilation 4)
    branch in parallel, mixed back by a 1×1 conv.  Two fused branches instead of four thin ones:
    on the CPU each convolution call costs about the same whatever its width, so fewer, wider calls
    are several times faster in training for the same receptive fields."""

    def __init__(self, ch: int):
        super().__init__()
        b = max(ch // 2, 4)
        self.local = nn.Conv1d(ch, b, 5, padding=2)
        self.wide = nn.Conv1d(ch, b, 3, padding=4, dilation=4)
        self.norm = nn.BatchNorm1d(2 * b)
        self.mix = nn.Conv1d(2 * b, ch, 1)
        self.act = nn.LeakyReLU(0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.local(x), self.wide(x)], dim=1)
        return x + self.mix(self.act(self.norm(y)))


class InceptionAutoencoder(nn.Module):
    """1-D Inception autoencoder: noisy shot (B, L) -> clean unit-sum waveform (B, L) and its square root.

    Encoder: a stride-4 stem 1→c/2 (L → L/4), Inception blocks at L/4, L/8
    and L/16 with stride-2 convs between them (c channels), a 1×1 squeeze to
    c/2; dense bottleneck (c/2 · L/16 → ``bottleneck`` → c/2 · L/16);
    decoder: Inception at L/16 and L/8 and stride-2 transposed convs back to
    L with c → c/2 → c/4 → 1 channels.
    ``L`` is padded to a multiple of 16 internally.
    """

    def __init__(self, n_samples: int = 544, width: int = 32, bottleneck: int = 96):
        super().__init__()
        self.n_samples = n_samples
        self.padded = int(math.ceil(n_samples / _DOWNSAMPLE) * _DOWNSAMPLE)
        c = width
        q, h = max(c // 4, 4), max(c // 2, 4)
        self.coarse = self.padded // _DOWNSAMPLE
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731  (leaky: plain ReLU let thin decoder layers die)
        def block(conv: nn.Module, out_ch: int) -> list[nn.Module]:
            # BatchNorm keeps the scale-free output (a / ||a||) from drifting into a constant
            return [conv, nn.BatchNorm1d(out_ch), act()]

        self.encoder = nn.Sequential(
            *block(nn.Conv1d(1, h, 8, stride=4, padding=2), h),
            _Inception(h),
            *block(nn.Conv1d(h, c, 3, stride=2, padding=1), c),
            _Inception(c),
            *block(nn.Conv1d(c, c, 3, stride=2, padding=1), c),
            _Inception(c),
            *block(nn.Conv1d(c, h, 1), h),
        )
        self.squeeze = h
        self.bottleneck = nn.Sequential(
            nn.Flatten(), nn.Linear(h * self.coarse, bottleneck), nn.BatchNorm1d(bottleneck), act(),
            nn.Linear(bottleneck, h * self.coarse), nn.BatchNorm1d(h * self.coarse), act())
        self.decoder = nn.Sequential(
            *block(nn.Conv1d(h, c, 3, padding=1), c),
            _Inception(c),
            *block(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1), c),
            _Inception(c),
            *block(nn.ConvTranspose1d(c, h, 4, stride=2, padding=1), h),
            *block(nn.ConvTranspose1d(h, q, 4, stride=2, padding=1), q),
            nn.ConvTranspose1d(q, 1, 4, stride=2, padding=1),
        )

    @staticmethod
    def normalize_input(x: torch.Tensor) -> torch.Tensor:
        """Remove the background (median) and the scale (maximum) of each shot."""
        x = x - x.median(dim=1, keepdim=True).values
        return x / x.amax(dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(waveform, root)``: unit-sum waveforms and their unit-L2 square roots, both (B, L)."""
        x = self.normalize_input(x)
        if self.padded != self.n_samples:
            x = nn.functional.pad(x, (0, self.padded - self.n_samples))
        z = self.encoder(x[:, None, :])
        z = self.bottleneck(z).view(-1, self.squeeze, self.coarse)
        a = self.decoder(z)[:, 0, : self.n_samples].abs()
        root = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return root * root, root


class GatedInceptionUNet(nn.Module):
    """Pre-aligned Inception U-Net with a gated input skip: noisy shot (B, L) -> (waveform, root).

    Why not the plain autoencoder: it had to carry every waveform through a
    dense code to undo the shift, and at high SNR that smoothed away the weak
    late-tail detail crevasses leave (retrieval 12 points under the clean
    ceiling at SNR >= 20).  Here the shift is taken out first, so skips are
    allowed:

    1. *Pre-alignment* (no gradient): the normalized shot is smoothed
       (Gaussian, σ = 3 samples) and moved by a whole number of samples so the
       centroid of its part above 30 % of the peak lands at ``align_position``.
    2. *Noise level*: a robust estimate (median absolute first difference) of
       the noise relative to the peak enters as a constant second input
       channel, so the network knows how far to trust the input.
    3. The encoder/decoder of :class:`InceptionAutoencoder` (stride-4 stem,
       residual Inception blocks, dense bottleneck) plus additive skips at
       L/4, L/8 and L/16, and a gated full-resolution skip: the last layer
       gives a residual ``r`` and a gate ``g``;
       ``root = |r + sigmoid(g) · sqrt(max(x, 0))|`` lets a clean input pass
       through where the gate opens (its support) and shuts out the noise
       floor elsewhere (the square root magnifies it).
    4. *De-shift*: a small head on the code predicts where the library frame
       lies (``t``, samples); the root is moved back by ``t`` (linear
       interpolation, differentiable), so the output keeps the library's
       leading edge.  Training adds a loss on ``t`` against the drawn shift.
    """

    def __init__(self, n_samples: int = 544, width: int = 24, bottleneck: int = 96,
                 align_position: float | None = None):
        super().__init__()
        self.n_samples = n_samples
        self.padded = int(math.ceil(n_samples / _DOWNSAMPLE) * _DOWNSAMPLE)
        # room for the leading part before the centroid, the long tail after it
        self.align_position = float(align_position if align_position is not None else round(0.18 * n_samples))
        c = width
        q, h = max(c // 4, 4), max(c // 2, 4)
        self.coarse = self.padded // _DOWNSAMPLE
        act = lambda: nn.LeakyReLU(0.1)  # noqa: E731

        def block(conv: nn.Module, out_ch: int) -> list[nn.Module]:
            return [conv, nn.BatchNorm1d(out_ch), act()]

        self.stem = nn.Sequential(*block(nn.Conv1d(3, h, 8, stride=4, padding=2), h), _Inception(h))
        self.down1 = nn.Sequential(*block(nn.Conv1d(h, c, 3, stride=2, padding=1), c), _Inception(c))
        self.down2 = nn.Sequential(*block(nn.Conv1d(c, c, 3, stride=2, padding=1), c), _Inception(c))
        self.squeeze = nn.Sequential(*block(nn.Conv1d(c, h, 1), h))
        self.bottleneck = nn.Sequential(
            nn.Flatten(), nn.Linear(h * self.coarse, bottleneck), nn.BatchNorm1d(bottleneck), act(),
            nn.Linear(bottleneck, h * self.coarse), nn.BatchNorm1d(h * self.coarse), act())
        self.shift_head = nn.Sequential(nn.Flatten(), nn.Linear(h * self.coarse, 32), act(), nn.Linear(32, 1))
        self.up0 = nn.Sequential(*block(nn.Conv1d(h, c, 3, padding=1), c))
        self.dec0 = _Inception(c)
        self.up1 = nn.Sequential(*block(nn.ConvTranspose1d(c, c, 4, stride=2, padding=1), c))
        self.dec1 = _Inception(c)
        self.up2 = nn.Sequential(*block(nn.ConvTranspose1d(c, h, 4, stride=2, padding=1), h))
        self.up3 = nn.Sequential(*block(nn.ConvTranspose1d(h, q, 4, stride=2, padding=1), q))
        self.out = nn.ConvTranspose1d(q, 2, 4, stride=2, padding=1)
        kernel = torch.exp(-0.5 * (torch.arange(-9, 10, dtype=torch.float32) / 3.0) ** 2)
        self.register_buffer("smooth_kernel", (kernel / kernel.sum())[None, None, :], persistent=False)
        fine = torch.exp(-0.5 * (torch.arange(-5, 6, dtype=torch.float32) / _SKIP_SIGMA) ** 2)
        fine = fine / fine.sum()
        self.register_buffer("skip_kernel", fine[None, None, :], persistent=False)
        self.skip_gain = float(fine.square().sum().sqrt())  # noise sd after smoothing / before
        # the centroid offset between a noisy shot and the library frame is ~ align_position - 25 samples
        self.shift_prior = (self.align_position - 25.0, 20.0)

    normalize_input = staticmethod(InceptionAutoencoder.normalize_input)

    @torch.no_grad()
    def prealign_shift(self, x: torch.Tensor) -> torch.Tensor:
        """Whole-sample shifts that put each (normalized) shot's smoothed 30 % centroid at ``align_position``."""
        sm = nn.functional.conv1d(x[:, None, :], self.smooth_kernel, padding=9)[:, 0]
        peak = sm.amax(dim=1, keepdim=True)
        w = (sm - 0.3 * peak).clamp_min(0.0)
        t = torch.arange(x.shape[1], device=x.device, dtype=x.dtype)
        pos = (w * t).sum(dim=1) / w.sum(dim=1).clamp_min(1e-12)
        pos = torch.where(w.sum(dim=1) > 0, pos, torch.full_like(pos, self.align_position))
        return torch.round(self.align_position - pos)

    @staticmethod
    def noise_sd(x: torch.Tensor) -> torch.Tensor:
        """Robust noise sd of each (normalized, peak 1) shot from its first differences, in [1e-4, 1]."""
        sd = (x[:, 1:] - x[:, :-1]).abs().median(dim=1).values / (0.6745 * math.sqrt(2.0))
        return sd.clamp(1e-4, 1.0)

    def parts(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``waveform``, ``root`` and ``shift``: the estimated total delay of the shot's content in the aligned
        frame relative to the library frame (drawn shift + pre-alignment), in samples."""
        x = self.normalize_input(x)
        s0 = self.prealign_shift(x)
        xa = _shift_torch(x, s0)
        sd = self.noise_sd(x)
        # the skip: lightly smoothed (optionally soft-thresholded above the noise floor); the gate decides
        # where to trust it, the network sees it and the noise level as input channels too
        sm = nn.functional.conv1d(xa[:, None, :], self.skip_kernel, padding=5)[:, 0]
        skip = (sm - _SKIP_THRESHOLD * self.skip_gain * sd[:, None]).clamp_min(0.0).sqrt()
        if self.padded != self.n_samples:
            pad = (0, self.padded - self.n_samples)
            xa, skip = nn.functional.pad(xa, pad), nn.functional.pad(skip, pad)
        level = torch.log10(sd)[:, None] / 2.0 + 1.0  # noise level as a channel: 1 at sd = peak, -1 at 1e-4
        inp = torch.stack([xa, skip, level.expand_as(xa)], dim=1)
        e1 = self.stem(inp)
        e2 = self.down1(e1)
        e3 = self.down2(e2)
        z = self.squeeze(e3)
        d = self.bottleneck(z).view(-1, z.shape[1], self.coarse)
        d = self.dec0(self.up0(d) + e3)
        d = self.dec1(self.up1(d) + e2)
        d = self.up3(self.up2(d) + e1)
        rg = self.out(d)[:, :, : self.n_samples]
        a = (rg[:, 0] + torch.sigmoid(rg[:, 1]) * skip[:, : self.n_samples]).abs()
        t = self.shift_prior[0] + self.shift_prior[1] * self.shift_head(z)[:, 0]
        a = _shift_torch(a, -t)  # back into the library frame
        root = a / a.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return {"waveform": root * root, "root": root, "shift": t}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(waveform, root)``: unit-sum waveforms and their unit-L2 square roots, both (B, L)."""
        p = self.parts(x)
        return p["waveform"], p["root"]


def _loss(kind: str, out: torch.Tensor, root: torch.Tensor, clean: torch.Tensor,
          clean_root: torch.Tensor) -> torch.Tensor:
    sq = ((root - clean_root) ** 2).sum(dim=1)
    if kind == "sqrt":
        return sq.mean()
    rel = ((out - clean) ** 2).sum(dim=1) / (clean * clean).sum(dim=1).clamp_min(1e-12)
    if kind == "mse":
        return rel.mean()
    return (sq + 0.5 * rel).mean()


def _info_nce(root: torch.Tensor, clean_root: torch.Tensor, bank: torch.Tensor | None,
              temperature: float) -> torch.Tensor:
    """Label-free InfoNCE: each output root against the batch's clean roots (and a bank of extra clean
    roots as negatives), its own target the positive.  Other targets that are (nearly) the same
    waveform as the positive (duplicate draws) are masked out."""
    t = clean_root / clean_root.norm(dim=1, keepdim=True).clamp_min(1e-12)
    logits = root @ t.T
    same = (t @ t.T) > 1.0 - 1e-6
    eye = torch.eye(len(root), dtype=torch.bool, device=root.device)
    logits = logits.masked_fill(same & ~eye, -1e4)
    if bank is not None and len(bank):
        logits = torch.cat([logits, root @ bank.T], dim=1)
    target = torch.arange(len(root), device=root.device)
    return nn.functional.cross_entropy(logits / temperature, target)


def _matching_roots(waveforms: torch.Tensor, roots: torch.Tensor | None = None,
                    threshold: float = 0.1) -> torch.Tensor:
    """Torch twin of :func:`matching_vectors` for non-negative rows, differentiable (also through the centroid).

    With ``roots`` (the rows' square roots) the roots are moved instead of
    taking the root of the moved rows: the same vector up to the
    interpolation, without the square root's infinite gradient at zero.
    """
    w = waveforms.clamp_min(0.0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(1e-30)
    peak = w.amax(dim=1, keepdim=True)
    wm = w * ((w >= threshold * peak) & (w > 0))
    t = torch.arange(w.shape[1], device=w.device, dtype=w.dtype)
    c = (wm * t).sum(dim=1) / wm.sum(dim=1).clamp_min(1e-30)
    if roots is None:
        v = _shift_torch(w, MATCH_POSITION - c).clamp_min(0.0).sqrt()
    else:
        v = _shift_torch(roots, MATCH_POSITION - c)
    return v / v.norm(dim=1, keepdim=True).clamp_min(1e-12)


def _neighbour_kl(out: torch.Tensor, root: torch.Tensor, clean: torch.Tensor, bank: torch.Tensor,
                  temperature: float) -> torch.Tensor:
    """Reverse KL divergence ``KL(q || p)`` between soft library neighbourhoods of the output and its target.

    ``q`` and ``p`` are softmaxes over ``bank`` (library matching vectors) of
    the matching-space similarities of the output and of the clean target,
    over ``temperature``.  Reverse (mode-seeking): the output is pushed into
    *one* neighbourhood its target could have, where the squared loss
    settles between several (a weak crevasse tail half kept).  Bank rows that
    are the target itself are masked: a held-out shot never finds its own tile.
    """
    q = _matching_roots(out, root)
    with torch.no_grad():
        target_sim = _matching_roots(clean) @ bank.T
        self_hit = target_sim > 1.0 - 1e-6
        log_p = torch.log_softmax((target_sim / temperature).masked_fill(self_hit, -1e4), dim=1)
    log_q = torch.log_softmax(((q @ bank.T) / temperature).masked_fill(self_hit, -1e4), dim=1)
    return (log_q.exp() * (log_q - log_p)).sum(dim=1).mean()


def _quarter(root: torch.Tensor, clean_root: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Squared distance between unit-L2 fourth roots of the waveforms: weak tails weigh more than in the
    square-root space (a sample at 1 % of the peak has 10 % of the peak's root, 32 % of its fourth root)."""
    a = (root + eps).sqrt()
    b = (clean_root + eps).sqrt()
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    return ((a - b) ** 2).sum(dim=1).mean()


def _cramer(out: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """Cramér distance (mean squared CDF difference, per sample) between unit-sum waveforms."""
    return ((out.cumsum(dim=1) - clean.cumsum(dim=1)) ** 2).sum(dim=1).mean()


# --------------------------------------------------------------------------------------------------
# Estimator
# --------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _torch_threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def _deterministic() -> Iterator[None]:
    before = torch.are_deterministic_algorithms_enabled()
    warn_before = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_before)


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise CrevkitValueError(f"device: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise CrevkitValueError("device: CUDA was requested but torch sees no CUDA device")
    return dev


def _weights_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class Denoiser:
    """Estimator-style wrapper: ``Denoiser(**hyperparams).fit(library, noise_model).transform(shots)``.

    Parameters
    ----------
    n_samples : int
        Waveform length (544 for GLAS long waveforms).
    lead : float
        Leading-edge position of the library waveforms (samples); recorded in the
        config, the model learns whatever position the library has.
    width : int
        Channels of the widest layers (the stem has ``width // 2``).
    bottleneck : int
        Size of the dense code.
    architecture : {"gated-unet", "autoencoder"}
        :class:`GatedInceptionUNet` (default: pre-aligned, skips, a gated
        input skip and a de-shift head) or the plain
        :class:`InceptionAutoencoder` (everything through the dense code).
    shift_weight : float
        Weight of the U-Net's auxiliary de-shift loss (smooth L1, samples).
    blend : {"floor", "max", "none"} or bool
        How the network's output is mixed with a noise-floored matched filter
        by estimated SNR at inference (:func:`blend_with_classical`; default
        "floor"; True is "floor", False "none").
    loss : {"sqrt", "mse", "mixed"}
        Squared distance between unit-L2 square roots (the matching space;
        default), relative waveform MSE, or their sum (MSE weighted 0.5).
    contrastive_weight : float
        Weight ``λ`` of a label-free InfoNCE term added to the loss (default
        0: off): each output's unit-L2 root is scored against the batch's
        clean roots (and ``contrastive_bank`` more), ``logits = r_i · R_j / τ``,
        cross-entropy toward its own target.  No class labels are used.
    contrastive_temperature : float
        ``τ`` of the InfoNCE term (> 0; default 0.05).
    contrastive_bank : int
        Extra clean library roots drawn at random every step as negatives
        (default 0: only the batch).
    neighbour_weight : float
        Weight of the label-free neighbourhood term (default 0.004; 0: off):
        the reverse KL divergence ``KL(q ‖ p)`` between softmaxes, over a
        bank of library matching vectors, of the matching-space similarities
        of the output (``q``) and of its clean target (``p``), the target
        itself masked (:func:`_neighbour_kl`).  Mode-seeking: the output
        commits to one library neighbourhood its target could have instead of
        the squared loss's average of several.  Benchmark: SNR >= 20 retrieval
        +1.3 points on the validation tiles, +0.9 on the held-out ones, mixed
        +1.9 on both (with 1000 steps instead of 500).
    neighbour_temperature : float
        Softmax temperature (> 0; default 0.0005; the bank's similarities
        to a waveform run from ~0.9 to ~0.999, so this keeps a handful of
        rows).
    neighbour_bank : int
        Library rows drawn at random every step as the bank (default 4096).
    tail_weight : float
        Weight of a term on the unit-L2 fourth roots (weak late tails weigh
        more than in the square-root space; default 0: off).
    cdf_weight : float
        Weight of a Cramér term (squared difference of the cumulative unit-sum
        waveforms; shift-tolerant, tail-sensitive; default 0: off).
    finetune_steps : int
        Steps of a second, high-SNR phase after ``n_steps`` (its own one-cycle
        schedule at 0.3 × ``learning_rate``; default 0: none).
    finetune_snr : (float, float)
        Peak-SNR range (log-uniform) drawn in that phase; it replaces the
        noise model's scales (default (15, 100)).
    n_steps, batch_size, learning_rate, weight_decay : training schedule
        AdamW with a one-cycle learning-rate schedule; ``n_steps × batch_size``
        noisy waveforms are drawn in all.
    background : (float, float)
        Uniform range of a constant offset added to every training shot (noise units).
    record_lengths : bool
        Cut training shots to record lengths drawn from the noise model and
        pad them as the pipeline pads short records (default True; only
        where the noise model has record lengths, i.e. was fitted to shots).
    seed : int
        Seeds the weights, the batch draws and the validation set: the same
        config, seed, library and noise model give the same weights on the CPU.
    validation_size, validation_every : int
        Held-out library rows (with fixed noise draws) and how often (steps) the
        validation loss is recorded in ``history_``.
    n_threads : int, optional
        Torch CPU threads during fit/transform (default: all usable cores).
        Prefer ``OMP_WAIT_POLICY=PASSIVE`` on shared machines.
    device : str
        "auto" (CUDA when available), "cpu", "cuda" or "cuda:N".

    Attributes
    ----------
    model_ : GatedInceptionUNet or InceptionAutoencoder
    n_parameters_ : int
    history_ : dict
        ``step``, ``seconds``, ``train_loss``, ``val_loss`` lists and ``train_seconds``.
    noise_model_hash_ : str
    """

    def __init__(self, **hyperparams: Any):
        unknown = sorted(set(hyperparams) - set(_DEFAULTS))
        if unknown:
            raise CrevkitTypeError(f"unknown Denoiser hyperparameter(s) {unknown}; valid: {sorted(_DEFAULTS)}")
        config = copy.deepcopy(_DEFAULTS)
        config.update(hyperparams)
        self.config = self._validated(config)
        self.model_: nn.Module | None = None
        self.history_: dict[str, Any] = {}
        self.noise_model_hash_: str | None = None

    # ---- configuration -------------------------------------------------------------------------
    @staticmethod
    def _validated(c: dict[str, Any]) -> dict[str, Any]:
        c["n_samples"] = check_int(c["n_samples"], "n_samples", minimum=16, maximum=1 << 16)
        c["lead"] = float(c["lead"])
        c["width"] = check_int(c["width"], "width", minimum=4, maximum=1024)
        c["bottleneck"] = check_int(c["bottleneck"], "bottleneck", minimum=1, maximum=1 << 14)
        if c["architecture"] not in _ARCHITECTURES:
            raise CrevkitValueError(f"architecture must be one of {_ARCHITECTURES}, got {c['architecture']!r}")
        c["blend"] = _blend_mode(c["blend"])
        c["shift_weight"] = float(c["shift_weight"])
        if not c["shift_weight"] >= 0.0:
            raise CrevkitValueError(f"shift_weight must be >= 0, got {c['shift_weight']!r}")
        if c["loss"] not in _LOSSES:
            raise CrevkitValueError(f"loss must be one of {_LOSSES}, got {c['loss']!r}")
        c["n_steps"] = check_int(c["n_steps"], "n_steps", minimum=1)
        for key in ("contrastive_weight", "cdf_weight", "tail_weight"):
            c[key] = float(c[key])
            if not (math.isfinite(c[key]) and c[key] >= 0.0):
                raise CrevkitValueError(f"{key} must be a finite number >= 0, got {c[key]!r}")
        c["contrastive_temperature"] = check_positive(c["contrastive_temperature"], "contrastive_temperature",
                                                      maximum=10.0)
        c["contrastive_bank"] = check_int(c["contrastive_bank"], "contrastive_bank", minimum=0, maximum=1 << 20)
        c["neighbour_weight"] = float(c["neighbour_weight"])
        if not (math.isfinite(c["neighbour_weight"]) and c["neighbour_weight"] >= 0.0):
            raise CrevkitValueError(f"neighbour_weight must be a finite number >= 0, got {c['neighbour_weight']!r}")
        c["neighbour_temperature"] = check_positive(c["neighbour_temperature"], "neighbour_temperature",
                                                    maximum=10.0)
        c["neighbour_bank"] = check_int(c["neighbour_bank"], "neighbour_bank", minimum=1, maximum=1 << 20)
        c["finetune_steps"] = check_int(c["finetune_steps"], "finetune_steps", minimum=0)
        try:
            fs = [float(v) for v in c["finetune_snr"]]
        except (TypeError, ValueError):
            raise CrevkitValueError(f"finetune_snr must be (low, high), got {c['finetune_snr']!r}") from None
        if len(fs) != 2 or not (0.0 < fs[0] <= fs[1] < math.inf):
            raise CrevkitValueError(f"finetune_snr must be (low, high) with 0 < low <= high, got {c['finetune_snr']!r}")
        c["finetune_snr"] = fs
        c["batch_size"] = check_int(c["batch_size"], "batch_size", minimum=1, maximum=1 << 20)
        c["learning_rate"] = check_positive(c["learning_rate"], "learning_rate", maximum=10.0)
        c["weight_decay"] = float(c["weight_decay"])
        bg = [float(v) for v in c["background"]]
        if len(bg) != 2 or bg[1] < bg[0]:
            raise CrevkitValueError(f"background must be (low, high) with low <= high, got {c['background']!r}")
        c["background"] = bg
        if not isinstance(c["record_lengths"], bool):
            raise CrevkitTypeError(f"record_lengths must be True or False, got {c['record_lengths']!r}")
        c["seed"] = check_int(c["seed"], "seed", minimum=0)
        c["validation_size"] = check_int(c["validation_size"], "validation_size", minimum=1)
        c["validation_every"] = check_int(c["validation_every"], "validation_every", minimum=1)
        if c["n_threads"] is not None:
            c["n_threads"] = check_int(c["n_threads"], "n_threads", minimum=0, maximum=1024)
        if not isinstance(c["device"], str):
            raise CrevkitTypeError(f"device must be a string, got {type(c['device']).__name__}")
        return c

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters (JSON-able)."""
        return copy.deepcopy(self.config)

    @property
    def blend_weights_(self) -> tuple[float, float]:
        """The network's weights in :func:`blend_with_classical` (low / high SNR) for how this model was trained."""
        return BLEND_WEIGHTS["neighbour" if self.config["neighbour_weight"] > 0 else "plain"]

    @property
    def n_parameters_(self) -> int:
        self._check_fitted()
        return sum(p.numel() for p in self.model_.parameters())

    def _check_fitted(self) -> None:
        if self.model_ is None:
            raise CrevkitValueError("this Denoiser is not fitted yet: call fit() or Denoiser.load()")

    def _build(self) -> nn.Module:
        cls = GatedInceptionUNet if self.config["architecture"] == "gated-unet" else InceptionAutoencoder
        return cls(self.config["n_samples"], self.config["width"], self.config["bottleneck"])

    # ---- training ------------------------------------------------------------------------------
    def fit(self, library_waveforms: Any, noise_model: Any, *, checkpoint: str | os.PathLike | None = None,
            checkpoint_every: int | None = None, progress: bool | None = None) -> "Denoiser":
        """Train on an endless noisy stream drawn from ``library_waveforms`` and ``noise_model``.

        Parameters
        ----------
        library_waveforms : array_like, shape (n, n_samples)
            Clean library waveforms (rescaled to unit sum here; rows with no
            positive energy are refused).
        noise_model : object
            Anything with ``sample(n, length, rng) -> (scales, shifts, noise)``
            (:class:`crevkit.noise.NoiseModel`).
        checkpoint : path, optional
            Where to save checkpoints (every ``checkpoint_every`` steps and at the
            end), atomically, keeping the previous one as ``<name>.prev``.
        progress : bool, optional
            Show a progress bar (default: when stderr is a terminal).

        Returns
        -------
        self
        """
        c = self.config
        lib = as_float32_array(library_waveforms, "library_waveforms", ndim=2, allow_nan=False)
        if lib.shape[1] != c["n_samples"]:
            raise CrevkitValueError(f"library_waveforms has {lib.shape[1]} samples per row, the config says "
                                    f"n_samples={c['n_samples']}")
        lib = _unit_library(lib)
        if len(lib) < 2:
            raise CrevkitValueError("library_waveforms needs at least 2 rows (one is held out for validation)")
        if not callable(getattr(noise_model, "sample", None)):
            raise CrevkitTypeError("noise_model must have a sample(n, length, rng) method (crevkit.noise.NoiseModel)")
        if checkpoint_every is not None:
            checkpoint_every = check_int(checkpoint_every, "checkpoint_every", minimum=1)

        device = _resolve_device(c["device"])
        n_threads = resolve_threads(c["n_threads"])
        rng = np.random.default_rng([c["seed"], 1])
        order = rng.permutation(len(lib))
        n_val = min(c["validation_size"], max(1, len(lib) // 10))
        val_rows, train_rows = order[:n_val], order[n_val:]
        self.noise_model_hash_ = noise_model_fingerprint(noise_model, c["n_samples"])

        with _torch_threads(n_threads), _deterministic(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(c["seed"])
            model = self._build().to(device)
            stream = NoisyWaveformStream(lib[train_rows], noise_model, c["batch_size"], c["seed"], device,
                                         tuple(c["background"]), c["record_lengths"])
            val_stream = NoisyWaveformStream(lib[val_rows], noise_model, len(val_rows), c["seed"] + 7919, device,
                                             tuple(c["background"]), c["record_lengths"])
            val_noisy, val_clean = val_stream.batch(np.random.default_rng([c["seed"], 2]),
                                                    rows=np.arange(len(val_rows)))
            val_root = val_clean.sqrt()
            opt = torch.optim.AdamW(model.parameters(), lr=c["learning_rate"], weight_decay=c["weight_decay"])
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=c["learning_rate"], total_steps=c["n_steps"],
                                                        pct_start=0.15)
            hist: dict[str, Any] = {"step": [], "seconds": [], "train_loss": [], "val_loss": []}
            self.model_ = model
            draw = np.random.default_rng([c["seed"], 0])  # the stream's own sequence (no DataLoader workers)
            shifted = c["architecture"] == "gated-unet"
            train_roots = stream.library.sqrt() if c["contrastive_bank"] else None
            train_match = None
            if c["neighbour_weight"] > 0:  # the training rows in the matching space, once
                with torch.no_grad():
                    train_match = torch.cat([_matching_roots(chunk) for chunk in stream.library.split(4096)])
            total_steps = c["n_steps"] + c["finetune_steps"]
            bar = progress_bar(range(1, total_steps + 1), desc="train denoiser", total=total_steps, unit="step",
                               disable=None if progress is None else not progress)
            start = time.perf_counter()
            running = 0.0
            for step in bar:
                model.train()
                finetune = step > c["n_steps"]
                if step == c["n_steps"] + 1:  # second phase: high SNR only, a short one-cycle of its own
                    for group in opt.param_groups:
                        group["lr"] = 0.3 * c["learning_rate"]
                    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.3 * c["learning_rate"],
                                                                total_steps=c["finetune_steps"], pct_start=0.1)
                noisy, clean, shifts = stream.batch(draw, with_shifts=True,
                                                    snr=tuple(c["finetune_snr"]) if finetune else None)
                if shifted:
                    parts = model.parts(noisy)
                    out, root = parts["waveform"], parts["root"]
                    # auxiliary: the de-shift head against the true delay (drawn shift + pre-alignment)
                    target = shifts + model.prealign_shift(model.normalize_input(noisy))
                    shift_loss = nn.functional.smooth_l1_loss(parts["shift"], target)
                else:
                    out, root = model(noisy)
                    shift_loss = 0.0
                clean_root = clean.sqrt()
                loss = _loss(c["loss"], out, root, clean, clean_root) + c["shift_weight"] * shift_loss
                if c["contrastive_weight"] > 0:
                    bank = None
                    if c["contrastive_bank"]:
                        rows = torch.as_tensor(draw.integers(0, len(train_rows), c["contrastive_bank"]),
                                               device=device)
                        bank = train_roots[rows]
                    loss = loss + c["contrastive_weight"] * _info_nce(root, clean_root, bank,
                                                                      c["contrastive_temperature"])
                if c["tail_weight"] > 0:
                    loss = loss + c["tail_weight"] * _quarter(root, clean_root)
                if train_match is not None:
                    rows = torch.as_tensor(draw.integers(0, len(train_match), c["neighbour_bank"]), device=device)
                    # ramped in over the first half: mode-seeking from random weights pulls outputs to hubs
                    ramp = min(1.0, step / max(1, c["n_steps"] // 2))
                    loss = loss + ramp * c["neighbour_weight"] * _neighbour_kl(
                        out, root, clean, train_match[rows], c["neighbour_temperature"])
                if c["cdf_weight"] > 0:
                    loss = loss + c["cdf_weight"] * _cramer(out, clean)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                running += float(loss.detach())
                if step % c["validation_every"] == 0 or step == total_steps:
                    model.eval()
                    with torch.inference_mode():
                        v_out, v_root = model(val_noisy)
                        v = float(_loss(c["loss"], v_out, v_root, val_clean, val_root))
                    n_since = step - (hist["step"][-1] if hist["step"] else 0)
                    hist["step"].append(step)
                    hist["seconds"].append(time.perf_counter() - start)
                    hist["train_loss"].append(running / n_since)
                    hist["val_loss"].append(v)
                    running = 0.0
                    log.debug("step %d: train %.5f, validation %.5f", step, hist["train_loss"][-1], v)
                if checkpoint is not None and checkpoint_every and step % checkpoint_every == 0 \
                        and step != total_steps:
                    hist["train_seconds"] = time.perf_counter() - start
                    self.history_ = hist
                    self.save(checkpoint)
            hist["train_seconds"] = time.perf_counter() - start
            model.eval()
        self.history_ = hist
        StageCounts("train-denoiser", found=len(lib), done=(c["n_steps"] + c["finetune_steps"]) * c["batch_size"],
                    extra={"validation_loss": round(hist["val_loss"][-1], 6),
                           "seconds": round(hist["train_seconds"], 1)}).report()
        if checkpoint is not None:
            self.save(checkpoint)
        return self

    def time_to_stable_validation(self, tolerance: float = 0.05) -> float:
        """Training seconds until the validation loss first came within ``tolerance`` of its best value."""
        if not self.history_.get("val_loss"):
            raise CrevkitValueError("no validation history: fit() first")
        v = np.asarray(self.history_["val_loss"])
        i = int(np.argmax(v <= v.min() * (1.0 + tolerance)))
        return float(self.history_["seconds"][i])

    # ---- inference -----------------------------------------------------------------------------
    def _device(self) -> torch.device:
        return next(self.model_.parameters()).device

    def transform(self, waveforms: Any, batch_size: int = 256, *, progress: bool | None = None,
                  blend: bool | str | None = None) -> np.ndarray:
        """Denoise and de-shift shots: (n, n_samples) -> clean float32 (n, n_samples), unit sum.

        ``waveforms`` may be a memory-mapped array: it is read, converted to
        float32 and processed ``batch_size`` rows at a time (inference mode,
        no autograd).  Rows that are not finite give NaN rows.  Small batches
        stay in cache: on 2 CPU threads batches of 256 ran about twice as fast
        as batches of 1024–4096.  ``blend`` overrides the config's ``blend``
        for this call (None: the config's).
        """
        self._check_fitted()
        if not hasattr(waveforms, "shape") or not hasattr(waveforms, "__getitem__"):
            waveforms = np.asarray(waveforms)
        if len(waveforms.shape) != 2 or waveforms.shape[1] != self.config["n_samples"]:
            raise CrevkitValueError(f"waveforms must have shape (n, {self.config['n_samples']}), "
                                    f"got {tuple(waveforms.shape)}")
        if blend is not None:
            blend = _blend_mode(blend)
        out = np.empty(waveforms.shape, dtype=np.float32)
        for start, block in self._batches(waveforms, batch_size, progress, blend):
            out[start:start + len(block)] = block
        return out

    def _batches(self, waveforms: Any, batch_size: int, progress: bool | None, blend: str | None = None):
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        blend = _blend_mode(self.config["blend"] if blend is None else blend)
        n = waveforms.shape[0]
        dev = self._device()
        model = self.model_.eval()
        starts = range(0, n, batch_size)
        bar = progress_bar(starts, desc="denoise", total=len(starts), unit="batch",
                           disable=None if progress is None else not progress)
        with _torch_threads(resolve_threads(self.config["n_threads"])), torch.inference_mode():
            for start in bar:
                x = np.array(waveforms[start:start + batch_size], dtype=np.float32)  # own, writable copy
                bad = ~np.isfinite(x).all(axis=1)
                if bad.any():
                    x = np.where(bad[:, None], 0.0, x).astype(np.float32)
                xt = torch.from_numpy(x).to(dev)
                y, _ = model(xt)
                if blend != "none":
                    y = _blend_torch(y, xt, blend, self.blend_weights_)
                y = y.float().cpu().numpy()
                if bad.any():
                    y[bad] = np.nan
                yield start, y

    def transform_stack(self, source: str | os.PathLike, output: str | os.PathLike, batch_size: int = 256, *,
                        progress: bool | None = None, blend: bool | str | None = None) -> StageCounts:
        """Stream a stack of shots (``.npy`` or Zarr) to a ``.npy`` of clean waveforms, atomically.

        ``blend`` overrides the config's blend mode, as in :meth:`transform`.
        """
        from ._stack_io import open_stack

        self._check_fitted()
        stack = open_stack(source, "source")
        n_samples = self.config["n_samples"]
        if len(stack.shape) != 2 or stack.shape[1] != n_samples:
            raise InputFileError(f"source: {source} must hold an (n, {n_samples}) array, got shape {stack.shape}")
        output = Path(output)
        if output.suffix != ".npy":
            raise CrevkitValueError(f"output must end in .npy, got {output}")
        if blend is not None:
            blend = _blend_mode(blend)
        counts = StageCounts("denoise", found=int(stack.shape[0]))
        with atomic_path(output, suffix=".npy") as tmp:
            mm = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(stack.shape[0], n_samples))
            for start, block in self._batches(stack, batch_size, progress, blend):
                mm[start:start + len(block)] = block
                bad = int(np.isnan(block[:, 0]).sum())
                counts.failed += bad
                counts.done += len(block) - bad
            mm.flush()
            del mm
        return counts.report()

    # ---- checkpoints ---------------------------------------------------------------------------
    def _payload(self) -> dict[str, Any]:
        state = {k: v.detach().cpu().clone() for k, v in self.model_.state_dict().items()}
        return {
            "format": CHECKPOINT_FORMAT,
            "format_version": CHECKPOINT_VERSION,
            "config": json.dumps(self.config, sort_keys=True),
            "noise_model_hash": self.noise_model_hash_ or "",
            "history": json.dumps(self.history_),
            "weights_sha256": _weights_digest(state),
            "state_dict": state,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write a checkpoint atomically; an existing one at ``path`` is kept as ``<path>.prev``.

        The checkpoint holds the weights (``state_dict``), the config and the
        training history as JSON, the noise model's fingerprint and a SHA-256
        of the weights; it loads with ``torch.load(weights_only=True)``.
        """
        self._check_fitted()
        path = Path(path)
        buf = io.BytesIO()
        torch.save(self._payload(), buf)
        if path.exists():
            prev = path.with_name(path.name + ".prev")
            with atomic_path(prev) as tmp:
                shutil.copyfile(path, tmp)
        atomic_write_bytes(path, buf.getvalue())  # fsync'd, size-checked
        return path

    @classmethod
    def _read(cls, path: Path, device: torch.device) -> "Denoiser":
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many unrelated types for a damaged file
            raise InputFileError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
        if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
            raise InputFileError(f"{path}: not a crevkit denoiser checkpoint")
        if payload.get("format_version") != CHECKPOINT_VERSION:
            raise InputFileError(f"{path}: checkpoint format version {payload.get('format_version')} is not "
                                 f"supported (expected {CHECKPOINT_VERSION})")
        try:
            config = json.loads(payload["config"])
            if isinstance(config, dict):  # written before the U-Net and the blend existed
                config.setdefault("architecture", "autoencoder")
                config.setdefault("blend", False)
                config.setdefault("neighbour_weight", 0.0)  # trained before the neighbourhood term existed
            state = payload["state_dict"]
            history = json.loads(payload.get("history", "{}"))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputFileError(f"{path}: checkpoint is incomplete ({exc})") from None
        if _weights_digest(state) != payload.get("weights_sha256"):
            raise IndexIntegrityError(f"{path}: the weights do not match their recorded SHA-256 (corrupt checkpoint)")
        obj = cls(**config)
        model = obj._build()
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            raise IndexIntegrityError(f"{path}: weights do not fit the recorded config ({exc})") from None
        obj.model_ = model.to(device).eval()
        obj.history_ = history
        obj.noise_model_hash_ = payload.get("noise_model_hash") or None
        return obj

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", n_threads: int | None = None) -> "Denoiser":
        """Load a checkpoint (``weights_only=True``).

        A corrupt or unreadable checkpoint falls back to ``<path>.prev`` with a
        warning; if that fails too, :class:`crevkit.InputFileError` (or
        :class:`crevkit.IndexIntegrityError`) is raised naming the file.
        ``device`` and ``n_threads`` override the saved values.
        """
        path = Path(path)
        dev = _resolve_device(device)
        prev = path.with_name(path.name + ".prev")
        if not path.exists() and not prev.exists():
            raise InputFileError(f"{path}: no such checkpoint")
        try:
            if not path.exists():
                raise InputFileError(f"{path}: no such checkpoint")
            obj = cls._read(path, dev)
        except (InputFileError, IndexIntegrityError) as exc:
            if not prev.exists():
                raise
            warnings.warn(f"{exc}; falling back to the previous checkpoint {prev}", RuntimeWarning, stacklevel=2)
            obj = cls._read(prev, dev)
        obj.config["device"] = device
        if n_threads is not None:
            obj.config["n_threads"] = check_int(n_threads, "n_threads", minimum=0, maximum=1024)
        return obj

    def __repr__(self) -> str:
        shown = {k: v for k, v in self.config.items() if v != _DEFAULTS[k]}
        return "Denoiser(" + ", ".join(f"{k}={v!r}" for k, v in shown.items()) + ")"
