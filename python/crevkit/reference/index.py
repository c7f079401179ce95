"""NumPy twin of the index re-rank kernel (:func:`crevkit.index.rerank_distances`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CrevkitValueError
from ..index import _rerank_arguments


def rerank_distances(vectors: Any, queries: Any, labels: Any, *, n_threads: int | None = None) -> np.ndarray:
    """``max(2 − 2·q·v, 0)`` for each query and its candidate rows, in float64, returned as float32.

    Same signature, validation and result as :func:`crevkit.index.rerank_distances`
    (``n_threads`` is accepted and ignored; ``vectors`` may be any real
    array): one gather and one dot product per query.
    """
    v, q, lab = _rerank_arguments(vectors, queries, labels, convert_vectors=True)
    if lab.size and (lab.min() < 0 or lab.max() >= v.shape[0]):
        raise CrevkitValueError(f"labels must be in [0, {v.shape[0]}) (rows of vectors)")
    out = np.empty(lab.shape, np.float64)
    for i in range(lab.shape[0]):
        out[i] = v[lab[i]].astype(np.float64) @ q[i].astype(np.float64)
    return np.maximum(2.0 - 2.0 * out, 0.0).astype(np.float32)
