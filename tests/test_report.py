"""Evaluation metrics (by hand) and the self-contained HTML report with its figures."""

from __future__ import annotations

import base64
import json
import re
import warnings

import numpy as np
import pandas as pd
import pytest

from crevkit.metrics import brier, change_accuracy, cluster_purity, roc_auc
from crevkit.report import plot_hit_map, plot_map, plot_umatrix, plot_waveform_matches, umatrix, write_report

PNG = b"\x89PNG\r\n\x1a\n"


def test_roc_auc_and_brier_by_hand():
    truth = np.array([True, True, False, False, True])
    assert roc_auc(truth, [0.9, 0.8, 0.1, 0.2, 0.7]) == 1.0
    assert roc_auc(truth, [0.1, 0.2, 0.9, 0.8, 0.3]) == 0.0
    # pairs (pos, neg): 0.9>0.6, 0.9>0.2, 0.5<0.6, 0.5>0.2, 0.6=0.6 (half), 0.6>0.2 -> 4.5 / 6
    assert roc_auc(truth, [0.9, 0.5, 0.6, 0.2, 0.6]) == pytest.approx(4.5 / 6)
    # NaN scores are left out
    assert roc_auc(np.r_[truth, False], [0.9, 0.8, 0.1, 0.2, 0.7, np.nan]) == 1.0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        assert np.isnan(roc_auc([True, True], [0.1, 0.2]))
    assert any("single class" in str(x.message) for x in w)
    p = np.array([1.0, 0.5, 0.0, 0.25, np.nan])
    assert brier(truth, p) == pytest.approx((0 + 0.25 + 0 + 0.0625) / 4)
    assert brier([1, 0], [1.0, 0.0]) == 0.0


def test_cluster_purity_by_hand():
    cluster = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, -1])
    truth = np.array([1, 1, 0, 0, 0, 1, 0, 1, 1, 0], bool)
    # cluster 0: 2 of 3, cluster 1: 2 of 2, cluster 2: 3 of 4, noise: 1 of 1
    assert cluster_purity(cluster, truth) == pytest.approx(8 / 10)
    assert cluster_purity(np.arange(5), np.array([0, 1, 0, 1, 1], bool)) == 1.0
    # multi-class truth: clusters 0:{a,a,b} 1:{b,b} 2:{c,c,c,c} -1:{c} -> (2 + 2 + 4 + 1) / 10
    assert cluster_purity(cluster, np.array(list("aabbbccccc"))) == pytest.approx(9 / 10)


def test_change_accuracy_by_hand(tmp_path):
    pred = np.array([[0.5, -0.4, 0.0], [0.3, 0.1, np.nan]])
    truth = np.array([[1, -1, 0], [0, 1, 1]], float)
    got = change_accuracy(pred, truth, threshold=0.25)
    # compared cells: 5; right: (0,0) appeared, (0,1) vanished, (0,2) none; wrong: (1,0), (1,1)
    assert got["n_cells"] == 5 and got["n_appeared"] == 2 and got["n_vanished"] == 1
    assert got["accuracy"] == pytest.approx(3 / 5)
    assert got["appeared_recall"] == pytest.approx(1 / 2)
    assert got["vanished_recall"] == 1.0
    assert got["changed_accuracy"] == pytest.approx(2 / 3)
    nothing = change_accuracy(np.zeros((2, 2)), np.zeros((2, 2)))
    assert nothing["accuracy"] == 1.0 and np.isnan(nothing["appeared_recall"])


def test_umatrix_by_hand(tmp_path):
    cb = np.zeros((2, 3, 2))
    cb[:, 2] = [3.0, 4.0]  # the right column is 5 away from the middle one
    # middle column: neighbours at 0, 0 and 5; right column: at 5 and 0
    np.testing.assert_allclose(umatrix(cb), [[0.0, 5 / 3, 2.5], [0.0, 5 / 3, 2.5]])
    assert plot_umatrix(cb, tmp_path / "u.png").read_bytes()[:8] == PNG


