"""The pipeline machinery: config validation, skip/resume, invalidation, lock."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import pytest
import yaml
from click.testing import CliRunner

from crevkit._progress import StageCounts
from crevkit.errors import ConfigError, RunLockedError
from crevkit.pipeline import Stage, run_pipeline, template, validate_config
from crevkit.pipeline.config import load_config
from crevkit.pipeline.rundir import RunDir

CALLS: list[str] = []


def _writer(name: str, fail_if: str | None = None):
    def fn(ctx):
        if fail_if and os.environ.get(fail_if):
            raise KeyboardInterrupt(f"killed in {name}")
        CALLS.append(name)
        out = ctx.path(f"{name}.txt")
        out.write_text(f"{name} {ctx.config['som']['rows']} {ctx.seed()}")
        return StageCounts(name, found=1, done=1)
    return fn


def _stages():
    return [Stage("a", _writer("a"), sections=("tile",), outputs=("a.txt",)),
            Stage("b", _writer("b", "CREVKIT_TEST_KILL_B"), sections=("som",), outputs=("b.txt",)),
            Stage("c", _writer("c"), sections=("map",), outputs=("c.txt",))]


@pytest.fixture(autouse=True)
def _reset():
    CALLS.clear()
    yield
    os.environ.pop("CREVKIT_TEST_KILL_B", None)


def _config(tmp_path, **changes):
    cfg = {"run_dir": str(tmp_path / "run"), "som": {"rows": 4}}
    for k, v in changes.items():
        cfg.setdefault(k, {}).update(v) if isinstance(v, dict) else cfg.__setitem__(k, v)
    return cfg


def test_skip_complete_and_recompute_after_changed_setting(tmp_path):
    run_pipeline(_config(tmp_path), stages=_stages())
    assert CALLS == ["a", "b", "c"]
    CALLS.clear()
    results = run_pipeline(_config(tmp_path), stages=_stages())
    assert CALLS == [] and all(r.extra["status"] == "complete, skipped" for r in results)
    run_pipeline(_config(tmp_path, som={"rows": 5}), stages=_stages())
    assert CALLS == ["b", "c"]  # the changed stage and everything after it
    assert (tmp_path / "run" / "b.txt").read_text().startswith("b 5")


def test_resume_after_kill_gives_the_same_outputs(tmp_path):
    ref_dir = tmp_path / "ref"
    run_pipeline(_config(ref_dir), stages=_stages())
    reference = {p: (ref_dir / "run" / p).read_text() for p in ("a.txt", "b.txt", "c.txt")}
    CALLS.clear()
    os.environ["CREVKIT_TEST_KILL_B"] = "1"
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(_config(tmp_path), stages=_stages())
    assert CALLS == ["a"]
    os.environ.pop("CREVKIT_TEST_KILL_B")
    run_pipeline(_config(tmp_path), stages=_stages())
    assert CALLS == ["a", "b", "c"]  # a was not recomputed
    assert {p: (tmp_path / "run" / p).read_text() for p in reference} == reference


def test_missing_output_recomputes_the_stage(tmp_path):
    run_pipeline(_config(tmp_path), stages=_stages())
    (tmp_path / "run" / "b.txt").unlink()
    CALLS.clear()
    run_pipeline(_config(tmp_path), stages=_stages())
    assert CALLS == ["b", "c"]  # b reruns, and c on b's fresh output


def test_from_until_force(tmp_path):
    run_pipeline(_config(tmp_path), until="b", stages=_stages())
    assert CALLS == ["a", "b"]
    CALLS.clear()
    run_pipeline(_config(tmp_path), from_stage="b", stages=_stages())
    assert CALLS == ["b", "c"]
    CALLS.clear()
    run_pipeline(_config(tmp_path), force=True, stages=_stages())
    assert CALLS == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="--until: unknown stage 'z'"):
        run_pipeline(_config(tmp_path), until="z", stages=_stages())


def test_provenance_written(tmp_path):
    run_pipeline(_config(tmp_path, seed=7), stages=_stages())
    doc = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert doc["config"]["seed"] == 7 and doc["provenance"]["versions"]["crevkit"]
    assert "dem" in doc["provenance"]["input_hashes"]


def _hold_lock(path, ready, release):
    with RunDir(path).lock():
        ready.set()
        release.wait(30)


def test_run_lock(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    proc = ctx.Process(target=_hold_lock, args=(str(tmp_path / "run"), ready, release))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(RunLockedError, match="is locked by another crevkit run"):
            run_pipeline(_config(tmp_path), stages=_stages())
    finally:
        release.set()
        proc.join(30)
    run_pipeline(_config(tmp_path), stages=_stages())  # free again


@pytest.mark.parametrize(
    "raw, match",
    [
        ({"som": {"rowz": 3}}, r"unknown key som.rowz"),
        ({"colour": "red"}, r"unknown key 'colour'"),
        ({"som": {"rows": "ten"}}, r"som.rows must be an integer, got 'ten'"),
        ({"som": {"rows": 2.5}}, r"som.rows must be an integer"),
        ({"seed": True}, r"seed must be an integer"),
        ({"instrument": "icesat2"}, r"instrument must be one of"),
        ({"som": 3}, r"som must be a section"),
        ({"dem": ["nothing/*.tif"]}, r"dem: no file matches"),
        ({"labels": "missing.csv"}, r"labels: .*missing.csv does not exist"),
        ({"map": {"cell_size": -5}}, r"map.cell_size must be >= 0"),
        ({"match": {"library_copies": [14, 0]}}, r"match.library_copies must be a list of .*s > 0"),
        ({"match": {"library_copies": "high"}}, r"match.library_copies must be a list of"),
        ({"match": {"library_copies": [True]}}, r"match.library_copies must be a list of"),
    ],
)
def test_bad_config_one_line(tmp_path, raw, match):
    with pytest.raises(ConfigError, match=match) as info:
        validate_config(raw, tmp_path)
    assert "\n" not in str(info.value)


def test_template_round_trips(tmp_path):
    path = tmp_path / "crevkit.yaml"
    path.write_text(template())
    cfg = load_config(path)
    assert cfg["som"]["rows"] == 20 and cfg["match"]["k"] == 30
    assert cfg["run_dir"] == str((tmp_path / "run").resolve())


def test_cli_init_and_bad_config(tmp_path):
    from crevkit.cli import main

    runner = CliRunner()
    target = tmp_path / "c.yaml"
    assert runner.invoke(main, ["init", str(target)]).exit_code == 0
    assert "clustering:" in target.read_text()
    assert runner.invoke(main, ["init", str(target)]).exit_code == 1  # no overwrite
    target.write_text("som:\n  rowz: 3\n")
    result = runner.invoke(main, ["run", str(target)])
    assert result.exit_code == 1
    assert result.output.strip() == "Error: config: unknown key som.rowz (valid: rows, cols, epochs, topology)"
    target.write_text("som: [unclosed\n")
    result = runner.invoke(main, ["run", str(target)])
    assert result.exit_code == 1 and "is not valid YAML" in result.output
