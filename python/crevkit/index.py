"""Waveform matching: alignment, the matching space, and an HNSW index with exact re-rank.

Pipeline applied identically to library and query waveforms (recorded in the
index's metadata, so a loaded index treats queries exactly as it treated the
library):

1. **Alignment** (``alignment``): ``"centroid"`` (default) shifts each
   waveform by a sub-sample amount so that its thresholded centroid
   (``Σ t·max(w − threshold·p, 0) / Σ …``, threshold 10 % of the peak ``p``
   interpolated by a parabola)
   lands on a fixed ``align_target``; ``"leading_edge"`` uses the first
   crossing of 50 % of the peak (linear interpolation between samples);
   ``"none"`` leaves the waveform as it is.  Shifts are sub-sample: a
   band-limited (FFT, zero-padded) shift by default, or linear interpolation.
   Content shifted out of the window is lost, on both sides alike.
2. Negative samples are set to 0 (noise residue; needed by the square root);
   optionally (``noise_floor``) samples below a fraction of the maximum too.
3. **Transform** (``transform``): ``"sqrt"`` (default, chosen by measurement:
   it lifts the weak late energy that crevasses put in the tail) or
   ``"linear"``.  Both keep the time order: a waveform and its time-reversed
   mirror stay different vectors (Fourier magnitudes would not).
4. Unit L2 normalization.

The index stores the unit vectors (deduplicated: near-identical library
vectors, which HNSW can leave unreachable, are stored once and every library
row of a group is returned), projects them on the leading principal components
(``pca_components``, default 64), searches an hnswlib HNSW graph for
``rerank`` candidates and re-ranks those exactly in the full dimension.
Distances are squared Euclidean distances between unit vectors (= 2 − 2 cos).

``query(..., offsets=[...])`` is the talk's multi-offset search: the query is
also searched shifted by each offset (samples) and the results are merged
(best distance per library row).

:class:`IndexWithCopies` pairs an index with one over copies of the library's
rows (for denoised shots: the library's noisy copies denoised the same way,
:func:`crevkit.denoise.noisy_library_copies`) and answers queries with library
rows, a row once per matching waveform.

Index files are trusted only after checks: a JSON sidecar (``index.json``)
holds the dimension, space, counts, normalization, alignment, transform,
instrument, library hash and the sha256 and size of every file; it is verified
before hnswlib sees the graph file, and the graph file's structure is walked
as well (hnswlib can crash on corrupt files).  Failures raise
:class:`crevkit.IndexIntegrityError`.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import json
import math
import os
import struct
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from ._validation import as_float32_array, blas_threads, check_finite_number, check_int, resolve_threads
from .errors import CrevkitTypeError, CrevkitValueError, IndexIntegrityError

__all__ = [
    "WaveformIndex",
    "IndexWithCopies",
    "align_waveforms",
    "shift_waveforms",
    "waveform_positions",
    "transform_waveforms",
    "library_hash",
    "match_shots",
    "exact_search",
    "rerank_distances",
    "ALIGNMENTS",
    "TRANSFORMS",
]

ALIGNMENTS = ("centroid", "leading_edge", "none")
TRANSFORMS = ("sqrt", "linear")
INTERPOLATIONS = ("fft", "linear")
FORMAT_VERSION = 1
_META_NAME = "index.json"
_FILES = ("hnsw.bin", "vectors.npy", "pca.npy", "groups.npy", "group_offsets.npy", "tile_ids.npy")


# ----------------------------------------------------------------------------- alignment


def waveform_positions(waveforms: Any, method: str = "centroid", threshold: float = 0.1) -> np.ndarray:
    """Sub-sample position (in samples) of each waveform used for alignment.

    Parameters
    ----------
    waveforms : array_like, shape (n, n_samples) or (n_samples,)
    method : {"centroid", "leading_edge"}
        ``"centroid"``: centroid of ``max(w − threshold·p, 0)`` (a soft
        threshold, continuous in the shift), where ``p`` is the peak height
        interpolated by a parabola through the highest sample and its
        neighbours (the sampled maximum wobbles with sub-sample shifts).  ``"leading_edge"``: first
        crossing of half the peak, linearly interpolated.
    threshold : float
        Fraction of the peak for the centroid (default 0.1).

    Returns
    -------
    ndarray of float64, shape (n,) (or a float for one waveform).  Rows with no
    positive sample get NaN.
    """
    w = as_float32_array(waveforms, "waveforms", ndim=(1, 2), allow_nan=False)
    single = w.ndim == 1
    w2 = w[None] if single else w
    peak = w2.max(axis=1)
    pos = np.full(w2.shape[0], np.nan)
    ok = peak > 0
    if method == "centroid":
        t = np.arange(w2.shape[1], dtype=np.float64)
        w64 = np.clip(w2.astype(np.float64), 0.0, None)
        level = _parabolic_peak(w64)
        v = np.clip(w64 - threshold * level[:, None], 0.0, None)
        s = v.sum(axis=1)
        ok &= s > 0
        pos[ok] = (v[ok] @ t) / s[ok]
    elif method == "leading_edge":
        half = 0.5 * peak
        above = w2 >= half[:, None]
        i = np.argmax(above, axis=1)
        rows = np.arange(w2.shape[0])
        prev = w2[rows, np.maximum(i - 1, 0)].astype(np.float64)
        cur = w2[rows, i].astype(np.float64)
        denom = cur - prev
        frac = np.where((i > 0) & (denom > 0), (half - prev) / np.where(denom > 0, denom, 1.0), 1.0)
        pos[ok] = (i - 1 + frac)[ok]
    else:
        raise CrevkitValueError(f"method must be 'centroid' or 'leading_edge', got {method!r}")
    return float(pos[0]) if single else pos


def _parabolic_peak(w: np.ndarray) -> np.ndarray:
    """Peak height by a parabola through the maximum sample and its neighbours.

    Unlike the sampled maximum (which wobbles by ~2 % for a 6 ns pulse as the
    waveform moves by sub-sample amounts) it barely depends on the shift, and
    unlike energy ratios it is not pulled down by noise spread over the window.
    """
    n = w.shape[1]
    i = np.argmax(w, axis=1)
    rows = np.arange(w.shape[0])
    y1 = w[rows, i]
    y0 = w[rows, np.maximum(i - 1, 0)]
    y2 = w[rows, np.minimum(i + 1, n - 1)]
    denom = y0 - 2.0 * y1 + y2
    ok = (denom < 0) & (i > 0) & (i < n - 1)
    corr = np.where(ok, (y0 - y2) ** 2 / (8.0 * np.where(ok, denom, -1.0)), 0.0)
    return y1 - corr


def shift_waveforms(waveforms: Any, shifts: Any, interpolation: str = "fft") -> np.ndarray:
    """Delay each waveform by ``shifts`` samples (fractional allowed; negative = earlier).

    ``interpolation="fft"`` is a band-limited (sinc) shift on a zero-padded
    grid, so nothing wraps around; ``"linear"`` interpolates linearly.
    Samples shifted out of the window are lost; samples shifted in are 0.

    Returns float32 of the same shape.
    """
    w = as_float32_array(waveforms, "waveforms", ndim=(1, 2), allow_nan=False)
    single = w.ndim == 1
    w2 = w[None] if single else w
    s = np.broadcast_to(np.asarray(shifts, dtype=np.float64), (w2.shape[0],))
    if not np.isfinite(s).all():
        raise CrevkitValueError("shifts contains NaN or infinite values")
    n = w2.shape[1]
    if interpolation == "fft":
        # zero padding of at least |shift| (+ margin for the sinc tails): nothing wraps into the window.
        # The padding is chosen per row, never per batch, so a waveform's shift does not depend on
        # which other waveforms share its call (distributed tasks and local runs agree to the bit).
        import scipy.fft

        out = np.zeros(w2.shape, np.float32)
        need = np.ceil(np.abs(s)).astype(np.int64)
        inside = need < n + 16  # shifted farther, everything leaves the window: zeros
        pads = np.zeros(need.shape, np.int64)
        for value in np.unique(need[inside]):
            pads[need == value] = scipy.fft.next_fast_len(n + int(value) + 32, real=True)
        for pad in np.unique(pads[inside]):
            rows = np.flatnonzero(inside & (pads == pad))
            # float32 FFTs (scipy keeps single precision; numpy.fft would compute in float64)
            spec = scipy.fft.rfft(w2[rows], n=int(pad), axis=1)
            spec *= _phase_ramp(s[rows], int(pad), spec.shape[1])
            out[rows] = scipy.fft.irfft(spec, n=int(pad), axis=1)[:, :n]
    elif interpolation == "linear":
        src = np.arange(n)[None, :] - s[:, None]
        i0 = np.floor(src).astype(np.int64)
        frac = src - i0
        padded = np.concatenate([np.zeros((w2.shape[0], 1), w2.dtype), w2, np.zeros((w2.shape[0], 1), w2.dtype)], axis=1)
        a = np.take_along_axis(padded, np.clip(i0 + 1, 0, n + 1), axis=1)
        b = np.take_along_axis(padded, np.clip(i0 + 2, 0, n + 1), axis=1)
        out = (1.0 - frac) * a + frac * b
        out[(i0 < -1) | (i0 > n - 1)] = 0.0
    else:
        raise CrevkitValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
    out = np.ascontiguousarray(out, dtype=np.float32)
    return out[0] if single else out


def _phase_ramp(shifts: np.ndarray, pad: int, n_freq: int) -> np.ndarray:
    """``exp(−2πi·s·f/pad)`` for f < n_freq, complex64, shape (len(shifts), n_freq).

    Built as an outer product of two short ramps (``z^f = z^(aB)·z^b`` with
    ``f = aB + b``, B ≈ √n_freq), each evaluated in float64: ~2√n_freq
    complex exponentials per row instead of n_freq sines and cosines, the
    dominant cost of the shift when computed directly.
    """
    B = max(1, int(math.ceil(math.sqrt(n_freq))))
    base = (-2.0 * np.pi / pad) * np.asarray(shifts, np.float64)
    lo = np.exp(1j * np.outer(base, np.arange(B))).astype(np.complex64)
    hi = np.exp(1j * np.outer(base, B * np.arange(-(-n_freq // B)))).astype(np.complex64)
    return (hi[:, :, None] * lo[:, None, :]).reshape(base.shape[0], -1)[:, :n_freq]


def align_waveforms(waveforms: Any, method: str = "centroid", target: float = 64.0, *, threshold: float = 0.1,
                    interpolation: str = "fft", return_shifts: bool = False):
    """Shift each waveform so that its alignment position lands on ``target``.

    Parameters
    ----------
    waveforms : array_like, shape (n, n_samples) or (n_samples,)
        Converted once to float32; NaN raises.
    method : {"centroid", "leading_edge", "none"}
        See :func:`waveform_positions`.
    target : float
        Sample at which the position is placed.
    threshold : float
        Centroid threshold as a fraction of the peak.
    interpolation : {"fft", "linear"}
        Sub-sample shift method (:func:`shift_waveforms`).
    return_shifts : bool
        Also return the applied shifts (samples).

    Returns
    -------
    aligned : ndarray of float32, same shape
    shifts : ndarray of float64, only with ``return_shifts=True``.  Rows with no
        positive sample are left unshifted (shift 0).
    """
    if method not in ALIGNMENTS:
        raise CrevkitValueError(f"method must be one of {ALIGNMENTS}, got {method!r}")
    target = check_finite_number(target, "target")
    threshold = check_finite_number(threshold, "threshold")
    if not 0.0 <= threshold < 1.0:
        raise CrevkitValueError(f"threshold must be in [0, 1), got {threshold}")
    w = as_float32_array(waveforms, "waveforms", ndim=(1, 2), allow_nan=False)
    single = w.ndim == 1
    w2 = w[None] if single else w
    if method == "none":
        shifts = np.zeros(w2.shape[0])
        out = w2.copy()
    else:
        pos = waveform_positions(w2, method, threshold)
        shifts = np.where(np.isfinite(pos), target - pos, 0.0)
        out = shift_waveforms(w2, shifts, interpolation)
    if single:
        out, shifts = out[0], shifts[0]
    return (out, shifts) if return_shifts else out


def transform_waveforms(waveforms: Any, transform: str = "sqrt") -> np.ndarray:
    """Clip negatives to 0, apply the amplitude transform and normalize to unit L2.

    Raises :class:`crevkit.CrevkitValueError` naming the rows that have no
    positive sample (they cannot be normalized).
    """
    if transform not in TRANSFORMS:
        raise CrevkitValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
    w = as_float32_array(waveforms, "waveforms", ndim=2, allow_nan=False)
    v = np.clip(w, 0.0, None)
    if transform == "sqrt":
        np.sqrt(v, out=v)
    norm = np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))
    bad = ~(norm > 0)
    if bad.any():
        rows = np.flatnonzero(bad)
        shown = ", ".join(str(r) for r in rows[:10]) + (" ..." if rows.size > 10 else "")
        raise CrevkitValueError(f"waveforms: {rows.size} row(s) have no positive sample (rows {shown})")
    v /= norm[:, None].astype(np.float32)
    return v


# ----------------------------------------------------------------------------- hashing


def library_hash(waveforms: Any, tile_ids: Sequence[Any] | None = None, batch_size: int = 16384) -> str:
    """sha256 of a library's waveforms (float32, row-major, streamed) and tile ids."""
    h = hashlib.sha256()
    n, d = int(waveforms.shape[0]), int(waveforms.shape[1])
    h.update(f"crevkit-library:{n}x{d}:float32\n".encode())
    for start in range(0, n, batch_size):
        block = np.ascontiguousarray(np.asarray(waveforms[start:start + batch_size]), dtype=np.float32)
        h.update(block.tobytes())
    if tile_ids is not None:
        h.update(b"\ntile_ids\n")
        for t in tile_ids:
            h.update(str(t).encode())
            h.update(b"\n")
    return h.hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


