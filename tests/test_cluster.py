"""OPTICS clustering of a SOM: separated groups, noise attachment, save/load, plot, CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crevkit.cluster import ClusterResult, cluster_som
from crevkit.errors import CrevkitTypeError, CrevkitValueError, InputFileError

ROWS, COLS, DIM = 12, 12, 24
COARSE = {"min_samples": 5, "xi": 0.05, "min_cluster_size": 0.05}  # a coarse partition


def _three_groups(seed: int = 0):
    """A 12x12 codebook in three well-separated column bands, plus tiles hitting every node."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (3, DIM))
    group = np.zeros((ROWS, COLS), int)
    group[:, 4:8] = 1
    group[:, 8:] = 2
    codebook = (centres[group] + rng.normal(0.0, 0.3, (ROWS, COLS, DIM))).astype(np.float32)
    bmu = rng.integers(0, ROWS * COLS, 400)
    return codebook, bmu, group.ravel()


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    """True when the two labellings are equal up to renaming."""
    tab = pd.crosstab(a, b)
    return bool(((tab > 0).sum(axis=1) == 1).all() and ((tab > 0).sum(axis=0) == 1).all())


@pytest.mark.parametrize("use", ["codebook", "both"])
def test_three_separated_groups_give_three_clusters(use):
    codebook, bmu, group = _three_groups()
    res = cluster_som(codebook, bmu, use=use, **COARSE)
    assert res.n_clusters == 3
    assert _same_partition(group, res.node_assigned)
    assert res.node_cluster.shape == (ROWS * COLS,)
    np.testing.assert_array_equal(res.tile_cluster, res.node_assigned[bmu])
    assert res.tile_cluster.min() >= 0
    assert set(res.cluster_ids.tolist()) == {0, 1, 2}
    assert sorted(res.ordering.tolist()) == list(range(ROWS * COLS))
    assert res.reachability.shape == (ROWS * COLS,)


def test_defaults_split_groups_into_pure_subclusters():
    codebook, bmu, group = _three_groups()
    res = cluster_som(codebook, bmu)
    assert res.n_clusters >= 3
    tab = pd.crosstab(res.node_assigned, group)
    assert ((tab > 0).sum(axis=1) == 1).all()  # no cluster mixes two groups


def test_noise_nodes_attached_and_flagged():
    codebook, bmu, group = _three_groups()
    # four isolated outlier nodes, each far from everything: OPTICS calls them noise
    rng = np.random.default_rng(5)
    outliers = [0, 50, 100, 143]
    for k, node in enumerate(outliers):
        codebook.reshape(-1, DIM)[node] = rng.normal(0.0, 1.0, DIM) + 60.0 * (k + 1)
    bmu = np.concatenate([bmu, outliers])
    res = cluster_som(codebook, bmu, **COARSE)
    assert np.all(res.node_cluster[outliers] == -1)
    assert np.all(res.node_attached[outliers])
    assert res.node_assigned.min() >= 0 and res.tile_cluster.min() >= 0
    assert np.all(res.tile_attached[-4:])
    np.testing.assert_array_equal(res.node_attached, res.node_cluster < 0)
    # attach=None leaves them as noise, "map" attaches to a cluster present next to them on the map
    keep = cluster_som(codebook, bmu, **COARSE, attach=None)
    assert np.all(keep.tile_cluster[-4:] == -1)
    on_map = cluster_som(codebook, bmu, **COARSE, attach="map")
    assert on_map.node_assigned.min() >= 0
    # node 0 sits in column 0 (group 0): on the map it joins its neighbours' cluster
    assert on_map.node_assigned[0] == on_map.node_assigned[1]


def test_positions_clusters_dense_regions_of_the_hit_map():
    rng = np.random.default_rng(1)
    rows = cols = 16
    codebook = rng.normal(size=(rows, cols, 8))
    r = np.concatenate([rng.normal(3, 1, 300), rng.normal(12, 1, 300)]).clip(0, 15).round().astype(int)
    c = np.concatenate([rng.normal(3, 1, 300), rng.normal(12, 1, 300)]).clip(0, 15).round().astype(int)
    res = cluster_som(codebook, r * cols + c, use="positions", min_samples=5, xi=0.05, min_cluster_size=0.1)
    assert res.n_clusters == 2
    assert np.unique(res.tile_cluster[:300]).size == 1 and np.unique(res.tile_cluster[300:]).size == 1
    assert res.tile_cluster[0] != res.tile_cluster[-1]


def test_save_load_round_trip_and_plot(tmp_path):
    codebook, bmu, _ = _three_groups()
    res = cluster_som(codebook, bmu, **COARSE)
    res.save(tmp_path / "clusters")
    back = ClusterResult.load(tmp_path / "clusters")
    for name in ("node_cluster", "node_assigned", "node_attached", "tile_cluster", "tile_attached", "bmu",
                 "reachability", "core_distances", "ordering", "point_node", "point_cluster"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    assert back.shape == (ROWS, COLS) and back.params == res.params
    png = res.plot_reachability(tmp_path / "reach.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no leftovers from atomic writes
    assert not [p for p in (tmp_path / "clusters").iterdir() if p.name.startswith(".")]
    # an incomplete folder (no marker) is refused
    (tmp_path / "clusters" / "clusters.json").unlink()
    with pytest.raises(InputFileError, match="clusters.json"):
        ClusterResult.load(tmp_path / "clusters")


def test_validation():
    codebook, bmu, _ = _three_groups()
    with pytest.raises(CrevkitValueError, match="bmu"):
        cluster_som(codebook, np.array([0, ROWS * COLS]))
    with pytest.raises(CrevkitTypeError, match="bmu"):
        cluster_som(codebook, np.array([0.5, 1.0]))
    with pytest.raises(CrevkitValueError, match="codebook"):
        cluster_som(codebook[0], bmu)
    with pytest.raises(CrevkitValueError, match="use"):
        cluster_som(codebook, bmu, use="tiles")
    with pytest.raises(CrevkitValueError, match="min_cluster_size"):
        cluster_som(codebook, bmu, min_cluster_size=2.5)


def test_cli_cluster(tmp_path):
    from click.testing import CliRunner

    from crevkit.cli import main

    codebook, bmu, _ = _three_groups()
    np.save(tmp_path / "codebook.npy", codebook)
    np.save(tmp_path / "bmu.npy", bmu)
    out = tmp_path / "clusters"
    result = CliRunner().invoke(main, ["cluster", str(tmp_path / "codebook.npy"), str(tmp_path / "bmu.npy"),
                                       "-o", str(out), "--min-samples", "5", "--xi", "0.05",
                                       "--min-cluster-size", "0.05"])
    assert result.exit_code == 0, result.output
    assert "3 clusters" in result.output
    assert (out / "reachability.png").exists() and ClusterResult.load(out).n_clusters == 3
    bad = CliRunner().invoke(main, ["cluster", str(tmp_path / "bmu.npy"), str(tmp_path / "bmu.npy"), "-o", str(out)])
    assert bad.exit_code == 1 and "Error:" in bad.output and "codebook" in bad.output
