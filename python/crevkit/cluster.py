"""OPTICS clustering of a trained self-organizing map.

The map already puts similar tiles on nearby nodes; OPTICS (scikit-learn)
groups the nodes into clusters a person can label, so that a few hundred
labels cover a quarter of a million tiles.

What is clustered (``use``):

``"codebook"`` (default)
    The node codebook vectors, one point per node, reduced by PCA to at most
    ``n_components`` dimensions (to make OPTICS faster; check
    ``n_components`` against the variance your features keep).
``"positions"``
    The tiles' positions on the map (the (row, col) of their best-matching
    node), one point per tile, at most ``max_points`` tiles (a seeded random
    subset).  Clusters are dense regions of the hit map.  A node takes the
    majority cluster of its sampled tiles; nodes without sampled tiles are
    noise.
``"both"``
    One point per node: the PCA codebook coordinates scaled to unit overall
    RMS, concatenated with the node's grid position scaled by
    ``position_weight / max(rows, cols)``, which keeps clusters contiguous on
    the map.

Noise nodes: OPTICS leaves some nodes in no cluster (``node_cluster == -1``).
So that every tile still gets a cluster, ``attach="codebook"`` (default) gives
every noise node the cluster of the nearest clustered node in codebook space
(``attach="map"``: nearest on the map grid, ties broken by codebook
distance; ``attach=None``: they stay ``-1``).  The attached clusters are
``node_assigned`` / ``tile_cluster``; ``node_attached`` / ``tile_attached`` flag
the nodes and tiles that were noise.  If OPTICS finds no cluster at all,
every node becomes cluster 0 (and is flagged as attached).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._validation import as_float32_array, check_finite_number, check_int, check_positive
from ._sidecar import read_sidecar
from .errors import CrevkitTypeError, CrevkitValueError, InputFileError

__all__ = ["ClusterResult", "cluster_som", "plot_reachability"]

_FORMAT = "crevkit-clusters-1"
_USES = ("codebook", "positions", "both")
_ATTACH = ("codebook", "map", None)
_PRECOMPUTE_MAX = 5000  # points; the distance matrix is n^2 float64 (200 MB at 5000)


@dataclasses.dataclass
class ClusterResult:
    """Clusters of a self-organizing map's nodes and tiles.

    Attributes
    ----------
    shape : tuple of int
        ``(rows, cols)`` of the map.
    node_cluster : ndarray of int64, shape (rows*cols,)
        OPTICS cluster of each node (row-major), ``-1`` = noise.
    node_assigned : ndarray of int64, shape (rows*cols,)
        Cluster after attaching noise nodes (see the module docstring).
    node_attached : ndarray of bool, shape (rows*cols,)
        True where the node was noise and got its cluster by attachment.
    tile_cluster : ndarray of int64, shape (n_tiles,)
        ``node_assigned[bmu]``: the cluster of every tile.
    tile_attached : ndarray of bool, shape (n_tiles,)
        ``node_attached[bmu]``.
    bmu : ndarray of int64, shape (n_tiles,)
        Each tile's node (row-major index), as given.
    reachability, core_distances : ndarray of float64, shape (n_points,)
        OPTICS reachability / core distance of each point (``inf`` for the
        first point of each connected component).
    ordering : ndarray of int64, shape (n_points,)
        OPTICS ordering of the points.
    point_node : ndarray of int64, shape (n_points,)
        The node each OPTICS point belongs to (the identity for ``use`` of
        ``"codebook"`` and ``"both"``, the sampled tiles' nodes for ``"positions"``).
    point_cluster : ndarray of int64, shape (n_points,)
        OPTICS label of each point.
    params : dict
        The parameters used (for provenance).
    """

    shape: tuple[int, int]
    node_cluster: np.ndarray
    node_assigned: np.ndarray
    node_attached: np.ndarray
    tile_cluster: np.ndarray
    tile_attached: np.ndarray
    bmu: np.ndarray
    reachability: np.ndarray
    core_distances: np.ndarray
    ordering: np.ndarray
    point_node: np.ndarray
    point_cluster: np.ndarray
    params: dict

    @property
    def n_clusters(self) -> int:
        """Number of clusters (after attachment; noise excluded)."""
        return int(np.unique(self.node_assigned[self.node_assigned >= 0]).size)

    @property
    def cluster_ids(self) -> np.ndarray:
        """The sorted cluster ids present among the tiles (``-1`` excluded)."""
        u = np.unique(self.tile_cluster)
        return u[u >= 0]

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"ClusterResult(map {self.shape[0]}x{self.shape[1]}, {self.n_clusters} clusters, "
                f"{int(self.node_attached.sum())} noise nodes attached, {self.tile_cluster.size} tiles)")

    # ------------------------------------------------------------------ I/O
    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write ``nodes.parquet``, ``tiles.parquet``, ``optics.npz`` and ``clusters.json`` to ``out_dir``.

        Each file is written atomically; ``clusters.json`` is written last and
        marks the set as complete.

        Returns
        -------
        pathlib.Path
            ``out_dir``.
        """
        import pandas as pd

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        marker = out / "clusters.json"
        if marker.exists():  # the old set is no longer complete while we rewrite it
            marker.unlink()
        rows, cols = self.shape
        node = np.arange(rows * cols, dtype=np.int64)
        hits = np.bincount(self.bmu, minlength=rows * cols).astype(np.int64)
        nodes = pd.DataFrame({"node": node, "row": node // cols, "col": node % cols,
                              "cluster": self.node_cluster, "assigned": self.node_assigned,
                              "attached": self.node_attached, "hits": hits})
        tiles = pd.DataFrame({"tile_row": np.arange(self.bmu.size, dtype=np.int64), "bmu": self.bmu,
                              "cluster": self.tile_cluster, "attached": self.tile_attached})
        with atomic_path(out / "nodes.parquet", suffix=".parquet") as tmp:
            nodes.to_parquet(tmp, index=False)
        with atomic_path(out / "tiles.parquet", suffix=".parquet") as tmp:
            tiles.to_parquet(tmp, index=False)
        with atomic_path(out / "optics.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, reachability=self.reachability, core_distances=self.core_distances,
                         ordering=self.ordering, point_node=self.point_node, point_cluster=self.point_cluster)
        meta = {"format": _FORMAT, "shape": [rows, cols], "n_tiles": int(self.bmu.size),
                "n_clusters": self.n_clusters, "n_noise_nodes": int((self.node_cluster < 0).sum()),
                "params": self.params}
        atomic_write_text(marker, json.dumps(meta, indent=2))
        return out

    @classmethod
    def load(cls, in_dir: str | os.PathLike) -> "ClusterResult":
        """Read a result written by :meth:`save`.

        Raises
        ------
        InputFileError
            The folder is incomplete (no ``clusters.json``) or its files disagree.
        """
        import pandas as pd

        d = Path(in_dir)
        meta = read_sidecar(d / "clusters.json", fmt=_FORMAT, what="cluster result",
                            missing="no complete cluster result (clusters.json missing)")
        rows, cols = (int(v) for v in meta["shape"])
        try:
            nodes = pd.read_parquet(d / "nodes.parquet")
            tiles = pd.read_parquet(d / "tiles.parquet")
            with np.load(d / "optics.npz") as z:
                optics = {k: z[k] for k in z.files}
        except (OSError, ValueError, KeyError) as exc:
            raise InputFileError(f"{d}: cannot read the cluster files: {exc}") from None
        if len(nodes) != rows * cols or len(tiles) != int(meta["n_tiles"]):
            raise InputFileError(f"{d}: nodes.parquet / tiles.parquet do not match clusters.json")
        return cls(shape=(rows, cols),
                   node_cluster=nodes["cluster"].to_numpy(np.int64),
                   node_assigned=nodes["assigned"].to_numpy(np.int64),
                   node_attached=nodes["attached"].to_numpy(bool),
                   tile_cluster=tiles["cluster"].to_numpy(np.int64),
                   tile_attached=tiles["attached"].to_numpy(bool),
                   bmu=tiles["bmu"].to_numpy(np.int64),
                   reachability=optics["reachability"], core_distances=optics["core_distances"],
                   ordering=optics["ordering"].astype(np.int64), point_node=optics["point_node"].astype(np.int64),
                   point_cluster=optics["point_cluster"].astype(np.int64), params=dict(meta.get("params", {})))

    def plot_reachability(self, path: str | os.PathLike) -> Path:
        """Write the OPTICS reachability plot (PNG) to ``path``; see :func:`plot_reachability`."""
        return plot_reachability(self.reachability, self.ordering, self.point_cluster, path)


# ---------------------------------------------------------------------- clustering
def _pca(x: np.ndarray, n_components: int, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    x = x.astype(np.float64) - x.mean(axis=0)
    n = min(n_components, x.shape[0], x.shape[1])
    if n >= x.shape[1]:
        return x
    return PCA(n_components=n, random_state=seed, svd_solver="auto").fit_transform(x)


def cluster_som(codebook: Any, bmu: Any, *, min_samples: int = 2, xi: float = 0.02,
                min_cluster_size: float | int = 2, use: str = "codebook", attach: str | None = "codebook",
                n_components: int = 50, position_weight: float = 1.0, max_points: int = 5000,
                seed: int = 0) -> ClusterResult:
    """Cluster the nodes of a trained SOM with OPTICS and give every tile a cluster.

    Parameters
    ----------
    codebook : array_like, shape (rows, cols, D)
        The map's codebook (converted once to float32).
    bmu : array_like of int, shape (n_tiles,)
        Each tile's best-matching node, row-major (``row * cols + col``).
    min_samples : int, default 2
        OPTICS ``min_samples``: neighbours (the point included) for a core point.
    xi : float, default 0.02
        OPTICS ξ: the minimum relative steepness of a cluster boundary in the
        reachability plot (smaller → more, finer clusters).
    min_cluster_size : float or int, default 2
        Smallest cluster: a fraction of the points (< 1) or a count (≥ 2),
        as in :class:`sklearn.cluster.OPTICS`.

        The defaults give many small, pure clusters, which is what labelling
        wants: on a 15×15 batch SOM of 600 tiles of the default synthetic
        scene (16×16 DCT coefficients of 1 m tiles) they gave 48–50 clusters
        of tile purity 0.94 against the truth (21 % crevassed), where
        ``min_samples=5, xi=0.05`` gave 3–7 clusters and purity 0.79, no
        better than one cluster.  For a coarser partition raise
        ``min_samples`` and ``min_cluster_size`` (e.g. 3 well-separated
        groups come out as 3 clusters with ``min_cluster_size=0.05``, and
        split into pure sub-clusters at the defaults).
    use : {"codebook", "positions", "both"}, default "codebook"
        What is clustered (see the module docstring).
    attach : {"codebook", "map", None}, default "codebook"
        How noise nodes get a cluster (see the module docstring).
    n_components : int, default 50
        PCA dimensions the codebook is reduced to before OPTICS.
    position_weight : float, default 1.0
        Weight of the map position for ``use="both"``.
    max_points : int, default 5000
        Tiles sampled for ``use="positions"``.
    seed : int, default 0
        Seed of the PCA and of the tile sample.

    Returns
    -------
    ClusterResult

    Raises
    ------
    CrevkitValueError
        Bad shapes, ``bmu`` outside the map, or a bad parameter.

    Notes
    -----
    Up to 5000 points, OPTICS runs on a precomputed Euclidean distance matrix
    (fast, ≤ 200 MB); above that, on scikit-learn's neighbour search (slower,
    little memory).  OPTICS is a global step: it runs once per run.
    """
    cb = as_float32_array(codebook, "codebook", ndim=3, allow_nan=False)
    rows, cols, dim = cb.shape
    n_nodes = rows * cols
    b = np.asarray(bmu)
    if b.ndim != 1 or b.size == 0:
        raise CrevkitValueError(f"bmu must be a non-empty 1-D array of node indices, got shape {b.shape}")
    if not np.issubdtype(b.dtype, np.integer):
        raise CrevkitTypeError(f"bmu must hold integers, got dtype {b.dtype}")
    b = b.astype(np.int64)
    if b.min() < 0 or b.max() >= n_nodes:
        raise CrevkitValueError(f"bmu must be node indices in [0, {n_nodes}) for a {rows}x{cols} map, "
                                f"got range [{b.min()}, {b.max()}]")
    if use not in _USES:
        raise CrevkitValueError(f"use must be one of {_USES}, got {use!r}")
    if attach not in _ATTACH:
        raise CrevkitValueError(f"attach must be one of {_ATTACH}, got {attach!r}")
    min_samples = check_int(min_samples, "min_samples", minimum=2)
    xi = check_positive(xi, "xi", maximum=1.0)
    if isinstance(min_cluster_size, bool):
        raise CrevkitTypeError("min_cluster_size must be a number")
    mcs = check_finite_number(min_cluster_size, "min_cluster_size")
    if mcs <= 0 or (mcs >= 1 and mcs != int(mcs)):
        raise CrevkitValueError(f"min_cluster_size must be a fraction in (0, 1) or an integer >= 2, "
                                f"got {min_cluster_size!r}")
    n_components = check_int(n_components, "n_components", minimum=1)
    position_weight = check_finite_number(position_weight, "position_weight")
    max_points = check_int(max_points, "max_points", minimum=2)
    seed = check_int(seed, "seed", minimum=0)

    flat = cb.reshape(n_nodes, dim)
    reduced = _pca(flat, n_components, seed)
    grid = np.stack(np.divmod(np.arange(n_nodes), cols), axis=1).astype(np.float64)
    if use == "codebook":
        points = reduced
        point_node = np.arange(n_nodes, dtype=np.int64)
    elif use == "both":
        rms = np.sqrt(np.mean(np.sum(reduced ** 2, axis=1))) or 1.0
        points = np.hstack([reduced / rms, grid * (position_weight / max(rows, cols))])
        point_node = np.arange(n_nodes, dtype=np.int64)
    else:
        rng = np.random.default_rng(seed)
        if b.size > max_points:
            sample = np.sort(rng.choice(b.size, size=max_points, replace=False))
        else:
            sample = np.arange(b.size)
        point_node = b[sample]
        points = grid[point_node]
    n_points = points.shape[0]
    if n_points < 2:
        raise CrevkitValueError(f"need at least 2 points to cluster, got {n_points}")
    ms = min(min_samples, n_points)
    mcs_arg: float | int = mcs if mcs < 1 else int(mcs)
    if isinstance(mcs_arg, int):
        mcs_arg = max(2, min(mcs_arg, n_points))

    from sklearn.cluster import OPTICS

    with np.errstate(divide="ignore", invalid="ignore"):
        if n_points <= _PRECOMPUTE_MAX:
            # a precomputed matrix is far faster than sklearn's per-point distance calls
            from scipy.spatial.distance import cdist

            optics = OPTICS(min_samples=ms, xi=xi, min_cluster_size=mcs_arg, cluster_method="xi",
                            metric="precomputed")
            optics.fit(cdist(points, points))
        else:
            optics = OPTICS(min_samples=ms, xi=xi, min_cluster_size=mcs_arg, cluster_method="xi", n_jobs=1)
            optics.fit(points)
    point_cluster = optics.labels_.astype(np.int64)

    if use == "positions":
        node_cluster = np.full(n_nodes, -1, np.int64)
        for node in np.unique(point_node):
            lab = point_cluster[point_node == node]
            lab = lab[lab >= 0]
            if lab.size:
                vals, cnt = np.unique(lab, return_counts=True)
                node_cluster[node] = vals[np.argmax(cnt)]
    else:
        node_cluster = point_cluster.copy()

    node_assigned = node_cluster.copy()
    node_attached = node_cluster < 0
    clustered = np.flatnonzero(node_cluster >= 0)
    if clustered.size == 0:
        node_assigned[:] = 0
    elif attach is not None and node_attached.any():
        from scipy.spatial.distance import cdist

        noise = np.flatnonzero(node_attached)
        for s in range(0, noise.size, 512):  # chunks bound the (noise x clustered) distance block
            part = noise[s:s + 512]
            cd = cdist(reduced[part], reduced[clustered], "sqeuclidean")
            if attach == "map":
                gd = cdist(grid[part], grid[clustered], "sqeuclidean")
                # nearest on the grid (integer squared steps); codebook distance, scaled below 1/2, breaks ties
                key = gd + cd / (cd.max() + 1.0) * 0.5
            else:
                key = cd
            node_assigned[part] = node_cluster[clustered[np.argmin(key, axis=1)]]
    if attach is None and clustered.size:
        node_attached = np.zeros(n_nodes, bool)

    # renumber the clusters present to 0..n-1 (keeping their order)
    present = np.unique(node_assigned[node_assigned >= 0])
    if present.size and not np.array_equal(present, np.arange(present.size)):
        remap = np.full(int(present.max()) + 1, -1, np.int64)
        remap[present] = np.arange(present.size)
        node_assigned = np.where(node_assigned >= 0, remap[np.maximum(node_assigned, 0)], -1)
        node_cluster = np.where(node_cluster >= 0, remap[np.maximum(node_cluster, 0)], -1)
        point_cluster = np.where(point_cluster >= 0, remap[np.maximum(point_cluster, 0)], -1)

    params = {"min_samples": min_samples, "xi": xi, "min_cluster_size": mcs_arg, "use": use, "attach": attach,
              "n_components": n_components, "position_weight": position_weight, "max_points": max_points,
              "seed": seed}
    return ClusterResult(shape=(rows, cols), node_cluster=node_cluster, node_assigned=node_assigned,
                         node_attached=node_attached, tile_cluster=node_assigned[b], tile_attached=node_attached[b],
                         bmu=b, reachability=np.asarray(optics.reachability_, np.float64),
                         core_distances=np.asarray(optics.core_distances_, np.float64),
                         ordering=np.asarray(optics.ordering_, np.int64), point_node=point_node,
                         point_cluster=point_cluster, params=params)


# ---------------------------------------------------------------------- plotting
def plot_reachability(reachability: Any, ordering: Any, labels: Any, path: str | os.PathLike) -> Path:
    """Write an OPTICS reachability plot (PNG): reachability in OPTICS order, coloured by cluster.

    Parameters
    ----------
    reachability : array_like, shape (n,)
        Reachability distance of each point (``inf`` is drawn at the top).
    ordering : array_like of int, shape (n,)
        OPTICS ordering.
    labels : array_like of int, shape (n,)
        Cluster of each point (``-1`` noise, drawn grey).
    path : path
        The PNG to write (atomically).

    Returns
    -------
    pathlib.Path
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    reach = np.asarray(reachability, np.float64)[np.asarray(ordering)]
    lab = np.asarray(labels)[np.asarray(ordering)]
    finite = reach[np.isfinite(reach)]
    top = float(finite.max()) * 1.05 if finite.size else 1.0
    reach = np.where(np.isfinite(reach), reach, top)
    x = np.arange(reach.size)
    fig, ax = plt.subplots(figsize=(10, 3.2), dpi=100)
    try:
        cmap = plt.get_cmap("tab20")
        colours = np.where(lab[:, None] >= 0, cmap(np.maximum(lab, 0) % 20), (0.6, 0.6, 0.6, 1.0))
        ax.bar(x, reach, width=1.0, color=colours, linewidth=0)
        ax.set_xlim(-0.5, reach.size - 0.5)
        ax.set_ylim(0, top * 1.02)
        ax.set_xlabel("points in OPTICS order")
        ax.set_ylabel("reachability distance")
        n_clusters = np.unique(lab[lab >= 0]).size
        ax.set_title(f"OPTICS reachability: {n_clusters} clusters, {int((lab < 0).sum())} noise points (grey)")
        fig.tight_layout()
        return _save_fig(fig, path)
    finally:
        plt.close(fig)


def _save_fig(fig: Any, path: str | os.PathLike, **kw: Any) -> Path:
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", **kw)
    return path
