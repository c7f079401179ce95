"""`crevkit simulate` and `crevkit bench` on the command line."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

import crevkit
from crevkit.benchmarks.forward import synthetic_tiles
from crevkit.cli import main


@pytest.fixture(scope="module")
def tiles_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tiles") / "tiles.npy"
    np.save(path, synthetic_tiles(50, seed=3))
    return path


@pytest.mark.parametrize("suffix", [".npy", ".zarr"])
def test_simulate_writes_what_the_api_computes(tiles_file, tmp_path, suffix):
    out = tmp_path / f"waves{suffix}"
    result = CliRunner().invoke(main, ["simulate", str(tiles_file), str(out), "--batch-size", "16", "--incidence"])
    assert result.exit_code == 0, result.output
    if suffix == ".npy":
        got = np.load(out)
    else:
        import zarr

        got = zarr.open_array(str(out), mode="r")[:]
    expected = crevkit.simulate_waveforms(np.load(tiles_file), incidence_weighting=True)
    assert np.array_equal(got, expected)
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())


def test_simulate_errors_are_one_line(tiles_file, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["simulate", str(tiles_file), str(tmp_path / "w.npy"), "--pixel-size", "-1"])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: pixel_size must be > 0, got -1.0"
    result = runner.invoke(main, ["simulate", str(tiles_file), str(tmp_path / "w.txt")])
    assert result.exit_code == 1 and "output must end in .npy or .zarr" in result.output
    assert not (tmp_path / "w.txt").exists()
    bad = tmp_path / "bad.npy"
    bad.write_bytes(b"not numpy")
    result = runner.invoke(main, ["simulate", str(bad), str(tmp_path / "w.npy")])
    assert result.exit_code == 1 and "is not a readable .npy file" in result.output
    assert not (tmp_path / "w.npy").exists()


def test_bench_rejects_unknown_area():
    result = CliRunner().invoke(main, ["bench", "--only", "warp-drive"])
    assert result.exit_code == 1 and "unknown area" in result.output


@pytest.mark.slow
def test_bench_quick_forward(tmp_path):
    out = tmp_path / "RESULTS.md"
    result = CliRunner().invoke(main, ["bench", "--quick", "--only", "forward", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert "crevkit kernel, 2 threads" in out.read_text()