def _figures(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(200.0)
    wave = np.exp(-0.5 * ((t - 60) / 5) ** 2)
    neighbours = np.stack([np.exp(-0.5 * ((t - 60 - s) / (5 + s)) ** 2) for s in range(4)])
    tiles = rng.normal(0, 1, (4, 40, 40))
    figs = {
        "waveform_matches_0": plot_waveform_matches(wave + rng.normal(0, 0.05, 200), wave, neighbours, tiles,
                                                    tmp_path / "fig" / "wm.png", labels=["crevasse", "other",
                                                                                         "crevasse", "other"],
                                                    distances=[0.01, 0.02, 0.03, 0.04]),
        "umatrix": plot_umatrix(rng.random((8, 10)), tmp_path / "fig" / "umatrix.png"),
        "hit_map": plot_hit_map(rng.integers(0, 5, (8, 10)), tmp_path / "fig" / "hits.png"),
    }
    from crevkit.maps import rasterize

    shots = pd.DataFrame({"x": rng.uniform(0, 5000, 200), "y": rng.uniform(0, 5000, 200),
                          "time": pd.Timestamp("2005-03-01"), "p_crevasse": rng.random(200)})
    (tif,) = rasterize(shots, tmp_path / "maps", quicklooks=False)
    figs["crevasse_probability_2005"] = plot_map(tif, tmp_path / "fig" / "p2005.png")
    for p in figs.values():
        assert p.read_bytes()[:8] == PNG
    return figs


def test_report_is_self_contained_and_shows_the_metrics(tmp_path):
    figs = _figures(tmp_path)
    metrics = {"auc": 0.912345, "brier": 0.0812, "auc_clean": 0.97, "brier_clean": float("nan"),
               "cluster_purity": np.float64(0.8765), "n_shots": np.int64(12345),
               "change_accuracy": {"accuracy": 0.75, "appeared_recall": 0.5, "vanished_recall": None}}
    run = tmp_path / "run"
    path = write_report(run, metrics=metrics, figures={**figs, "missing_figure": tmp_path / "nope.png"})
    assert path == run / "report" / "index.html"
    text = path.read_text()
    for shown in ("0.9123", "0.0812", "0.9700", "0.8765", "12,345", "0.7500", "0.5000", "n/a",
                  "change_accuracy.appeared_recall", "Evaluation", "Waveform matches", "Self-organizing map",
                  "Crevasse probability maps", "missing_figure"):
        assert shown in text, shown
    # every figure is embedded, nothing is linked
    images = re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", text)
    assert len(images) == 4 and all(base64.b64decode(i)[:8] == PNG for i in images)
    assert not re.search(r"src=['\"](?!data:)", text) and "href='http" not in text
    saved = json.loads((run / "report" / "metrics.json").read_text())
    assert saved["auc"] == pytest.approx(0.912345) and saved["brier_clean"] is None
    assert saved["n_shots"] == 12345 and saved["change_accuracy"]["accuracy"] == 0.75


def test_report_without_truth_discovers_run_figures(tmp_path):
    run = tmp_path / "run"
    plot_umatrix(np.ones((3, 3)), run / "report" / "umatrix.png")
    plot_hit_map(np.ones((3, 3)), run / "clusters" / "label_kit" / "mosaics" / "cluster_0.png")
    path = write_report(run, metrics={})
    text = path.read_text()
    assert "No truth" in text and "<h2 id='evaluation'>" not in text
    assert "Cluster mosaics" in text and "Self-organizing map" in text
    assert text.count("data:image/png;base64,") == 2
    assert json.loads((run / "report" / "metrics.json").read_text()) == {}


def test_cli_report(tmp_path):
    from click.testing import CliRunner

    from crevkit.cli import main

    run = tmp_path / "run"
    plot_umatrix(np.ones((3, 3)), run / "report" / "umatrix.png")
    (tmp_path / "m.json").write_text(json.dumps({"auc": 0.8123}))
    res = CliRunner().invoke(main, ["report", str(run), "--metrics", str(tmp_path / "m.json")])
    assert res.exit_code == 0, res.output
    assert "0.8123" in (run / "report" / "index.html").read_text()
