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
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._progress import StageCounts
from ._validation import check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = ["shot_probabilities", "WEIGHTINGS"]

WEIGHTINGS = ("uniform", "inverse_distance", "softmax")
_EPS = 1e-4


def shot_probabilities(match_rows: Any, match_distances: Any, tile_labels: Any, *, weighting: str = "uniform",
                       temperature: float = 0.02, distance_scale: float = 0.1, positive: str = "crevasse",
                       batch_size: int = 262144) -> Any:
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
    return pd.DataFrame({"p_crevasse": p, "confidence": np.clip(conf, 0.0, 1.0), "n_labelled": n_lab,
                         "n_matches": n_valid, "unknown_share": unknown, "mean_distance": mean_d})
