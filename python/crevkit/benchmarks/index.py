"""Matching benchmark: alignment, matching space, and speed of crevkit's index vs exact and other ANN libraries.

Three tables, all on synthetic libraries with class truth
(:func:`crevkit.evaluate_matching.synthetic_library`: 100 m tiles, 100 × 100
at 1 m, GLAS preset; simulated with the leading edge at 50 ns so that shifts
of ±40 ns stay inside the window):

1. alignment: source retrieval (the library waveform of the query's own tile
   in the top 10) for waveforms shifted by 0…40 samples (sign at random,
   linear interpolation), clean and with white noise;
2. matching space: linear vs square-root amplitudes, 5-NN class accuracy and
   class agreement of the 30 matches, for held-out tiles (not in the library);
3. speed: build time, memory, queries/s (wall and per CPU-second) and
   recall@10 / recall@30 vs exact search, crevkit (PCA → HNSW → exact
   re-rank) at several settings vs the exact baselines (NumPy GEMM blocked and
   threaded, FAISS IndexFlatIP / IndexFlatL2, scikit-learn brute force) and
   other ANN libraries (FAISS HNSW, PyNNDescent, when installed); "× best
   exact" is relative to the fastest exact baseline.
"""

from __future__ import annotations

import os
import time

import numpy as np

__all__ = ["run"]

THREADS = 2


def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:  # pragma: no cover - non-Linux
        return float("nan")


def _recall(rows: np.ndarray, truth: np.ndarray, k: int) -> float:
    hits = 0
    for a, b in zip(rows[:, :k], truth[:, :k]):
        hits += len(set(a.tolist()) & set(b.tolist()))
    return hits / (k * rows.shape[0])


def _timed(fn, repeats: int = 1):
    """(result, wall s, CPU s of the whole process) of ``fn()``; medians over ``repeats`` runs.

    CPU seconds (all threads) are less sensitive than wall time to other work
    on a shared machine: queries per CPU-second compare methods more fairly.
    """
    walls, cpus = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return out, float(np.median(walls)), float(np.median(cpus))


def _shifted(waves, shifts, rng):
    from crevkit.index import shift_waveforms

    sign = np.where(rng.random(waves.shape[0]) < 0.5, -1.0, 1.0)
    return shift_waveforms(waves, sign * shifts, "linear")


def _noisy(waves, rng, rel=0.03):
    return (waves + rng.normal(0, rel, waves.shape) * waves.max(axis=1, keepdims=True)).astype(np.float32)


def alignment_table(n_lib: int, n_q: int, seed: int = 1) -> tuple[str, list[dict]]:
    from crevkit.evaluate_matching import format_table, synthetic_library
    from crevkit.index import WaveformIndex

    waves, _ = synthetic_library(n_lib, seed, lead_ns=50.0)
    rng = np.random.default_rng(seed)
    src = rng.choice(n_lib, n_q, replace=False)
    shifts = [0.0, 2.5, 5.0, 10.0, 20.0, 40.0]
    configs = [
        ("none (raw vectors)", dict(alignment="none"), None),
        ("none + 81 offsets −40…40 step 1 (talk)", dict(alignment="none"), np.arange(-40, 41, 1.0)),
        ("centroid, FFT shift (default)", dict(alignment="centroid"), None),
        ("centroid, linear-interpolation shift", dict(alignment="centroid", interpolation="linear"), None),
        ("centroid + offsets −1, 0, +1", dict(alignment="centroid"), [-1.0, 0.0, 1.0]),
        ("leading edge (50 % of peak)", dict(alignment="leading_edge"), None),
        ("centroid, noise floor 10 % of max", dict(alignment="centroid", noise_floor=0.1), None),
    ]
    queries = {s: _shifted(waves[src], s, np.random.default_rng(seed + 7)) for s in shifts}
    noisy = {s: _noisy(queries[s], np.random.default_rng(seed + 9)) for s in (0.0, 10.0)}
    out = []
    for name, params, offsets in configs:
        idx = WaveformIndex.build(waves, n_threads=THREADS, **params)
        row = {"method": name}
        t_total, n_total = 0.0, 0
        for s in shifts:
            t0 = time.perf_counter()
            rows, _ = idx.query(queries[s], k=10, offsets=offsets, n_threads=THREADS)
            t_total += time.perf_counter() - t0
            n_total += src.size
            row[f"shift {s:g}"] = float((rows == src[:, None]).any(axis=1).mean())
        for s in (0.0, 10.0):
            rows, _ = idx.query(noisy[s], k=10, offsets=offsets, n_threads=THREADS)
            row[f"noisy, shift {s:g}"] = float((rows == src[:, None]).any(axis=1).mean())
        row["queries/s"] = n_total / t_total
        out.append(row)
    md = format_table(out, list(out[0]))
    return md, out


