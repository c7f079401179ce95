"""``crevkit library``, ``crevkit index``, ``crevkit match`` and ``crevkit evaluate-matching``.

``crevkit library-copies`` (the index of a library's denoised copies, for ``crevkit match --copies``) is with
the denoiser's commands, in ``cli/denoise.py``.
"""

from __future__ import annotations

import click

from . import main


def _offsets(text: str | None):
    if not text:
        return None
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated numbers, got {text!r}", param_hint="--offsets") from None


@main.command("library")
@click.argument("store_dir", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Library folder (the run directory's library/).")
@click.option("--instrument", default="glas", show_default=True, help="Instrument preset.")
@click.option("--pixel-size", type=float, default=None, help="Tile pixel size (m); default: the store's.")
@click.option("--batch-size", type=int, default=1024, show_default=True, help="Tiles simulated at a time.")
def library_cmd(store_dir: str, out_dir: str, instrument: str, pixel_size: float | None, batch_size: int) -> None:
    """Simulate one waveform per tile of STORE_DIR into a waveform library (Zarr + tile ids)."""
    from ..library import build_library

    counts = build_library(store_dir, out_dir, pixel_size=pixel_size, instrument=instrument, batch_size=batch_size)
    click.echo(f"{counts.line()} -> {out_dir}")


@main.command("index")
@click.argument("library", type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Index folder.")
@click.option("--transform", type=click.Choice(["sqrt", "linear"]), default="sqrt", show_default=True)
@click.option("--alignment", type=click.Choice(["centroid", "leading_edge", "none"]), default="centroid",
              show_default=True)
@click.option("--pca", "pca_components", type=int, default=64, show_default=True,
              help="Graph dimension (0: no PCA).")
@click.option("--M", "M", type=int, default=16, show_default=True, help="HNSW links per node.")
@click.option("--ef-construction", type=int, default=200, show_default=True)
@click.option("--ef-search", type=int, default=32, show_default=True)
@click.option("--rerank", type=int, default=32, show_default=True, help="Candidates re-ranked exactly.")
@click.option("--no-dedup", is_flag=True, help="Keep near-identical library vectors.")
@click.option("--deterministic", is_flag=True, help="Single-threaded build with a fixed seed (bit-identical).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None, help="Threads (default: all usable cores).")
def index_cmd(library: str, out_dir: str, transform: str, alignment: str, pca_components: int, M: int,
              ef_construction: int, ef_search: int, rerank: int, no_dedup: bool, deterministic: bool, seed: int,
              n_threads: int | None) -> None:
    """Build an HNSW index over the waveform LIBRARY folder and save it to --out."""
    import time

    from ..index import WaveformIndex

    t0 = time.perf_counter()
    idx = WaveformIndex.build(library, transform=transform, alignment=alignment,
                              pca_components=pca_components or None, M=M, ef_construction=ef_construction,
                              ef_search=ef_search, rerank=rerank, dedup=not no_dedup, deterministic=deterministic,
                              seed=seed, n_threads=n_threads)
    idx.save(out_dir)
    click.echo(f"index: {idx.count} waveforms ({idx.n_unique} unique) in {time.perf_counter() - t0:.1f} s -> {out_dir}")


@main.command("match")
@click.argument("index_dir", type=click.Path(exists=True, file_okay=False))
@click.argument("waveforms", type=click.Path(exists=True))
@click.option("-o", "--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="Output .npz (rows, distances, tile_ids when the index has them).")
@click.option("--library", type=click.Path(exists=True, file_okay=False), default=None,
              help="Check that the index was built from this library.")
@click.option("--copies", type=click.Path(exists=True, file_okay=False), default=None,
              help="Also match against the library's denoised copies (an index from `crevkit library-copies`); "
                   "a tile then comes back once per matching waveform.")
@click.option("-k", type=int, default=30, show_default=True, help="Matches per shot.")
@click.option("--batch-size", type=int, default=16384, show_default=True)
@click.option("--offsets", default=None, help="Also search at these delays (samples), e.g. '-2,-1,0,1,2'.")
@click.option("--threads", "n_threads", type=int, default=None, help="Threads (default: all usable cores).")
def match_cmd(index_dir: str, waveforms: str, out_path: str, library: str | None, copies: str | None, k: int,
              batch_size: int, offsets: str | None, n_threads: int | None) -> None:
    """Match each shot of WAVEFORMS (.npy or Zarr, n x n_samples) to its k nearest library tiles."""
    import io
    import time

    import numpy as np

    from .._atomic import atomic_write_bytes
    from .._stack_io import open_stack
    from ..index import IndexWithCopies, WaveformIndex, match_shots

    idx = WaveformIndex.load(index_dir, library=library)
    if copies is not None:
        idx = IndexWithCopies(idx, WaveformIndex.load(copies))
    shots = open_stack(waveforms, "waveforms")
    t0 = time.perf_counter()
    rows, dist = match_shots(idx, shots, k=k, batch_size=batch_size, offsets=_offsets(offsets), n_threads=n_threads)
    elapsed = time.perf_counter() - t0
    arrays = {"rows": rows, "distances": dist}
    if idx.tile_ids is not None:
        arrays["tile_ids"] = idx.tile_ids[rows]
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(out_path, buf.getvalue())
    click.echo(f"match: {rows.shape[0]} shots x {k} matches in {elapsed:.1f} s "
               f"({rows.shape[0] / max(elapsed, 1e-9):,.0f} shots/s) -> {out_path}")


@main.command("evaluate-matching")
@click.argument("library", required=False, type=click.Path(exists=True, file_okay=False))
@click.option("-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False),
              help="Folder for the table (.md, .json) and the figure (.png).")
@click.option("--synthetic", type=int, default=None,
              help="Instead of LIBRARY: a synthetic library of this many tiles (with class truth).")
@click.option("--holdout", type=float, default=0.2, show_default=True, help="Share held out (200k / 50k = 0.2).")
@click.option("-k", type=int, default=30, show_default=True)
@click.option("--crevassed-threshold", type=float, default=0.1, show_default=True,
              help="A tile is crevassed when truth_crevassed_fraction exceeds this.")
@click.option("--max-queries", type=int, default=5000, show_default=True, help="Held-out queries per condition.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", "n_threads", type=int, default=None)
def evaluate_matching_cmd(library: str | None, out_dir: str, synthetic: int | None, holdout: float, k: int,
                          crevassed_threshold: float, max_queries: int, seed: int, n_threads: int | None) -> None:
    """Reproduce the talk's experiment: index part of LIBRARY, match the held-out rest clean and shifted."""
    from pathlib import Path

    import numpy as np

    from ..errors import CrevkitValueError
    from ..evaluate_matching import evaluate_matching, format_table, synthetic_library, synthetic_tiles

    if (library is None) == (synthetic is None):
        raise CrevkitValueError("give either a LIBRARY folder or --synthetic N")
    if synthetic is not None:
        waves, truth = synthetic_library(synthetic, seed)
        pixel = 1.0

        def tiles(rows):
            return synthetic_tiles(rows, seed, size=100, pixel_size=1.0)[0]
    else:
        from ..library import open_library

        lib = open_library(library)
        if "truth_crevassed_fraction" not in lib.table.columns:
            raise CrevkitValueError(f"{library}: the library has no truth_crevassed_fraction column")
        waves = np.asarray(lib.waveforms[:])
        truth = lib.table["truth_crevassed_fraction"].to_numpy() > crevassed_threshold
        pixel = float(lib.metadata.get("pixel_size", 0.5))
        tiles = None
        store = lib.metadata.get("store")
        if store and (Path(store) / "store.json").exists():
            from ..tiles import TileStore

            ts = TileStore(store)

            def tiles(rows):
                return ts.read(np.asarray(rows, dtype=np.int64))
    res = evaluate_matching(waves, truth, holdout_fraction=holdout, k=k, max_queries=max_queries, seed=seed,
                            out_dir=out_dir, tiles=tiles, pixel_size=pixel, n_threads=n_threads)
    click.echo(format_table(res["rows"], list(res["rows"][0])))
    click.echo(f"written: {', '.join(res['files'].values())}")