# ----------------------------------------------------------------------------- hnswlib file walk

_HNSW_HEADER = struct.Struct("<QQQQQQiIQQQdQ")


def _check_hnsw_file(path: Path, *, dim: int, count: int, M: int) -> None:
    """Walk hnswlib's on-disk layout (v0.8) and check it against the metadata.

    Raises IndexIntegrityError on any inconsistency, before hnswlib reads the file.
    """
    size = path.stat().st_size
    with open(path, "rb") as fh:
        data = fh.read()
    if size < _HNSW_HEADER.size:
        raise IndexIntegrityError(f"{path}: truncated hnswlib header ({size} bytes)")
    (offset_level0, max_elements, cur_count, size_per_element, label_offset, offset_data, maxlevel, enterpoint,
     max_m, max_m0, m, mult, ef_c) = _HNSW_HEADER.unpack_from(data, 0)
    expect_per_element = (max_m0 * 4 + 4) + dim * 4 + 8
    problems = []
    if cur_count != count:
        problems.append(f"element count {cur_count} != {count}")
    if m != M or max_m != M or max_m0 != 2 * M:
        problems.append(f"M {m}/{max_m}/{max_m0} != {M}")
    if size_per_element != expect_per_element or offset_level0 != 0 or offset_data != max_m0 * 4 + 4 \
            or label_offset != offset_data + dim * 4:
        problems.append("element layout does not match the dimension")
    if max_elements < cur_count or not 0 <= maxlevel < 64 or (cur_count and enterpoint >= cur_count):
        problems.append("header values out of range")
    if problems:
        raise IndexIntegrityError(f"{path}: not the expected hnswlib index ({'; '.join(problems)})")
    pos = _HNSW_HEADER.size + cur_count * size_per_element
    if pos > size:
        raise IndexIntegrityError(f"{path}: truncated ({size} bytes, the level-0 data alone needs {pos})")
    # level-0 link counts and neighbour ids must be in range
    level0 = np.frombuffer(data, dtype=np.uint8, count=cur_count * size_per_element, offset=_HNSW_HEADER.size)
    level0 = level0.reshape(cur_count, size_per_element)
    links = level0[:, :offset_data].copy().view(np.uint32)
    nlinks = links[:, 0] & 0xFFFF
    if (nlinks > max_m0).any():
        raise IndexIntegrityError(f"{path}: corrupt level-0 link counts")
    ids = links[:, 1:]
    used = np.arange(max_m0)[None, :] < nlinks[:, None]
    if (ids[used] >= cur_count).any():
        raise IndexIntegrityError(f"{path}: level-0 links point outside the index")
    labels = level0[:, label_offset:label_offset + 8].copy().view(np.uint64).ravel()
    if not np.array_equal(np.sort(labels), np.arange(cur_count, dtype=np.uint64)):
        raise IndexIntegrityError(f"{path}: element labels are not 0..{cur_count - 1}")
    link_size = max_m * 4 + 4
    for _ in range(cur_count):
        if pos + 4 > size:
            raise IndexIntegrityError(f"{path}: truncated in the upper-level links")
        (ll,) = struct.unpack_from("<I", data, pos)
        pos += 4
        if ll:
            if ll % link_size or ll // link_size > maxlevel:
                raise IndexIntegrityError(f"{path}: corrupt upper-level link list")
            block = np.frombuffer(data, dtype=np.uint32, count=ll // 4, offset=pos).reshape(-1, max_m + 1)
            cnt = block[:, 0] & 0xFFFF
            if (cnt > max_m).any() or (block[:, 1:][np.arange(max_m)[None, :] < cnt[:, None]] >= cur_count).any():
                raise IndexIntegrityError(f"{path}: corrupt upper-level link list")
            pos += ll
    if pos != size:
        raise IndexIntegrityError(f"{path}: size {size} bytes, the structure accounts for {pos}")


# ----------------------------------------------------------------------------- the index


def _instrument_record(instrument: Any) -> dict:
    from .instruments import get_instrument

    ins = get_instrument(instrument) if not isinstance(instrument, dict) else None
    if ins is None:
        return dict(instrument)
    rec = dataclasses.asdict(ins)
    if rec.get("pulse") is not None:
        rec["pulse"] = list(rec["pulse"])
    return rec


class WaveformIndex:
    """Approximate nearest-neighbour index over simulated waveforms (hnswlib HNSW).

    Build with :meth:`build`, query with :meth:`query`, persist with
    :meth:`save` / :meth:`load`.  See the module docstring for the matching
    space.  Attributes: ``metadata`` (dict, the sidecar), ``count`` (library
    rows), ``n_unique`` (stored vectors after deduplication), ``tile_ids``
    (ndarray of str or None), ``ef_search``, ``rerank``.
    """

    def __init__(self, *, hnsw: Any, vectors: np.ndarray, pca: np.ndarray, groups: np.ndarray,
                 group_offsets: np.ndarray, tile_ids: np.ndarray | None, metadata: dict):
        self._hnsw = hnsw
        self._vectors = vectors
        self._pca_mean = pca[0]
        self._pca_components = np.ascontiguousarray(pca[1:].T)  # (d, m)
        self._groups = groups
        self._group_offsets = group_offsets
        self._group_sizes = np.diff(group_offsets)
        self.tile_ids = tile_ids
        self.metadata = metadata
        self.ef_search = int(metadata["hnsw"]["ef_search"])
        self.rerank = int(metadata["hnsw"]["rerank"])

    # -- properties
    @property
    def dimension(self) -> int:
        """Number of samples per waveform the index accepts."""
        return int(self.metadata["dimension"])

    @property
    def count(self) -> int:
        return int(self.metadata["count"])

    @property
    def n_unique(self) -> int:
        return int(self.metadata["n_unique"])

    @property
    def repeats_per_row(self) -> int:
        """The most times one query can return the same library row (1: rows are distinct)."""
        return 1

    def __repr__(self) -> str:
        m = self.metadata
        return (f"WaveformIndex(count={self.count}, n_unique={self.n_unique}, dimension={self.dimension}, "
                f"transform={m['transform']!r}, alignment={m['alignment']['method']!r}, "
                f"pca={m['pca_components']}, M={m['hnsw']['M']}, ef_search={self.ef_search}, rerank={self.rerank})")

    # -- preparation shared by library and queries
    def prepare(self, waveforms: Any, offset: float = 0.0) -> np.ndarray:
        """Waveforms → unit vectors in the index's matching space (``offset``: extra delay, samples)."""
        w = as_float32_array(waveforms, "waveforms", ndim=2)
        if w.shape[1] != self.dimension:
            raise CrevkitValueError(f"waveforms must have {self.dimension} samples per row (the index's dimension), "
                                    f"got shape {w.shape}")
        if not np.isfinite(w).all():
            rows = np.flatnonzero(~np.isfinite(w).all(axis=1))
            raise CrevkitValueError(f"waveforms contains NaN or infinite values (rows {', '.join(map(str, rows[:10]))}"
                                    f"{' ...' if rows.size > 10 else ''})")
        return _prepare(w, self.metadata, offset)

    # -- build
    @classmethod
    def build(cls, library: Any, *, tile_ids: Sequence[Any] | None = None, transform: str = "sqrt",
              alignment: str = "centroid", align_target: float | None = None, align_threshold: float = 0.1,
              interpolation: str = "fft", noise_floor: float = 0.0, pca_components: int | None = 64, M: int = 16,
              ef_construction: int = 200, ef_search: int = 32, rerank: int = 32, dedup: bool = True,
              dedup_tolerance: float = 1e-3, deterministic: bool = False, seed: int = 0,
              n_threads: int | None = None, instrument: Any = "glas", batch_size: int = 16384,
              progress: bool | None = None) -> "WaveformIndex":
        """Build an index from a library.

        Parameters
        ----------
        library : array_like (n, n_samples), or a library directory (``build_library``)
            Library waveforms; an array-like (Zarr, memmap) is read in batches.
            A library directory also supplies ``tile_ids``, the instrument and
            the library hash.
        tile_ids : sequence, optional
            One id per library row (returned by ``query(..., return_tile_ids=True)``).
        transform : {"sqrt", "linear"}
        alignment : {"centroid", "leading_edge", "none"}
        align_target : float, optional
            Sample where aligned positions land; default: the 99.5th
            percentile of the library's positions, rounded up (so that almost
            no library waveform loses its leading edge).
        align_threshold, interpolation
            See :func:`align_waveforms`.
        noise_floor : float
            After alignment, samples below this fraction of the waveform's
            maximum are set to 0 (library and queries alike) before the
            transform; 0 (default) keeps everything.  For noisy queries.
        pca_components : int or None
            Dimension of the HNSW graph (None: full dimension, no PCA).
        M, ef_construction : int
            HNSW graph parameters.
        ef_search, rerank : int
            Default search breadth and number of candidates re-ranked exactly
            (a query uses ``max(ef_search, rerank, k)`` and ``max(rerank, k)``).
        dedup : bool
            Store near-identical vectors once (equal after rounding the unit
            vectors to ``dedup_tolerance``); every library row is still returned.
        deterministic : bool
            Single-threaded insertion with the fixed ``seed``: bit-identical
            index files across runs.
        seed : int
            hnswlib's level generator seed.
        n_threads : int, optional
            Threads (default: all usable cores).
        instrument : str, Instrument or dict
            Recorded in the metadata.
        """
        import hnswlib

        if transform not in TRANSFORMS:
            raise CrevkitValueError(f"transform must be one of {TRANSFORMS}, got {transform!r}")
        if alignment not in ALIGNMENTS:
            raise CrevkitValueError(f"alignment must be one of {ALIGNMENTS}, got {alignment!r}")
        if interpolation not in INTERPOLATIONS:
            raise CrevkitValueError(f"interpolation must be one of {INTERPOLATIONS}, got {interpolation!r}")
        M = check_int(M, "M", minimum=2, maximum=256)
        ef_construction = check_int(ef_construction, "ef_construction", minimum=1)
        ef_search = check_int(ef_search, "ef_search", minimum=1)
        rerank = check_int(rerank, "rerank", minimum=1)
        seed = check_int(seed, "seed", minimum=0)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        threads = 1 if deterministic else resolve_threads(n_threads)
        lib_hash = None
        if isinstance(library, (str, os.PathLike)):
            from .library import open_library

            lib = open_library(library)
            waves = lib.waveforms
            if tile_ids is None:
                tile_ids = lib.tile_ids
            instrument = lib.metadata.get("instrument", instrument)
            lib_hash = lib.metadata["sha256"]
        else:
            waves = library
        if not hasattr(waves, "shape") or not hasattr(waves, "__getitem__"):
            waves = as_float32_array(waves, "library", ndim=2)
        if len(waves.shape) != 2:
            raise CrevkitValueError(f"library must be 2-D (n, n_samples), got shape {waves.shape}")
        n, dim = int(waves.shape[0]), int(waves.shape[1])
        if n < 2:
            raise CrevkitValueError(f"library must have at least 2 waveforms, got {n}")
        if tile_ids is not None:
            tile_ids = np.asarray([str(t) for t in tile_ids])
            if tile_ids.shape[0] != n:
                raise CrevkitValueError(f"tile_ids has {tile_ids.shape[0]} entries for {n} library waveforms")
        if lib_hash is None:
            lib_hash = library_hash(waves, tile_ids, batch_size)
        metadata: dict[str, Any] = {
            "format": "crevkit-waveform-index",
            "format_version": FORMAT_VERSION,
            "dimension": dim,
            "space": "squared L2 between unit vectors (2 - 2 cos)",
            "count": n,
            "normalization": "clip negatives to 0, transform, unit L2",
            "noise_floor": float(check_finite_number(noise_floor, "noise_floor")),
            "transform": transform,
            "alignment": {"method": alignment, "target": None, "threshold": float(align_threshold),
                          "interpolation": interpolation},
            "instrument": _instrument_record(instrument),
            "library_sha256": lib_hash,
        }
        # alignment target from the library's positions
        if alignment != "none":
            if align_target is None:
                pos = np.concatenate([waveform_positions(np.asarray(waves[s:s + batch_size]), alignment,
                                                         align_threshold) for s in range(0, n, batch_size)])
                pos = pos[np.isfinite(pos)]
                align_target = float(math.ceil(np.percentile(pos, 99.5))) if pos.size else dim / 4.0
            metadata["alignment"]["target"] = check_finite_number(align_target, "align_target")
        # prepare all vectors (streamed)
        from ._progress import progress as progress_bar

        vectors = np.empty((n, dim), np.float32)
        starts = range(0, n, batch_size)
        for s in progress_bar(starts, desc="index: prepare", total=len(starts), unit="batch",
                              disable=None if progress is None else not progress):
            block = as_float32_array(np.asarray(waves[s:s + batch_size]), "library", ndim=2)
            if not np.isfinite(block).all():
                raise CrevkitValueError(f"library contains NaN or infinite values (rows {s}..{s + block.shape[0] - 1})")
            try:
                vectors[s:s + block.shape[0]] = _prepare(block, metadata, 0.0)
            except CrevkitValueError as exc:
                raise CrevkitValueError(f"library rows {s}..{s + block.shape[0] - 1}: {exc}") from None
        # deduplicate
        if dedup:
            groups, group_offsets, reps = _dedup(vectors, float(dedup_tolerance))
            vectors = np.ascontiguousarray(vectors[reps])
        else:
            groups = np.arange(n, dtype=np.int64)
            group_offsets = np.arange(n + 1, dtype=np.int64)
        n_unique = vectors.shape[0]
        # PCA
        if pca_components is None or pca_components >= dim:
            m = dim
            mean = np.zeros(dim, np.float32)
            comps = np.eye(dim, dtype=np.float32)
            explained = 1.0
        else:
            m = check_int(pca_components, "pca_components", minimum=1, maximum=dim)
            mean64 = vectors.mean(axis=0, dtype=np.float64)
            cov = np.zeros((dim, dim))
            for s in range(0, n_unique, 65536):
                b = vectors[s:s + 65536].astype(np.float64) - mean64
                cov += b.T @ b
            evals, evecs = np.linalg.eigh(cov)
            order = np.argsort(evals)[::-1]
            evals, evecs = evals[order], evecs[:, order]
            # fix the sign of each component (deterministic across runs / BLAS)
            signs = np.sign(evecs[np.argmax(np.abs(evecs), axis=0), np.arange(dim)])
            evecs = evecs * np.where(signs == 0, 1.0, signs)
            comps = np.ascontiguousarray(evecs[:, :m].T, dtype=np.float32)
            mean = mean64.astype(np.float32)
            explained = float(evals[:m].sum() / max(evals.sum(), 1e-300))
        pca = np.ascontiguousarray(np.vstack([mean[None, :], comps]), dtype=np.float32)
        proj = _project(vectors, mean, np.ascontiguousarray(comps.T))
        hnsw = hnswlib.Index(space="l2", dim=m)
        hnsw.init_index(max_elements=n_unique, ef_construction=ef_construction, M=M, random_seed=seed)
        hnsw.add_items(proj, np.arange(n_unique), num_threads=threads)
        metadata.update({
            "n_unique": int(n_unique),
            "dedup": {"enabled": bool(dedup), "tolerance": float(dedup_tolerance)},
            "pca_components": int(m),
            "pca_explained_variance": explained,
            "hnsw": {"library": "hnswlib", "space": "l2", "M": M, "ef_construction": ef_construction,
                     "ef_search": ef_search, "rerank": rerank, "seed": seed, "deterministic": bool(deterministic),
                     "build_threads": threads},
        })
        from . import __version__

        metadata["crevkit_version"] = __version__
        return cls(hnsw=hnsw, vectors=vectors, pca=pca, groups=groups, group_offsets=group_offsets,
                   tile_ids=tile_ids, metadata=metadata)

    # -- query
    def query(self, waveforms: Any, k: int = 30, *, offsets: Iterable[float] | None = None,
              ef_search: int | None = None, rerank: int | None = None, n_threads: int | None = None,
              return_tile_ids: bool = False):
        """The ``k`` nearest library waveforms of each query.

        Parameters
        ----------
        waveforms : array_like, shape (n, n_samples) or (n_samples,)
            Raw query waveforms (the index aligns and transforms them as it
            did the library).  Wrong dimension, NaN or all-zero rows raise
            :class:`crevkit.CrevkitValueError`.
        k : int
            Neighbours per query (at most the library size).
        offsets : iterable of float, optional
            Multi-offset search: also search the query delayed by each offset
            (samples) and merge, keeping each library row's best distance.
        ef_search, rerank : int, optional
            Override the index defaults.
        n_threads : int, optional
            Threads (default all usable cores).
        return_tile_ids : bool
            Return tile ids (str) instead of library rows.

        Returns
        -------
        rows : ndarray of int64, shape (n, k)  (or tile ids, ndarray of str)
        distances : ndarray of float32, shape (n, k), ascending
        """
        k = check_int(k, "k", minimum=1, maximum=self.count)
        w = as_float32_array(waveforms, "waveforms", ndim=(1, 2))
        single = w.ndim == 1
        if single:
            w = w[None]
        threads = resolve_threads(n_threads)
        ef = self.ef_search if ef_search is None else check_int(ef_search, "ef_search", minimum=1)
        rr = self.rerank if rerank is None else check_int(rerank, "rerank", minimum=1)
        offs = [0.0] if offsets is None else [check_finite_number(o, "offsets") for o in offsets]
        if not offs:
            raise CrevkitValueError("offsets must not be empty")
        # validate once (dimension, NaN, empty rows) before anything touches hnswlib
        self.prepare(w[:1])
        if not np.isfinite(w).all():
            self.prepare(w)  # raises with the row numbers
        empty = ~(w > 0).any(axis=1)
        if empty.any():
            rows = np.flatnonzero(empty)
            raise CrevkitValueError(f"waveforms: {rows.size} row(s) have no positive sample (rows "
                                    f"{', '.join(map(str, rows[:10]))}{' ...' if rows.size > 10 else ''})")
        n_cand = min(max(rr, k), self.n_unique)
        ef = max(ef, n_cand)
        # each thread carries its chunks through every step (prepare, project, graph search, re-rank):
        # NumPy, scipy.fft and hnswlib all release the GIL, and nothing waits on a barrier between steps
        chunk = max(64, min(1024, -(-w.shape[0] // threads)))  # small batches: no pool to start
        starts = list(range(0, w.shape[0], chunk))
        self._hnsw.set_ef(ef)
        from . import _core

        def search(s: int):
            block = w[s:s + chunk]
            labels, dist = [], []
            for off in offs:
                q = _prepare(block, self.metadata, off)
                lab, _ = self._hnsw.knn_query(_project(q, self._pca_mean, self._pca_components), k=n_cand,
                                              num_threads=1)
                lab = lab.astype(np.int64)
                labels.append(lab)
                # in C++ with the GIL released: the other query threads keep going meanwhile
                dist.append(_core.rerank_distances(self._vectors, q, lab, 1))
            return self._merge(labels, dist, k)  # per row: the same result in any chunking

        if threads > 1 and len(starts) > 1:
            # BLAS threads on top of ours would only oversubscribe the cores
            with blas_threads(1), concurrent.futures.ThreadPoolExecutor(min(threads, len(starts))) as pool:
                parts = list(pool.map(search, starts))
        else:
            parts = [search(s) for s in starts]
        rows = np.concatenate([p[0] for p in parts])
        dist = np.concatenate([p[1] for p in parts])
        if return_tile_ids:
            if self.tile_ids is None:
                raise CrevkitValueError("this index has no tile ids; use the returned rows")
            rows = self.tile_ids[rows]
        if single:
            return rows[0], dist[0]
        return rows, dist

    def exact_query(self, waveforms: Any, k: int = 30, *, batch_size: int = 512):
        """Exact (brute-force GEMM) k nearest library rows in the index's matching space.

        Same preparation and return values as :meth:`query`; the ground truth for recall.
        """
        k = check_int(k, "k", minimum=1, maximum=self.count)
        w = as_float32_array(waveforms, "waveforms", ndim=(1, 2))
        single = w.ndim == 1
        q = self.prepare(w[None] if single else w)
        labels, dist = exact_search(self._vectors, q, min(k, self.n_unique), batch_size)
        rows, dist = self._expand(labels, dist, k)
        return (rows[0], dist[0]) if single else (rows, dist)

    def _merge(self, all_labels: list, all_dist: list, k: int):
        labels = np.concatenate(all_labels, axis=1)
        dist = np.concatenate(all_dist, axis=1)
        if len(all_labels) > 1:
            order = np.lexsort((dist, labels), axis=1)
            labels = np.take_along_axis(labels, order, axis=1)
            dist = np.take_along_axis(dist, order, axis=1)
            dup = np.zeros(labels.shape, bool)
            dup[:, 1:] = labels[:, 1:] == labels[:, :-1]
            dist[dup] = np.inf
        kk = min(k, labels.shape[1])
        order = np.argsort(dist, axis=1, kind="stable")[:, :kk]
        labels = np.take_along_axis(labels, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        return self._expand(labels, dist, k)

    def _expand(self, labels: np.ndarray, dist: np.ndarray, k: int):
        """Unique-vector labels → library rows (every member of a duplicate group), first k per query."""
        b, c = labels.shape
        sizes = self._group_sizes[labels]
        if (sizes == 1).all() and c >= k:
            return self._groups[self._group_offsets[labels[:, :k]]], dist[:, :k]
        flat_sizes = sizes.ravel()
        total = int(flat_sizes.sum())
        starts = self._group_offsets[labels.ravel()]
        cum = np.cumsum(flat_sizes) - flat_sizes
        member = np.repeat(starts - cum, flat_sizes) + np.arange(total)
        rows = self._groups[member]
        d = np.repeat(dist.ravel(), flat_sizes)
        qid = np.repeat(np.repeat(np.arange(b), c), flat_sizes)
        per_q = sizes.sum(axis=1)
        q_start = np.cumsum(per_q) - per_q
        rank = np.arange(total) - q_start[qid]
        keep = rank < k
        out_rows = np.full((b, k), -1, np.int64)
        out_dist = np.full((b, k), np.inf, np.float32)
        out_rows[qid[keep], rank[keep]] = rows[keep]
        out_dist[qid[keep], rank[keep]] = d[keep]
        if (out_rows < 0).any():  # only when the library has fewer unique candidates than k
            raise CrevkitValueError(f"fewer than k={k} neighbours found; raise rerank or ef_search")
        return out_rows, out_dist

    # -- persistence
    def save(self, path: str | os.PathLike) -> Path:
        """Write the index directory atomically (temp dir + rename), with the sidecar last.

        Every file's written size is checked (hnswlib reports no error on a
        full disk) and its sha256 recorded in ``index.json``.
        """
        from ._atomic import atomic_dir

        path = Path(path)
        with atomic_dir(path) as tmp:
            files = {}
            hnsw_path = tmp / "hnsw.bin"
            self._hnsw.save_index(str(hnsw_path))
            expected = int(self._hnsw.index_file_size())
            if not hnsw_path.exists() or hnsw_path.stat().st_size != expected:
                have = hnsw_path.stat().st_size if hnsw_path.exists() else 0
                raise OSError(f"short write of {path / 'hnsw.bin'}: {have} of {expected} bytes (disk full?)")
            arrays = {
                "vectors.npy": self._vectors,
                "pca.npy": np.vstack([self._pca_mean[None], self._pca_components.T]).astype(np.float32),
                "groups.npy": self._groups.astype(np.int64),
                "group_offsets.npy": self._group_offsets.astype(np.int64),
                "tile_ids.npy": self.tile_ids if self.tile_ids is not None else np.zeros(0, "<U1"),
            }
            for name, arr in arrays.items():
                arr = np.ascontiguousarray(arr)
                with open(tmp / name, "wb") as fh:
                    np.lib.format.write_array(fh, arr, allow_pickle=False)
                    fh.flush()
                    os.fsync(fh.fileno())
                header = len(np.lib.format.magic(1, 0))  # lower bound, the exact check is below
                size = (tmp / name).stat().st_size
                if size < arr.nbytes + header:
                    raise OSError(f"short write of {path / name}: {size} bytes for {arr.nbytes} bytes of data")
            for name in _FILES:
                files[name] = {"sha256": _sha256_file(tmp / name), "size": (tmp / name).stat().st_size}
            meta = dict(self.metadata)
            meta["files"] = files
            text = json.dumps(meta, indent=2, sort_keys=True)
            with open(tmp / _META_NAME, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            if (tmp / _META_NAME).stat().st_size != len(text.encode()):
                raise OSError(f"short write of {path / _META_NAME}")
        return path

    @classmethod
    def load(cls, path: str | os.PathLike, *, library: Any = None, tile_ids: Sequence[Any] | None = None,
             verify: bool = True) -> "WaveformIndex":
        """Load an index directory after checking it.

        Parameters
        ----------
        path : path to the directory written by :meth:`save`
        library : array_like or library directory, optional
            If given, its hash must equal the one recorded at build time.
        tile_ids : sequence, optional
            With an array ``library``: the tile ids it was built with.
        verify : bool
            Check sizes and sha256 of every file (default True; the hnswlib
            file's structure is always walked before hnswlib reads it).

        Raises
        ------
        IndexIntegrityError
            Missing or unreadable sidecar, a file whose size or sha256 differ,
            a corrupt graph file, an index built from another library.
        """
        import hnswlib

        path = Path(path)
        meta_path = path / _META_NAME
        if not path.is_dir():
            raise IndexIntegrityError(f"{path}: not an index directory")
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise IndexIntegrityError(f"{path}: no {_META_NAME} metadata sidecar; refusing to load the index") from None
        except (OSError, ValueError) as exc:
            raise IndexIntegrityError(f"{meta_path}: unreadable metadata ({exc})") from None
        try:
            if meta.get("format") != "crevkit-waveform-index" or meta.get("format_version") != FORMAT_VERSION:
                raise IndexIntegrityError(f"{meta_path}: not a crevkit waveform index (format version "
                                          f"{meta.get('format_version')!r})")
            files = meta["files"]
            dim, count, n_unique, m = (int(meta["dimension"]), int(meta["count"]), int(meta["n_unique"]),
                                       int(meta["pca_components"]))
            M = int(meta["hnsw"]["M"])
        except (KeyError, TypeError, ValueError) as exc:
            raise IndexIntegrityError(f"{meta_path}: incomplete metadata ({exc!r})") from None
        for name in _FILES:
            f = path / name
            if name not in files:
                raise IndexIntegrityError(f"{meta_path}: no entry for {name}")
            if not f.is_file():
                raise IndexIntegrityError(f"{f}: missing")
            if f.stat().st_size != files[name]["size"]:
                raise IndexIntegrityError(f"{f}: size {f.stat().st_size} bytes, the metadata says "
                                          f"{files[name]['size']} (truncated or replaced)")
            if verify and _sha256_file(f) != files[name]["sha256"]:
                raise IndexIntegrityError(f"{f}: sha256 differs from the metadata (altered or corrupt)")
        _check_hnsw_file(path / "hnsw.bin", dim=m, count=n_unique, M=M)
        arrays = {}
        for name in _FILES[1:]:
            try:
                arrays[name] = np.load(path / name, allow_pickle=False)
            except (ValueError, OSError) as exc:
                raise IndexIntegrityError(f"{path / name}: unreadable ({exc})") from None
        checks = [
            (arrays["vectors.npy"].shape == (n_unique, dim) and arrays["vectors.npy"].dtype == np.float32, "vectors.npy"),
            (arrays["pca.npy"].shape == (m + 1, dim), "pca.npy"),
            (arrays["group_offsets.npy"].shape == (n_unique + 1,) and arrays["groups.npy"].shape == (count,), "groups"),
        ]
        for ok, name in checks:
            if not ok:
                raise IndexIntegrityError(f"{path / name}: shape does not match the metadata")
        offs = arrays["group_offsets.npy"]
        grp = arrays["groups.npy"]
        if offs[0] != 0 or offs[-1] != count or (np.diff(offs) < 1).any() or grp.min() < 0 or grp.max() >= count:
            raise IndexIntegrityError(f"{path}: duplicate-group tables are inconsistent")
        ids = arrays["tile_ids.npy"]
        ids = ids if ids.size else None
        if ids is not None and ids.shape != (count,):
            raise IndexIntegrityError(f"{path / 'tile_ids.npy'}: {ids.shape[0]} ids for {count} rows")
        if library is not None:
            want = meta["library_sha256"]
            if isinstance(library, (str, os.PathLike)):
                from .library import open_library

                got = open_library(library, verify=verify).metadata["sha256"]
            else:
                arr = library if hasattr(library, "shape") else np.asarray(library)
                if tuple(arr.shape[1:]) != (dim,) or arr.shape[0] != count:
                    raise IndexIntegrityError(f"{path}: the index was built from a library of shape ({count}, {dim}), "
                                              f"got {tuple(arr.shape)}")
                got = library_hash(arr, tile_ids if tile_ids is not None else ids)
            if got != want:
                raise IndexIntegrityError(f"{path}: the index was built from a different library "
                                          f"(library sha256 {got[:12]}…, index records {want[:12]}…)")
        hnsw = hnswlib.Index(space="l2", dim=m)
        try:
            hnsw.load_index(str(path / "hnsw.bin"), max_elements=n_unique)
        except RuntimeError as exc:
            raise IndexIntegrityError(f"{path / 'hnsw.bin'}: hnswlib could not read it ({exc})") from None
        if hnsw.get_current_count() != n_unique or hnsw.dim != m:
            raise IndexIntegrityError(f"{path / 'hnsw.bin'}: holds {hnsw.get_current_count()} × {hnsw.dim}, "
                                      f"the metadata says {n_unique} × {m}")
        return cls(hnsw=hnsw, vectors=arrays["vectors.npy"], pca=arrays["pca.npy"], groups=grp,
                   group_offsets=offs, tile_ids=ids, metadata=meta)


class IndexWithCopies:
    """A library's index and an index of copies of its rows, queried as one index of library rows.

    ``copies`` holds ``m`` waveforms per library row, its row ``c · n + i``
    standing for library row ``i`` (the layout of
    :func:`crevkit.denoise.noisy_library_copies`): for instance the library's
    noisy copies denoised as the shots are, so that a denoised shot is matched
    against what the denoiser makes of every tile as well as against the
    tile's clean waveform.  A query searches both indexes and keeps the ``k``
    nearest waveforms of the union, reported as library rows: a row can come
    back up to ``m + 1`` times (``repeats_per_row``), once per matching
    waveform, and each counts as a match of its own.  Both indexes must share
    the matching space (alignment and its target, transform, noise floor);
    :meth:`build` makes the copies' index in the library index's space.

    Attributes: ``index``, ``copies`` (the two :class:`WaveformIndex`),
    ``n_copies``; ``count``, ``dimension``, ``tile_ids`` and ``metadata`` are
    the library index's.
    """

    def __init__(self, index: WaveformIndex, copies: WaveformIndex):
        if not isinstance(index, WaveformIndex) or not isinstance(copies, WaveformIndex):
            raise CrevkitTypeError(f"index and copies must be WaveformIndex objects, got {type(index).__name__} and "
                                   f"{type(copies).__name__}")
        n, m = index.metadata, copies.metadata
        if copies.count % index.count:
            raise CrevkitValueError(f"copies has {copies.count} rows, not a multiple of the library's {index.count}")
        for key in ("dimension", "transform", "alignment", "noise_floor"):
            if n.get(key) != m.get(key):
                raise CrevkitValueError(f"copies: its {key} ({m.get(key)!r}) differs from the library index's "
                                        f"({n.get(key)!r}); build it with IndexWithCopies.build")
        if m.get("copies_of", n["library_sha256"]) != n["library_sha256"]:
            raise IndexIntegrityError("copies: built from copies of another library (its copies_of hash differs "
                                      "from the library index's)")
        self.index = index
        self.copies = copies
        self.n_copies = copies.count // index.count

    @property
    def count(self) -> int:
        return self.index.count

    @property
    def dimension(self) -> int:
        return self.index.dimension

    @property
    def tile_ids(self) -> np.ndarray | None:
        return self.index.tile_ids

    @property
    def metadata(self) -> dict:
        return self.index.metadata

    @property
    def repeats_per_row(self) -> int:
        """The most times one query can return the same library row: its clean waveform and each copy."""
        return self.n_copies + 1

    def __repr__(self) -> str:
        return f"IndexWithCopies({self.index!r}, n_copies={self.n_copies})"

    @classmethod
    def build(cls, index: WaveformIndex, copies: Any, *, n_threads: int | None = None,
              progress: bool | None = None) -> "IndexWithCopies":
        """Index ``copies`` (array_like, (m · n, n_samples)) in ``index``'s matching space and HNSW settings.

        The copies' index takes the library index's alignment target,
        transform, noise floor, PCA size, graph and search parameters,
        deduplication and determinism, and records the library's hash
        (``copies_of``) so that it is never paired with another library.
        """
        if not isinstance(index, WaveformIndex):
            raise CrevkitTypeError(f"index must be a WaveformIndex, got {type(index).__name__}")
        rows = int(copies.shape[0]) if hasattr(copies, "shape") and len(copies.shape) == 2 else None
        if rows is None or rows == 0 or rows % index.count:
            raise CrevkitValueError(f"copies must hold a whole number of copies of the library's {index.count} rows, "
                                    f"got shape {getattr(copies, 'shape', None)}")
        meta = index.metadata
        al, hn = meta["alignment"], meta["hnsw"]
        tile_ids = None if index.tile_ids is None else np.tile(index.tile_ids, rows // index.count)
        built = WaveformIndex.build(
            copies, tile_ids=tile_ids, transform=meta["transform"], alignment=al["method"], align_target=al["target"],
            align_threshold=al["threshold"], interpolation=al["interpolation"], noise_floor=meta["noise_floor"],
            pca_components=meta["pca_components"], M=hn["M"], ef_construction=hn["ef_construction"],
            ef_search=hn["ef_search"], rerank=hn["rerank"], dedup=meta["dedup"]["enabled"],
            dedup_tolerance=meta["dedup"]["tolerance"], deterministic=hn["deterministic"], seed=hn["seed"],
            n_threads=n_threads, instrument=meta["instrument"], progress=progress)
        built.metadata["copies_of"] = meta["library_sha256"]
        return cls(index, built)

    def query(self, waveforms: Any, k: int = 30, *, offsets: Iterable[float] | None = None,
              ef_search: int | None = None, rerank: int | None = None, n_threads: int | None = None,
              return_tile_ids: bool = False):
        """The ``k`` nearest waveforms among the library and its copies, as library rows (see the class).

        Parameters and returns as :meth:`WaveformIndex.query`; rows may repeat.
        """
        k = check_int(k, "k", minimum=1, maximum=self.count)
        w = as_float32_array(waveforms, "waveforms", ndim=(1, 2))
        single = w.ndim == 1
        w2 = w[None] if single else w
        options = dict(offsets=offsets, ef_search=ef_search, rerank=rerank, n_threads=n_threads)
        r_lib, d_lib = self.index.query(w2, k, **options)
        r_cop, d_cop = self.copies.query(w2, k, **options)
        rows = np.concatenate([r_lib, r_cop % self.count], axis=1)
        dist = np.concatenate([d_lib, d_cop], axis=1)
        order = np.argsort(dist, axis=1, kind="stable")[:, :k]  # ties: the library's waveform first
        rows = np.take_along_axis(rows, order, axis=1)
        dist = np.take_along_axis(dist, order, axis=1)
        if return_tile_ids:
            if self.tile_ids is None:
                raise CrevkitValueError("this index has no tile ids; use the returned rows")
            rows = self.tile_ids[rows]
        return (rows[0], dist[0]) if single else (rows, dist)


# ----------------------------------------------------------------------------- helpers


def _prepare(w: np.ndarray, metadata: dict, offset: float) -> np.ndarray:
    al = metadata["alignment"]
    if al["method"] != "none":
        w = align_waveforms(w, al["method"], al["target"] + offset, threshold=al["threshold"],
                            interpolation=al["interpolation"])
    elif offset:
        w = shift_waveforms(w, offset, al["interpolation"])
    floor = float(metadata.get("noise_floor", 0.0))
    if floor > 0:
        w = np.where(w >= floor * w.max(axis=1, keepdims=True), w, np.float32(0.0))
    return transform_waveforms(w, metadata["transform"])


def _project(v: np.ndarray, mean: np.ndarray, comps_t: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray((v - mean) @ comps_t, dtype=np.float32)


def rerank_distances(vectors: Any, queries: Any, labels: Any, *, n_threads: int | None = None) -> np.ndarray:
    """Exact squared distances ``max(2 − 2·q·v, 0)`` of unit queries to their candidate rows.

    The re-rank step of :meth:`WaveformIndex.query` (C++ kernel: a prefetched
    gather of the candidate rows, GIL released, OpenMP over queries).  Its
    NumPy twin is :func:`crevkit.reference.index.rerank_distances`.

    Parameters
    ----------
    vectors : ndarray of float32, shape (n, d)
        Unit library vectors; must already be float32 and C-contiguous (a
        library is large: no hidden copy).
    queries : array_like, shape (m, d)
        Unit query vectors (converted once to float32, C order).
    labels : array_like of int, shape (m, c)
        Candidate rows of ``vectors`` for each query, each in ``[0, n)``.
    n_threads : int, optional
        Threads (default all usable cores).

    Returns
    -------
    ndarray of float32, shape (m, c): the distance of query ``i`` to row
    ``labels[i, j]``, in the candidates' order.
    """
    from . import _core

    v, q, lab = _rerank_arguments(vectors, queries, labels, convert_vectors=False)
    return _core.rerank_distances(v, q, lab, resolve_threads(n_threads))


def _rerank_arguments(vectors: Any, queries: Any, labels: Any, *, convert_vectors: bool):
    """Validated (vectors, queries, labels) of :func:`rerank_distances` and its twin: float32, float32, int64.

    Label ranges are checked by the consumer (the kernel while it reads them).
    ``convert_vectors`` (the twin) also converts and scans ``vectors`` for
    infinities; the kernel's library is large and taken as it is.
    """
    v = as_float32_array(vectors, "vectors", ndim=2, convert=convert_vectors, check_inf=convert_vectors)
    q = as_float32_array(queries, "queries", ndim=2, allow_nan=False)
    if q.shape[1] != v.shape[1]:
        raise CrevkitValueError(f"queries has {q.shape[1]} columns, vectors has {v.shape[1]}")
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[0] != q.shape[0]:
        raise CrevkitValueError(f"labels must have shape ({q.shape[0]}, c) (one row per query), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise CrevkitTypeError(f"labels must hold integers, got dtype {lab.dtype}")
    return v, q, np.ascontiguousarray(lab, dtype=np.int64)


def _dedup(vectors: np.ndarray, tol: float):
    """Groups of vectors equal after rounding to ``tol``; returns (groups, offsets, representatives)."""
    n = vectors.shape[0]
    keys = np.empty(n, dtype="S16")
    for s in range(0, n, 8192):
        q = np.round(vectors[s:s + 8192] / tol).astype(np.int32)
        keys[s:s + q.shape[0]] = [hashlib.blake2b(r.tobytes(), digest_size=16).digest() for r in q]
    _, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    # order groups by their first row, members by row
    group_order = np.argsort(first, kind="stable")
    rank = np.empty_like(group_order)
    rank[group_order] = np.arange(group_order.size)
    gid = rank[inverse.ravel()]
    groups = np.argsort(gid, kind="stable").astype(np.int64)
    sizes = np.bincount(gid, minlength=group_order.size)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    reps = groups[offsets[:-1]]
    return groups, offsets, reps


def exact_search(library_vectors: np.ndarray, queries: np.ndarray, k: int, batch_size: int = 256,
                 n_threads: int | None = None):
    """Exact k-NN by squared L2 between prepared unit vectors (NumPy GEMM, blocked and threaded).

    Parameters
    ----------
    library_vectors : ndarray (n, d)
        Unit-L2 library vectors (float32).
    queries : ndarray (q, d)
        Unit-L2 query vectors (float32).
    k : int
        Neighbours per query (capped at ``n``).
    batch_size : int
        Queries per GEMM block (default 256; capped so that a block's
        similarity buffer stays under 256 MiB).
    n_threads : int, optional
        Threads (default all usable cores).  Each thread runs its own
        single-threaded GEMM and selection on every ``n_threads``-th block
        (NumPy releases the GIL in both).

    Returns
    -------
    rows : ndarray of int64, shape (q, k)
    distances : ndarray of float32, shape (q, k)
        ``max(2 − 2·s, 0)`` with ``s`` the float32 dot product, ascending;
        equal distances are ordered by library row.
    """
    lib = np.ascontiguousarray(library_vectors, dtype=np.float32)
    q = np.ascontiguousarray(queries, dtype=np.float32)
    if lib.ndim != 2 or q.ndim != 2 or lib.shape[1] != q.shape[1]:
        raise CrevkitValueError(f"exact_search: library {lib.shape} and queries {q.shape} must be 2-D with the "
                                "same number of columns")
    n, nq = lib.shape[0], q.shape[0]
    k = min(check_int(k, "k", minimum=1), n)
    batch_size = max(1, min(check_int(batch_size, "batch_size", minimum=1), (1 << 26) // max(n, 1)))
    rows = np.empty((nq, k), np.int64)
    dist = np.empty((nq, k), np.float32)
    starts = list(range(0, nq, batch_size))
    threads = max(1, min(resolve_threads(n_threads), len(starts)))

    def work(tid: int) -> None:
        buf = np.empty((min(batch_size, nq), n), np.float32)  # the one GEMM temporary, reused
        for s in starts[tid::threads]:
            m = min(batch_size, nq - s)
            np.matmul(q[s:s + m], lib.T, out=buf[:m])
            rows[s:s + m], dist[s:s + m] = _top_k_similar(buf[:m], k)

    if threads == 1:
        work(0)
    else:
        # one single-threaded GEMM per thread: BLAS's own threads would only oversubscribe the cores
        with blas_threads(1), concurrent.futures.ThreadPoolExecutor(threads) as pool:
            list(pool.map(work, range(threads)))
    return rows, dist


def _top_k_similar(sim: np.ndarray, k: int):
    """Rows and distances ``max(2 − 2·s, 0)`` of the ``k`` largest similarities of each row of ``sim``.

    A lower bound of each row's k-th largest value (the k-th largest of the
    maxima of ``8k`` disjoint column groups: k distinct elements reach it)
    keeps a few more than k candidates in one vectorized pass; only those are
    sorted (by distance, then column).
    """
    m, n = sim.shape
    groups = 8 * k
    if n >= 2 * groups:
        width = n // groups
        gmax = sim[:, :groups * width].reshape(m, groups, width).max(axis=2)
        bound = np.partition(gmax, groups - k, axis=1)[:, groups - k]
        r, c = np.nonzero(sim >= bound[:, None])
    else:
        r, c = np.divmod(np.arange(m * n), n)
    d = np.maximum(np.float32(2.0) - np.float32(2.0) * sim[r, c], np.float32(0.0))
    order = np.lexsort((c, d, r))
    count = np.bincount(r, minlength=m)
    first = np.cumsum(count) - count
    sel = order[(first[:, None] + np.arange(k)).ravel()]
    return c[sel].reshape(m, k).astype(np.int64), d[sel].reshape(m, k)


def match_shots(index: WaveformIndex, waveforms: Any, k: int = 30, *, batch_size: int = 16384,
                offsets: Iterable[float] | None = None, n_threads: int | None = None,
                progress: bool | None = None):
    """Match every shot waveform to its ``k`` nearest library rows, streaming in batches.

    Parameters
    ----------
    index : WaveformIndex or IndexWithCopies
    waveforms : array_like (n, n_samples): ndarray, memmap or Zarr array (read batch by batch)
    k, offsets, n_threads
        As in :meth:`WaveformIndex.query`.
    batch_size : int
        Shots read and matched at a time.

    Returns
    -------
    rows : ndarray of int64, shape (n, k)
    distances : ndarray of float32, shape (n, k)
    """
    from ._progress import StageCounts, progress as progress_bar

    if not isinstance(index, (WaveformIndex, IndexWithCopies)):
        raise CrevkitTypeError(f"index must be a WaveformIndex or an IndexWithCopies, got {type(index).__name__}")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    k = check_int(k, "k", minimum=1, maximum=index.count)
    if not hasattr(waveforms, "shape") or not hasattr(waveforms, "__getitem__"):
        waveforms = as_float32_array(waveforms, "waveforms", ndim=2)
    if len(waveforms.shape) != 2:
        raise CrevkitValueError(f"waveforms must be 2-D (n, n_samples), got shape {waveforms.shape}")
    n = int(waveforms.shape[0])
    rows = np.empty((n, k), np.int64)
    dist = np.empty((n, k), np.float32)
    counts = StageCounts("match", found=n)
    starts = range(0, n, batch_size)
    for s in progress_bar(starts, desc="match", total=len(starts), unit="batch",
                          disable=None if progress is None else not progress):
        block = np.asarray(waveforms[s:s + batch_size])
        try:
            r, d = index.query(block, k=k, offsets=offsets, n_threads=n_threads)
        except CrevkitValueError as exc:
            raise CrevkitValueError(f"shots {s}..{s + block.shape[0] - 1}: {exc}") from None
        rows[s:s + r.shape[0]] = r
        dist[s:s + r.shape[0]] = d
        counts.done += r.shape[0]
    counts.report()
    return rows, dist