def space_table(n_lib: int, n_q: int, seed: int = 2) -> tuple[str, list[dict]]:
    from crevkit.evaluate_matching import format_table, synthetic_library
    from crevkit.index import WaveformIndex

    waves, cls = synthetic_library(n_lib + n_q, seed, lead_ns=50.0)
    lib, lcls, q, qcls = waves[:n_lib], cls[:n_lib], waves[n_lib:], cls[n_lib:]
    qs = _shifted(q, 10.0, np.random.default_rng(seed))
    qn = _noisy(q, np.random.default_rng(seed + 1))
    out = []
    for transform, alignment, floor in (("linear", "centroid", 0.0), ("linear", "none", 0.0),
                                        ("sqrt", "centroid", 0.0), ("sqrt", "none", 0.0),
                                        ("sqrt", "centroid", 0.03), ("sqrt", "centroid", 0.1)):
        if True:
            idx = WaveformIndex.build(lib, transform=transform, alignment=alignment, noise_floor=floor,
                                      n_threads=THREADS)
            row = {"transform": transform, "alignment": alignment, "noise floor": floor}
            for label, qq in (("clean", q), ("shift ±10", qs), ("noisy", qn)):
                rows, _ = idx.query(qq, k=30, n_threads=THREADS)
                m = lcls[rows]
                row[f"5-NN acc, {label}"] = float(np.mean((m[:, :5].mean(axis=1) > 0.5) == qcls))
                if label == "clean":
                    row["agreement@30, clean"] = float(np.mean(m == qcls[:, None]))
            out.append(row)
    return format_table(out, list(out[0])), out


