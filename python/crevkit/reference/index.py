"""NumPy twin of the index re-rank kernel (:func:`crevkit.index.rerank_distances`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_float32_array
from ..errors import CrevkitTypeError, CrevkitValueError


def rerank_distances(vectors: Any, queries: Any, labels: Any, *, n_threads: int | None = None) -> np.ndarray:
    """``max(2 − 2·q·v, 0)`` for each query and its candidate rows, in float64, returned as float32.

    Same signature and result as :func:`crevkit.index.rerank_distances`
    (``n_threads`` is accepted and ignored): one gather and one dot product
    per query.
    """
    v = as_float32_array(vectors, "vectors", ndim=2)
    q = as_float32_array(queries, "queries", ndim=2, allow_nan=False)
    if q.shape[1] != v.shape[1]:
        raise CrevkitValueError(f"queries has {q.shape[1]} columns, vectors has {v.shape[1]}")
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.shape[0] != q.shape[0]:
        raise CrevkitValueError(f"labels must have shape ({q.shape[0]}, c) (one row per query), got {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise CrevkitTypeError(f"labels must hold integers, got dtype {lab.dtype}")
    if lab.size and (lab.min() < 0 or lab.max() >= v.shape[0]):
        raise CrevkitValueError(f"labels must be in [0, {v.shape[0]}) (rows of vectors)")
    out = np.empty(lab.shape, np.float64)
    for i in range(lab.shape[0]):
        out[i] = v[lab[i]].astype(np.float64) @ q[i].astype(np.float64)
    return np.maximum(2.0 - 2.0 * out, 0.0).astype(np.float32)
