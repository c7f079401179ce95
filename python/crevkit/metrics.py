"""Evaluation metrics against synthetic-scene truth.

Shot level: ROC AUC and Brier score of ``p_crevasse`` (scikit-learn), shots
with a NaN probability left out.  Tile level: cluster purity.  Map level:
change-map accuracy where crevassing appeared or vanished.
"""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from ._validation import check_finite_number
from .errors import CrevkitValueError

__all__ = ["roc_auc", "brier", "cluster_purity", "change_accuracy", "change_classes"]


def _pair(truth: Any, score: Any, name: str) -> tuple[np.ndarray, np.ndarray]:
    t = np.asarray(truth)
    s = np.asarray(score, dtype=np.float64)
    if t.ndim != 1 or s.shape != t.shape:
        raise CrevkitValueError(f"truth and {name} must be 1-D of one length, got {t.shape} and {s.shape}")
    if t.dtype == object or not (t.dtype == bool or np.issubdtype(t.dtype, np.number)):
        raise CrevkitValueError(f"truth must be boolean (or 0/1), got dtype {t.dtype}")
    tf = t.astype(np.float64)
    if np.any(np.isfinite(tf) & (tf != 0) & (tf != 1)):
        raise CrevkitValueError("truth must be boolean (or 0/1)")
    ok = np.isfinite(s) & np.isfinite(tf)
    return tf[ok].astype(bool), s[ok]


def roc_auc(truth_bool: Any, score: Any) -> float:
    """Area under the ROC curve of ``score`` against boolean truth (NaN scores left out).

    Returns NaN (with a warning) when the remaining truth holds one class only.
    """
    from sklearn.metrics import roc_auc_score

    t, s = _pair(truth_bool, score, "score")
    if t.size == 0 or t.all() or not t.any():
        warnings.warn("roc_auc: truth has a single class among the scored shots; AUC undefined", RuntimeWarning,
                      stacklevel=2)
        return float("nan")
    return float(roc_auc_score(t, s))


def brier(truth: Any, p: Any) -> float:
    """Brier score (mean squared error of the probability ``p`` against 0/1 truth), NaN ``p`` left out."""
    from sklearn.metrics import brier_score_loss

    t, s = _pair(truth, p, "p")
    if t.size == 0:
        return float("nan")
    if np.any((s < 0) | (s > 1)):
        raise CrevkitValueError("p must lie in [0, 1]")
    return float(brier_score_loss(t, s))


def cluster_purity(tile_cluster: Any, tile_truth_bool: Any) -> float:
    """Purity of the clusters against per-tile truth: Σ_c max_class n(c, class) / N.

    ``tile_truth_bool`` may also hold class names or integers (multi-class
    purity).  Tiles in cluster ``-1`` count as one more cluster.  A value of
    1 means every cluster holds a single truth class.
    """
    c = np.asarray(tile_cluster)
    t = np.asarray(tile_truth_bool)
    if c.ndim != 1 or t.shape != c.shape or c.size == 0:
        raise CrevkitValueError(f"tile_cluster and tile_truth_bool must be non-empty 1-D of one length, "
                                f"got {c.shape} and {t.shape}")
    import pandas as pd

    tab = pd.crosstab(c, t)
    return float(tab.max(axis=1).sum() / c.size)


def change_classes(change: np.ndarray, threshold: float) -> np.ndarray:
    """−1 (vanished), 0 (no change), +1 (appeared) where ``|change| > threshold``; NaN stays NaN."""
    out = np.where(change > threshold, 1.0, np.where(change < -threshold, -1.0, 0.0))
    return np.where(np.isfinite(change), out, np.nan)


def _as_grid(a: Any, name: str) -> np.ndarray:
    if isinstance(a, (str, os.PathLike)):
        from .maps import read_raster

        return read_raster(a, 1)[0]
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise CrevkitValueError(f"{name} must be a 2-D array or a raster path, got shape {arr.shape}")
    return arr


def change_accuracy(change_raster: Any, truth_change_raster: Any, *, threshold: float = 0.25) -> dict:
    """Accuracy of a change map against a truth change map.

    Both are classified into vanished / none / appeared with ``|Δ| >
    threshold`` (a truth map of −1/0/+1 passes unchanged); cells NaN in either
    are left out.

    Parameters
    ----------
    change_raster, truth_change_raster : 2-D array_like or path to a raster (band 1)
        On the same grid.
    threshold : float, default 0.25
        Change in p (or in the truth crevassed fraction) that counts.

    Returns
    -------
    dict
        ``accuracy`` (all compared cells), ``appeared_recall`` and
        ``vanished_recall`` (share of the truth appeared / vanished cells the
        map gets right; NaN if there are none), ``changed_accuracy`` (the two
        together), ``n_cells``, ``n_appeared``, ``n_vanished``.
    """
    threshold = check_finite_number(threshold, "threshold")
    pred = _as_grid(change_raster, "change_raster")
    truth = _as_grid(truth_change_raster, "truth_change_raster")
    if pred.shape != truth.shape:
        raise CrevkitValueError(f"change_raster {pred.shape} and truth_change_raster {truth.shape} differ in shape")
    pc = change_classes(pred, threshold)
    tc = change_classes(truth, threshold)
    ok = np.isfinite(pc) & np.isfinite(tc)
    pc, tc = pc[ok], tc[ok]

    def share(mask: np.ndarray) -> float:
        return float((pc[mask] == tc[mask]).mean()) if mask.any() else float("nan")

    return {"accuracy": share(np.ones(pc.shape, bool)), "appeared_recall": share(tc == 1),
            "vanished_recall": share(tc == -1), "changed_accuracy": share(tc != 0), "n_cells": int(ok.sum()),
            "n_appeared": int((tc == 1).sum()), "n_vanished": int((tc == -1).sum())}