def speed_table(n_lib: int, n_q: int, seed: int = 3, stream: int = 0, ann_baselines: bool = True,
                settings=((32, 32), (48, 48), (64, 64), (96, 96), (128, 160)), extra_pca=(),
                repeats: int = 3) -> tuple[str, dict]:
    """Speed table: exact baselines, crevkit at ``settings`` (ef, rerank), other ANN libraries.

    "× best exact" is queries/s over the fastest exact method's (NumPy GEMM,
    scikit-learn brute force, FAISS flat), by wall time and by CPU time
    (queries per CPU-second of the process, all threads).  crevkit's timings
    are medians of ``repeats`` runs.  ``extra_pca``: also build crevkit indexes
    with these PCA dimensions (settings ef=32/rerank=32 and 48/48).
    ``ann_baselines=False`` skips FAISS HNSW and PyNNDescent (minutes of build
    time at 200k).
    """
    from threadpoolctl import threadpool_limits

    from crevkit.evaluate_matching import format_table, synthetic_library
    from crevkit.index import WaveformIndex, exact_search

    t0 = time.perf_counter()
    waves, _ = synthetic_library(n_lib + n_q, seed)
    gen_s = time.perf_counter() - t0
    lib, raw_q = waves[:n_lib], waves[n_lib:]
    del waves
    rows_out = []
    notes = {"generate_s": gen_s}
    with threadpool_limits(THREADS):
        # crevkit index (includes alignment + transform of the library)
        rss0 = _rss_mb()
        t0 = time.perf_counter()
        idx = WaveformIndex.build(lib, n_threads=THREADS)
        build_s = time.perf_counter() - t0
        mem = _rss_mb() - rss0
        notes["index"] = repr(idx)
        libv = idx._vectors  # prepared unique unit vectors: the same data for every library below
        qv = idx.prepare(raw_q)
        # warm-up outside the timings (thread pools, FFT plans, threadpoolctl's library scan)
        exact_search(libv, qv[:64], 30, n_threads=THREADS)
        idx.query(raw_q[:256], k=30, n_threads=THREADS)
        # exact ground truth (NumPy GEMM into a reused block buffer, top-k selection, THREADS threads)
        (ex_labels, _), gemm_s, gemm_cpu = _timed(lambda: exact_search(libv, qv, 30, n_threads=THREADS))
        exact_qps = n_q / gemm_s
        # compare everyone in unique-vector space: crevkit's library rows -> unique labels
        label_of_row = np.empty(idx.count, np.int64)
        label_of_row[idx._groups] = np.repeat(np.arange(idx.n_unique), np.diff(idx._group_offsets))
        truth = ex_labels
        rows_out.append({"method": f"exact: NumPy GEMM (float32, blocks of 256 queries, {THREADS} threads)",
                         "build s": 0.0, "memory MB": libv.nbytes / 2**20,
                         "queries/s": exact_qps, "queries/CPU-s": n_q / gemm_cpu, "recall@10": 1.0, "recall@30": 1.0})
        # FAISS flat (exact), on a subset of queries
        try:
            import faiss

            faiss.omp_set_num_threads(THREADS)
            nsub = min(n_q, 5000)
            for cls in (faiss.IndexFlatIP, faiss.IndexFlatL2):
                fi = cls(libv.shape[1])
                fi.add(libv)
                (_, fr), fs, fc = _timed(lambda: fi.search(qv[:nsub], 30))
                rows_out.append({"method": f"exact: FAISS {faiss.__version__} {cls.__name__} ({nsub} queries)",
                                 "build s": 0.0, "memory MB": libv.nbytes / 2**20, "queries/s": nsub / fs,
                                 "queries/CPU-s": nsub / fc,
                                 "recall@10": _recall(fr, truth[:nsub], 10), "recall@30": _recall(fr, truth[:nsub], 30)})
                del fi
        except ImportError:
            notes["faiss"] = "not installed"
        # scikit-learn brute force on a subset of queries
        from sklearn.neighbors import NearestNeighbors

        nsub = min(n_q, 2000)
        nn = NearestNeighbors(n_neighbors=30, algorithm="brute", n_jobs=THREADS).fit(libv)
        sk_rows, sk_s, sk_c = _timed(lambda: nn.kneighbors(qv[:nsub], return_distance=False))
        rows_out.append({"method": f"exact: scikit-learn brute ({nsub} queries)", "build s": 0.0,
                         "memory MB": libv.nbytes / 2**20, "queries/s": nsub / sk_s, "queries/CPU-s": nsub / sk_c,
                         "recall@10": _recall(sk_rows, truth[:nsub], 10),
                         "recall@30": _recall(sk_rows, truth[:nsub], 30)})
        del nn
        best_exact = max(r["queries/s"] for r in rows_out)  # every row so far is an exact method
        best_exact_cpu = max(r["queries/CPU-s"] for r in rows_out)
        variants = [(idx, settings, build_s, mem)]
        for m in extra_pca:
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            other = WaveformIndex.build(lib, n_threads=THREADS, pca_components=m)
            other.query(raw_q[:256], k=30, n_threads=THREADS)
            variants.append((other, ((32, 32), (48, 48)), time.perf_counter() - t0, _rss_mb() - rss0))
        for ix, sets, b_s, b_mem in variants:
            for ef, rr in sets:
                (r, _), qs, qc = _timed(lambda: ix.query(raw_q, k=30, ef_search=ef, rerank=rr, n_threads=THREADS),
                                        repeats)
                r = label_of_row[r]  # same dedup for every variant (it precedes the PCA)
                default = " (default)" if ix is idx and (ef, rr) == (idx.ef_search, idx.rerank) else ""
                rows_out.append({"method": f"crevkit PCA{ix.metadata['pca_components']}+HNSW M=16 ef={ef} rerank={rr}"
                                           f"{default}, raw waveforms in",
                                 "build s": b_s, "memory MB": b_mem, "queries/s": n_q / qs, "queries/CPU-s": n_q / qc,
                                 "recall@10": _recall(r, truth, 10), "recall@30": _recall(r, truth, 30)})
                if default:
                    notes["crevkit_default_qps"] = n_q / qs
        del variants
        notes["stream"] = stream_shots(idx, raw_q, stream) if stream else {"shots": 0, "wall_s": 0.0, "cpu_s": 0.0,
                                                                           "shots_per_s": float("nan")}
        del idx
        # FAISS HNSW, full dimension
        try:
            if not ann_baselines:
                raise ModuleNotFoundError("skipped (ann_baselines=False)")
            import faiss

            faiss.omp_set_num_threads(THREADS)
            rss0 = _rss_mb()
            t0 = time.perf_counter()
            fi = faiss.IndexHNSWFlat(libv.shape[1], 16)
            fi.hnsw.efConstruction = 100
            fi.add(libv)
            fb = time.perf_counter() - t0
            fmem = _rss_mb() - rss0
            for ef in (64, 128):
                fi.hnsw.efSearch = ef
                (_, fr), qs, qc = _timed(lambda: fi.search(qv, 30))
                rows_out.append({"method": f"FAISS {faiss.__version__} HNSWFlat M=16 efC=100 efSearch={ef}, 544-d",
                                 "build s": fb, "memory MB": fmem, "queries/s": n_q / qs, "queries/CPU-s": n_q / qc,
                                 "recall@10": _recall(fr, truth, 10), "recall@30": _recall(fr, truth, 30)})
            del fi
        except ImportError as exc:
            notes["faiss HNSW"] = "skipped" if "skipped" in str(exc) else "not installed"
        # PyNNDescent
        try:
            if not ann_baselines:
                raise ModuleNotFoundError("skipped (ann_baselines=False)")
            import pynndescent

            rss0 = _rss_mb()
            t0 = time.perf_counter()
            nd = pynndescent.NNDescent(libv, n_neighbors=30, metric="euclidean", n_jobs=THREADS, random_state=0)
            nd.prepare()
            nb = time.perf_counter() - t0
            nmem = _rss_mb() - rss0
            for eps in (0.1, 0.2):
                (nr, _), qs, qc = _timed(lambda: nd.query(qv, k=30, epsilon=eps))
                rows_out.append({"method": f"PyNNDescent {pynndescent.__version__} n_neighbors=30 epsilon={eps}, 544-d "
                                           "(build incl. numba JIT)",
                                 "build s": nb, "memory MB": nmem, "queries/s": n_q / qs, "queries/CPU-s": n_q / qc,
                                 "recall@10": _recall(nr, truth, 10), "recall@30": _recall(nr, truth, 30)})
            del nd
        except ImportError as exc:
            notes["pynndescent"] = "skipped" if "skipped" in str(exc) else "not installed"
    notes["exact_qps"] = exact_qps
    notes["best_exact_qps"] = best_exact
    notes["best_exact_qps_cpu"] = best_exact_cpu
    for row in rows_out:
        row["× best exact"] = row["queries/s"] / best_exact
        row["× best exact (CPU)"] = row["queries/CPU-s"] / best_exact_cpu
    return format_table(rows_out, list(rows_out[0])), notes


