"""Per-shot crevasse probability from the labels of its matched tiles.

For a shot with matches ``j = 1..k`` (library rows ``r_j`` at distances
``d_j``), let ``L`` be the matches whose tile has a label (not ``"unknown"``)
and ``w_j`` the match weights:

* ``p_crevasse = Σ_{j∈L} w_j [label_j == positive] / Σ_{j∈L} w_j``
  (NaN when ``L`` is empty);
* ``unknown_share = (k_valid − |L|) / k_valid``: the share of the valid
  matches whose tile is not labelled (1 when no valid match);
* ``confidence = (|L| / k) · exp(−mean_{j∈L} d_j / distance_scale)`` in [0, 1]:
  how much of the neighbourhood is labelled, times how close the labelled
  matches are (0 when ``L`` is empty).  ``k`` counts all match slots, so
  padded (``-1``) matches lower the confidence too.

Weights (``weighting``):

``"uniform"`` (default)
    ``w_j = 1``: the share of the k matches that are crevassed, as in the talk.
``"inverse_distance"``
    ``w_j = 1 / (d_j + eps)``, ``eps = 1e-4`` (distance units).
``"softmax"``
    ``w_j = exp(−(d_j − min_j d_j) / temperature)``.

Distances are in the units of the index: squared Euclidean distances between
unit vectors for :class:`crevkit.index.WaveformIndex` (``2 − 2 cos``), so the
defaults ``temperature = 0.02`` and ``distance_scale = 0.1`` correspond to
cosine similarities of 0.99 and 0.95.  A match row of ``-1`` or a
non-finite distance is a missing match (ignored).

Noisy shots (``snr``): the labels of a weak shot's matches say little about
its surface (on the demo scene, shots under SNR 10 ranked crevassed against
uncrevassed footprints with AUC ≈ 0.6, shots over 20 with ≈ 0.93), yet the
share of crevassed matches of such a shot is as often 0 or 1 as a strong
shot's.  Given each shot's peak SNR, the share is pulled toward the prior in
proportion to how little the shot can be trusted:

* ``reliability = snr² / (snr² + snr_half²)`` (``snr_half``: the SNR at which a
  shot's own evidence and the prior count equally; NaN SNR: 1, no pull);
* ``p_crevasse = prior + reliability · (share − prior)``, ``prior`` = the
  positive share among the labelled tiles (the library's base rate), or
  the spatial prior below;
* ``p_matches`` keeps the share itself, and ``confidence`` is multiplied by
  the reliability.

A strong shot keeps its share; a weak one lands near the base rate, i.e. in
the middle of the ranking instead of at either end, which is what its
evidence supports (demo scene: shot AUC 0.79 → 0.86, Brier 0.111 → 0.099).

Spatial prior (``neighbour_radius`` > 0): crevasse fields are spatially
coherent (ICESat shots are 172 m apart along track, footprints ~70 m), so a
weak shot is better pulled toward what its *neighbours* say than toward the
global base rate.  This is empirical-Bayes shrinkage toward a local mean
(:func:`spatial_prior`).  For shot ``i``, over the other shots ``j ≠ i`` of
the same period (the map stage's ``period``: a crevasse field may appear or
vanish between campaigns) with a finite share and ``d_ij < R`` (Euclidean
distance in the projected x/y, metres in EPSG:3413):

* ``prior_i = (Σ_j g(d_ij) rel_j share_j + m · base) / (Σ_j g(d_ij) rel_j + m)``,
  ``base`` the labelled tiles' positive share, ``m`` (``prior_weight``) the
  base rate's weight in pseudo-shots, ``rel_j`` the neighbours'
  reliabilities (a weak neighbour counts for little) and ``g`` the distance
  kernel: ``"flat"`` (``g = 1``) or ``"gaussian"``
  (``g = exp(−d² / (2 (R/2)²))``, cut at ``R``);
* ``p_crevasse = prior_i + rel_i · (share_i − prior_i)``.

The shot's own share never enters its prior (no double counting); NaN shares
are no neighbours; a shot with no neighbour (or only zero-weight ones) gets
``prior_i = base``, i.e. exactly the global pull; ``R = 0`` turns the
spatial prior off.  With ``m = 0`` the prior is the neighbours' weighted mean
alone (``base`` only for isolated shots).  The table gains ``prior``.  No
truth is used: only the shots' own shares, SNRs and positions.

Defaults (``R = 250`` m, ``m = 0.5``, Gaussian, ``snr_half = 20``), measured
on the demo scene (``crevkit run --from probability``, both seeds, the same
matches): shot AUC 0.909 → 0.928 (Brier 0.090 → 0.084) on seed 0 and
0.882 → 0.901 (0.082 → 0.078) on seed 1 against ``m = 1``, ``snr_half = 10``;
the global pull gave 0.863 / 0.853.  ``snr_half`` 20–30 with ``m = 0.5``
was best on both seeds (10: −0.01 to −0.015, 50: −0.005 to −0.01; ``m = 2``
−0.01); a stronger pull lets a strong shot's neighbours speak too.  Radii of
175–300 m (one along-track spacing plus a footprint) do about as well;
1–2 km dilute the neighbourhood with other surfaces (AUC ≈ 0.86–0.87), and
below the 172 m shot spacing the gain shrinks.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._progress import StageCounts
from ._validation import check_finite_number, check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = ["shot_probabilities", "snr_reliability", "shrink_toward_prior", "shot_snr", "labelled_prior",
           "spatial_prior", "apply_snr", "WEIGHTINGS", "NEIGHBOUR_KERNELS"]

WEIGHTINGS = ("uniform", "inverse_distance", "softmax")
NEIGHBOUR_KERNELS = ("flat", "gaussian")
_EPS = 1e-4
SNR_HALF = 20.0  # default: best of 10 / 20 / 30 / 50 with the spatial prior on both demo seeds (module docstring)
NEIGHBOUR_RADIUS = 250.0  # metres; default of spatial_prior (the pipeline's default is in its config schema)
PRIOR_WEIGHT = 0.5  # base-rate pseudo-shots of spatial_prior (0.5 / 1 / 2 measured; module docstring)


def snr_reliability(snr: Any, snr_half: float = SNR_HALF) -> np.ndarray:
    """``snr² / (snr² + snr_half²)`` per shot, in [0, 1]; non-finite SNR gives 1 (nothing known: no pull).

    ``snr_half = 0`` gives 1 everywhere (shrinkage off).
    """
    s = np.asarray(snr, dtype=np.float64)
    snr_half = float(snr_half)
    if not snr_half >= 0.0:
        raise CrevkitValueError(f"snr_half must be >= 0, got {snr_half!r}")
    if snr_half == 0.0:
        return np.ones(s.shape)
    s2 = np.square(np.clip(np.nan_to_num(s, nan=np.inf, posinf=np.inf, neginf=0.0), 0.0, None))
    with np.errstate(invalid="ignore"):
        r = np.where(np.isinf(s2), 1.0, s2 / (s2 + snr_half * snr_half))
    return r


def shrink_toward_prior(p: Any, snr: Any, prior: float, snr_half: float = SNR_HALF) -> np.ndarray:
    """``prior + snr_reliability(snr) · (p − prior)``: a weak shot's share pulled toward the base rate.

    NaN ``p`` stays NaN.  See the module docstring.
    """
    p = np.asarray(p, dtype=np.float64)
    prior = float(prior)
    if not 0.0 <= prior <= 1.0:
        raise CrevkitValueError(f"prior must be in [0, 1], got {prior!r}")
    r = snr_reliability(snr, snr_half)
    if r.shape != p.shape:
        raise CrevkitValueError(f"snr shape {r.shape} differs from p shape {p.shape}")
    return prior + r * (p - prior)


def shot_snr(waveforms: Any, bg_mean: Any, bg_sd: Any, batch_size: int = 65536) -> np.ndarray:
    """Peak SNR of recorded shots: ``(max(waveform) − bg_mean) / bg_sd`` (NaN where undefined).

    ``waveforms`` may be memory-mapped (read ``batch_size`` rows at a time);
    NaN samples (short records) are ignored.
    """
    n = len(waveforms)
    mean = np.asarray(bg_mean, dtype=np.float64)
    sd = np.asarray(bg_sd, dtype=np.float64)
    if mean.shape != (n,) or sd.shape != (n,):
        raise CrevkitValueError(f"bg_mean and bg_sd must have shape ({n},), got {mean.shape} and {sd.shape}")
    peak = np.full(n, np.nan)
    for s in range(0, n, batch_size):
        block = np.asarray(waveforms[s:s + batch_size], dtype=np.float64)
        some = np.isfinite(block).any(axis=1)
        peak[s:s + len(block)][some] = np.nanmax(block[some], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(sd > 0, (peak - mean) / sd, np.nan)


def labelled_prior(tile_labels: Any, positive: str = "crevasse") -> float:
    """Share of the labelled tiles (not ``unknown``/empty) whose label is ``positive`` (NaN if none)."""
    lab = np.array([("" if v is None else str(v)).strip().lower() for v in np.asarray(tile_labels, dtype=object)])
    labelled = (lab != "") & (lab != "unknown")
    return float((lab[labelled] == positive.strip().lower()).mean()) if labelled.any() else float("nan")


def _check_real(value: Any, name: str) -> float:
    out = check_finite_number(value, name)
    if out < 0.0:
        raise CrevkitValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return out


def _check_vector(value: Any, name: str, n: int | None) -> np.ndarray:
    if value is None or isinstance(value, (str, bytes)):
        raise CrevkitTypeError(f"{name} must be a numeric array, got {type(value).__name__}")
    arr = np.asarray(value)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise CrevkitTypeError(f"{name} must hold real numbers, got dtype {arr.dtype}")
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        want = "(n,)" if n is None else f"({n},)"
        raise CrevkitValueError(f"{name} must have shape {want}, got {arr.shape}")
    return arr.astype(np.float64, copy=False)


def spatial_prior(x: Any, y: Any, share: Any, reliability: Any, base: float, *,
                  radius: float = NEIGHBOUR_RADIUS, prior_weight: float = PRIOR_WEIGHT, kernel: str = "gaussian",
                  groups: Any = None, block_size: int = 65536) -> np.ndarray:
    """Local prior of every shot: its neighbours' reliability-weighted mean share, with the base rate as ``m`` shots.

    ``prior_i = (Σ_{j≠i, d_ij<R} g(d_ij) rel_j share_j + m·base) / (Σ_{j≠i, d_ij<R} g(d_ij) rel_j + m)``
    (see the module docstring).

    Parameters
    ----------
    x, y : array_like of float, shape (n,)
        Shot positions in a projected CRS (metres; EPSG:3413 in the pipeline).
        A shot with a non-finite position is nobody's neighbour and gets ``base``.
    share : array_like of float, shape (n,)
        Each shot's share of crevassed matches (``p_matches``); NaN = no
        labelled match (not a neighbour; its own prior is still computed).
    reliability : array_like of float, shape (n,)
        :func:`snr_reliability` of each shot, in [0, 1].
    base : float
        The global base rate, in [0, 1].
    radius : float, default 250
        ``R`` (metres): neighbours lie strictly closer than this.  0: every
        prior is ``base`` (the global pull).
    prior_weight : float, default 0.5
        ``m``: the base rate's weight, in shots of reliability 1 (>= 0).
    kernel : {"flat", "gaussian"}, default "gaussian"
        ``g(d)``: 1, or ``exp(−d² / (2 (R/2)²))``.
    groups : array_like, shape (n,), optional
        Only shots of the same group are neighbours (the pipeline passes the
        map period of each shot).  Default: one group.
    block_size : int
        Shots queried at a time (bounds the memory of the neighbour pairs).

    Returns
    -------
    numpy.ndarray of float64, shape (n,)
        The priors, in [0, 1].

    Raises
    ------
    CrevkitValueError, CrevkitTypeError
        Shapes disagree, a value is out of range, or an argument has the wrong type
        (the message names the argument).
    """
    from scipy.spatial import cKDTree

    share = _check_vector(share, "share", None)
    n = share.shape[0]
    x = _check_vector(x, "x", n)
    y = _check_vector(y, "y", n)
    rel = _check_vector(reliability, "reliability", n)
    if np.any(~np.isfinite(rel)) or np.any(rel < 0) or np.any(rel > 1):
        raise CrevkitValueError("reliability must be finite and in [0, 1]")
    finite_share = share[np.isfinite(share)]
    if np.any(finite_share < 0) or np.any(finite_share > 1):
        raise CrevkitValueError("share must be in [0, 1] (or NaN)")
    base = _check_real(base, "base")
    if base > 1.0:
        raise CrevkitValueError(f"base must be in [0, 1], got {base!r}")
    radius = _check_real(radius, "radius")
    m = _check_real(prior_weight, "prior_weight")
    if kernel not in NEIGHBOUR_KERNELS:
        raise CrevkitValueError(f"kernel must be one of {NEIGHBOUR_KERNELS}, got {kernel!r}")
    block_size = check_int(block_size, "block_size", minimum=1)
    if groups is None:
        codes = np.zeros(n, np.int64)
    else:
        g_arr = np.asarray(groups, dtype=object)
        if g_arr.shape != (n,):
            raise CrevkitValueError(f"groups must have shape ({n},), got {g_arr.shape}")
        _, codes = np.unique(g_arr.astype(str), return_inverse=True)
        codes = codes.reshape(-1)

    num = np.zeros(n)
    den = np.zeros(n)
    located = np.isfinite(x) & np.isfinite(y)
    if radius > 0 and n > 1:
        sigma2 = 2.0 * (radius / 2.0) ** 2
        for code in np.unique(codes[located]):
            members = np.flatnonzero(located & (codes == code))
            sources = members[np.isfinite(share[members]) & (rel[members] > 0)]
            if sources.size == 0:
                continue
            src_xy = np.column_stack([x[sources], y[sources]])
            tree = cKDTree(src_xy)
            src_val = rel[sources] * share[sources]
            for b in range(0, members.size, block_size):
                targets = members[b:b + block_size]
                qtree = cKDTree(np.column_stack([x[targets], y[targets]]))
                pairs = qtree.sparse_distance_matrix(tree, radius, output_type="ndarray")
                ti, sj, d = pairs["i"], pairs["j"], pairs["v"]
                keep = (d < radius) & (targets[ti] != sources[sj])  # strictly inside R; never the shot itself
                ti, sj, d = ti[keep], sj[keep], d[keep]
                g = np.ones_like(d) if kernel == "flat" else np.exp(-(d * d) / sigma2)
                num[targets] += np.bincount(ti, weights=g * src_val[sj], minlength=targets.size)
                den[targets] += np.bincount(ti, weights=g * rel[sources][sj], minlength=targets.size)
    total = den + m
    with np.errstate(invalid="ignore", divide="ignore"):
        prior = np.where(total > 0, (num + m * base) / np.where(total > 0, total, 1.0), base)
    return np.clip(prior, 0.0, 1.0)


def shot_probabilities(match_rows: Any, match_distances: Any, tile_labels: Any, *, weighting: str = "uniform",
                       temperature: float = 0.02, distance_scale: float = 0.1, positive: str = "crevasse",
                       snr: Any = None, snr_half: float = SNR_HALF, batch_size: int = 262144) -> Any:
    """p(crevasse), confidence and unknown share for every shot (see the module docstring).

    Parameters
    ----------
    match_rows : array_like of int, shape (n_shots, k)
        Library/tile rows of each shot's matches (``-1`` = no match).
    match_distances : array_like of float, shape (n_shots, k)
        Their distances (converted to float64 internally).
    tile_labels : array_like of str, shape (n_tiles,)
        Label of each tile row; ``"unknown"``, empty or None = not labelled.
    weighting : {"uniform", "inverse_distance", "softmax"}, default "uniform"
    temperature : float, default 0.02
        Softmax temperature (distance units).
    distance_scale : float, default 0.1
        Distance at which the confidence drops by a factor e.
    positive : str, default "crevasse"
        The label whose share is the probability.
    snr : array_like of float, shape (n_shots,), optional
        Peak SNR of each shot (:func:`shot_snr`).  Given, ``p_crevasse`` is the
        share pulled toward the labelled tiles' positive share by
        :func:`snr_reliability` (module docstring), and the table gains
        ``p_matches`` (the share itself) and ``reliability``.
    snr_half : float, default 20
        The SNR at which a shot's share and the prior weigh the same (0: no pull).
    batch_size : int
        Shots processed at a time (bounds memory for millions of shots).

    Returns
    -------
    pandas.DataFrame
        One row per shot: ``p_crevasse`` (float64, NaN if no labelled match),
        ``confidence`` (float64 in [0, 1]), ``n_labelled`` (int32),
        ``n_matches`` (int32, valid matches), ``unknown_share`` (float64),
        ``mean_distance`` (float64, mean distance of the labelled matches).

    Raises
    ------
    CrevkitValueError
        Shapes disagree, rows outside ``[-1, n_tiles)``, or a bad parameter.
    """
    import pandas as pd

    rows = np.asarray(match_rows)
    dist = np.asarray(match_distances)
    if rows.ndim != 2:
        raise CrevkitValueError(f"match_rows must be 2-D (n_shots, k), got shape {rows.shape}")
    if not np.issubdtype(rows.dtype, np.integer):
        raise CrevkitTypeError(f"match_rows must hold integers, got dtype {rows.dtype}")
    if dist.shape != rows.shape:
        raise CrevkitValueError(f"match_distances shape {dist.shape} differs from match_rows shape {rows.shape}")
    if not (np.issubdtype(dist.dtype, np.floating) or np.issubdtype(dist.dtype, np.integer)):
        raise CrevkitTypeError(f"match_distances must hold real numbers, got dtype {dist.dtype}")
    if rows.shape[1] == 0:
        raise CrevkitValueError("match_rows has no match column (k = 0)")
    labels = np.asarray(tile_labels, dtype=object)
    if labels.ndim != 1 or labels.size == 0:
        raise CrevkitValueError(f"tile_labels must be a non-empty 1-D array, got shape {labels.shape}")
    if weighting not in WEIGHTINGS:
        raise CrevkitValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
    temperature = check_positive(temperature, "temperature")
    distance_scale = check_positive(distance_scale, "distance_scale")
    batch_size = check_int(batch_size, "batch_size", minimum=1)
    if rows.size and (rows.min() < -1 or rows.max() >= labels.size):
        raise CrevkitValueError(f"match_rows must be in [-1, {labels.size}) (tile_labels has {labels.size} tiles), "
                                f"got range [{rows.min()}, {rows.max()}]")
    if np.any(dist[np.isfinite(dist)] < 0):
        raise CrevkitValueError("match_distances must be >= 0")
    if snr is not None and np.shape(snr) != (rows.shape[0],):
        raise CrevkitValueError(f"snr must have shape ({rows.shape[0]},), got {np.shape(snr)}")
    snr_reliability(0.0, snr_half)  # validates snr_half

    lab = np.array([("" if v is None else str(v)).strip().lower() for v in labels], dtype=object)
    # per-tile codes, with one extra slot at the end for row -1
    labelled = np.append((lab != "") & (lab != "unknown"), False)
    is_pos = np.append(lab == positive.strip().lower(), False)

    n, k = rows.shape
    p = np.full(n, np.nan)
    conf = np.zeros(n)
    n_lab = np.zeros(n, np.int32)
    n_valid = np.zeros(n, np.int32)
    unknown = np.ones(n)
    mean_d = np.full(n, np.nan)
    for s in range(0, n, batch_size):
        r = rows[s:s + batch_size].astype(np.int64)
        d = dist[s:s + batch_size].astype(np.float64)
        valid = (r >= 0) & np.isfinite(d)
        r = np.where(valid, r, -1)
        lm = labelled[r] & valid
        pm = is_pos[r] & lm
        if weighting == "uniform":
            w = np.ones_like(d)
        elif weighting == "inverse_distance":
            w = 1.0 / (np.where(valid, d, 0.0) + _EPS)
        else:
            dmin = np.min(np.where(valid, d, np.inf), axis=1, keepdims=True)
            dmin = np.where(np.isfinite(dmin), dmin, 0.0)
            w = np.exp(-(np.where(valid, d, dmin) - dmin) / temperature)
        w = np.where(lm, w, 0.0)
        wsum = w.sum(axis=1)
        nl = lm.sum(axis=1)
        nv = valid.sum(axis=1)
        sl = slice(s, s + r.shape[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            p[sl] = np.where(wsum > 0, (w * pm).sum(axis=1) / np.where(wsum > 0, wsum, 1.0), np.nan)
            md = np.where(nl > 0, np.where(lm, d, 0.0).sum(axis=1) / np.maximum(nl, 1), np.nan)
        n_lab[sl] = nl
        n_valid[sl] = nv
        unknown[sl] = np.where(nv > 0, (nv - nl) / np.maximum(nv, 1), 1.0)
        mean_d[sl] = md
        conf[sl] = np.where(nl > 0, (nl / k) * np.exp(-np.nan_to_num(md) / distance_scale), 0.0)
    StageCounts("probability", found=n, done=int(np.isfinite(p).sum()), skipped=int((~np.isfinite(p)).sum()),
                extra={"weighting": weighting}).report()
    table = pd.DataFrame({"p_crevasse": p, "confidence": np.clip(conf, 0.0, 1.0), "n_labelled": n_lab,
                          "n_matches": n_valid, "unknown_share": unknown, "mean_distance": mean_d})
    return table if snr is None else apply_snr(table, snr, labels, snr_half=snr_half, positive=positive)


def apply_snr(table: Any, snr: Any, tile_labels: Any, *, snr_half: float = SNR_HALF,
              positive: str = "crevasse", x: Any = None, y: Any = None, groups: Any = None,
              neighbour_radius: float = 0.0, prior_weight: float = PRIOR_WEIGHT,
              neighbour_kernel: str = "gaussian") -> Any:
    """A :func:`shot_probabilities` table with the SNR pull toward the prior applied (a new table).

    ``p_crevasse`` becomes ``prior + reliability · (share − prior)``;
    ``confidence`` is multiplied by the reliability; ``p_matches`` (the
    share), ``reliability`` and ``prior`` are added.  The pipeline applies it
    after computing the shares, locally or in Dask tasks alike.

    Parameters
    ----------
    table : pandas.DataFrame
        A :func:`shot_probabilities` table (its ``p_crevasse`` is the share).
    snr : array_like of float, shape (n_shots,)
        Peak SNR of each shot.
    tile_labels : array_like of str
        Tile labels: their positive share is the base rate.
    snr_half : float, default 20
    positive : str, default "crevasse"
    x, y : array_like of float, shape (n_shots,), optional
        Projected positions (metres), needed when ``neighbour_radius > 0``.
    groups : array_like, shape (n_shots,), optional
        Period of each shot: only shots of the same period are neighbours.
    neighbour_radius : float, default 0
        ``R`` of :func:`spatial_prior` (metres); 0: the prior is the global
        base rate for every shot.
    prior_weight : float, default 0.5
        ``m`` of :func:`spatial_prior`.
    neighbour_kernel : {"flat", "gaussian"}, default "gaussian"
    """
    out = table.copy()
    share = out["p_crevasse"].to_numpy(dtype=np.float64)
    snr = np.asarray(snr, dtype=np.float64)
    if snr.shape != share.shape:
        raise CrevkitValueError(f"snr must have shape {share.shape}, got {snr.shape}")
    radius = _check_real(neighbour_radius, "neighbour_radius")
    _check_real(prior_weight, "prior_weight")
    if neighbour_kernel not in NEIGHBOUR_KERNELS:
        raise CrevkitValueError(f"neighbour_kernel must be one of {NEIGHBOUR_KERNELS}, got {neighbour_kernel!r}")
    if radius > 0 and (x is None or y is None):
        raise CrevkitValueError("x and y are needed when neighbour_radius > 0")
    reliability = snr_reliability(snr, snr_half)
    base = labelled_prior(tile_labels, positive)
    prior = np.full(share.shape, base)
    if np.isfinite(base):  # no labelled tile: every share is NaN anyway
        if radius > 0:
            prior = spatial_prior(x, y, share, reliability, base, radius=radius, prior_weight=prior_weight,
                                  kernel=neighbour_kernel, groups=groups)
        out["p_crevasse"] = prior + reliability * (share - prior)
    out["confidence"] = np.clip(out["confidence"].to_numpy() * reliability, 0.0, 1.0)
    out["p_matches"] = share
    out["reliability"] = reliability
    out["prior"] = prior
    return out