def stream_shots(idx, raw_q: np.ndarray, n_total: int = 3_000_000, batch: int = 20_000, seed: int = 5) -> dict:
    """Match ``n_total`` shots (k = 30) through :func:`crevkit.index.match_shots`, timed.

    Each batch is a fresh perturbation of the held-out queries (random shift of
    up to ±5 samples, 3 % white noise), made outside the timed region, so no
    query repeats.  Returns wall seconds, CPU seconds and shots/s.
    """
    from crevkit.index import match_shots

    rng = np.random.default_rng(seed)
    wall = cpu = 0.0
    done = 0
    while done < n_total:
        m = min(batch, n_total - done)
        src = raw_q[rng.integers(0, raw_q.shape[0], m)]
        q = _noisy(_shifted(src, rng.uniform(0, 5, m), rng), rng)
        t0, c0 = time.perf_counter(), time.process_time()
        match_shots(idx, q, k=30, batch_size=m, n_threads=THREADS, progress=False)
        wall += time.perf_counter() - t0
        cpu += time.process_time() - c0
        done += m
    return {"shots": done, "wall_s": wall, "cpu_s": cpu, "shots_per_s": done / wall}


def run(quick: bool = False) -> str:
    from importlib.metadata import version

    import sklearn

    from crevkit._validation import resolve_threads

    n_align, q_align = (4000, 200) if quick else (20000, 500)
    n_space, q_space = (4000, 500) if quick else (20000, 2000)
    n_speed, q_speed = (20000, 2000) if quick else (200000, 20000)
    t0 = time.perf_counter()
    a_md, _ = alignment_table(n_align, q_align)
    s_md, _ = space_table(n_space, q_space)
    sp_md, notes = speed_table(n_speed, q_speed, stream=300_000 if quick else 3_000_000)
    total = time.perf_counter() - t0
    minutes_3m = 3_000_000 / notes.get("crevkit_default_qps", float("nan")) / 60
    streamed = notes["stream"]
    lines = [
        "## Matching (`crevkit.WaveformIndex`)",
        "",
        "Synthetic libraries with class truth (`crevkit.evaluate_matching.synthetic_library`: 100 m tiles, "
        "100×100 at 1 m; planes + V-shaped crevasse troughs vs planes + undulations/basins; GLAS preset). "
        f"{THREADS} threads everywhere (hnswlib, FAISS, PyNNDescent, BLAS via threadpoolctl); usable cores "
        f"{resolve_threads(None)}. Timings taken on a shared 2-core machine (other work running): "
        "treat them as indicative.",
        "",
        f"### Alignment: source tile in the top 10 ({q_align} library waveforms shifted, library {n_align:,}, "
        "default index parameters, "
        "leading edge at 50 ns, shift sign at random, linear interpolation; noisy = white noise σ = 3 % of peak)",
        "",
        a_md,
        "",
        f"### Matching space: class of held-out tiles ({q_space} queries not in the library of {n_space:,}; "
        "k = 30; 5-NN majority vote)",
        "",
        s_md,
        "",
        f"### Speed: {n_speed:,} library waveforms, {q_speed:,} queries, k = 30, {THREADS} threads",
        "",
        "Every method searches the same prepared vectors (centroid alignment, square root, unit L2, "
        "deduplicated); crevkit's queries/s include preparing the raw query waveforms (alignment FFT, "
        "transform), the others' do not. Recall is against exact search. \"× best exact\": queries/s over "
        "the fastest exact baseline's, by wall time and by CPU time (queries per CPU-second of the process, "
        "all threads: less sensitive to other work on a shared machine). Memory: growth of the process RSS "
        "during the build (crevkit: prepared full-dimension vectors + PCA graph).",
        "",
        sp_md,
        "",
        f"- library generation (tiles + forward model): {notes['generate_s']:.0f} s; index: {notes['index']}",
        f"- {streamed['shots']:,} shots matched (k = 30, default setting, `match_shots` in batches of 20,000 "
        f"fresh shifted + noisy queries): {streamed['wall_s'] / 60:.1f} min wall, {streamed['cpu_s'] / 60:.1f} "
        f"CPU-min, {streamed['shots_per_s']:,.0f} shots/s (the queries/s above give ≈ {minutes_3m:.1f} min "
        "for 3,000,000)",
        f"- versions: hnswlib {version('hnswlib')}, scikit-learn {sklearn.__version__}, NumPy {np.__version__}; "
        f"FAISS/PyNNDescent: {notes.get('faiss', 'see table')} / {notes.get('pynndescent', 'see table')}",
        f"- benchmark wall time {total:.0f} s",
    ]
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    import sys

    print(run(quick="--quick" in sys.argv))
