"""Denoiser benchmark: synthetic library, held-out shots at fixed SNRs, the a/b/c/d table.

``run(quick=False)`` builds a synthetic library (varied 200 × 200 tiles at
0.5 m: tilted planes, V-shaped crevasse troughs, smooth undulations and
basins), simulates GLAS waveforms, trains a :class:`crevkit.denoise.Denoiser`
on an endless stream of noisy copies, and measures on shots from tiles never
seen in training:

* waveform RMSE vs the clean waveform (relative to the clean peak),
* shift error in ns (thresholded-centroid difference to the clean waveform),
* retrieval: share of shots whose k = 30 exact matches (NumPy GEMM in
  square-root, centroid-aligned, unit-L2 space) agree with the footprint's
  truth class (crevassed or not, by majority),

for (a) the noisy waveform, (b) the classical baseline (Savitzky–Golay +
leading-edge alignment; also a Gaussian matched filter, with and without a
noise floor), (c) the denoiser (and the network alone, without the blend of
:func:`crevkit.denoise.blend_with_classical`; and (c*) matched as the pipeline
matches it, against the library beside its noisy copies denoised the same way,
:func:`crevkit.denoise.noisy_library_copies`), (d) the clean waveform (ceiling),
over mixed SNR and split by SNR 3 / 5 / 10 / 20 / 50.  It also times training
(samples/s) and inference (waveforms/s) on the CPU threads it is given and, if
CUDA is present, on the GPU.

The generator (:func:`make_tiles`, :func:`make_library`) and the stand-in noise
model (:class:`SyntheticNoise`) are shared with ``tests/test_denoise.py``.
Timings depend on the machine and its load; they are measured here, never
asserted in tests.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

__all__ = ["CLASS_NAMES", "make_tiles", "make_library", "SyntheticNoise", "bench_noise_model", "make_shots", "evaluate",
           "target_summary", "run"]

CLASS_NAMES = ("plane", "crevassed", "undulating")
SNR_LEVELS = (3.0, 5.0, 10.0, 20.0, 50.0)


def make_tiles(n: int, seed: int, size: int = 200, pixel_size: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` synthetic DEM tiles (float32, mean-removed) and their class (0 plane, 1 crevassed, 2 undulating).

    Planes have a random slope (0–3°) and aspect; crevassed tiles are such a
    plane cut by a field of parallel V-shaped troughs (spacing 8–40 m, width
    2–10 m, depth 1–15 m, random orientation and slight curvature, sometimes
    covering only part of the tile); undulating tiles carry smooth sinusoidal
    undulations (wavelength 20–150 m, amplitude 0.3–4 m) and/or a Gaussian basin
    or dome.  Every tile has 2–8 cm of white roughness.
    """
    rng = np.random.default_rng(seed)
    half = (size - 1) / 2.0
    coords = (np.arange(size) - half) * pixel_size
    xx, yy = np.meshgrid(coords, -coords)
    labels = rng.integers(0, 3, size=n)
    out = np.empty((n, size, size), dtype=np.float32)
    for i in range(n):
        slope = np.tan(np.radians(rng.uniform(0.0, 3.0)))
        aspect = rng.uniform(0, 2 * np.pi)
        z = slope * (np.cos(aspect) * xx + np.sin(aspect) * yy)
        if labels[i] == 1:
            theta = rng.uniform(0, np.pi)
            spacing = rng.uniform(8.0, 40.0)
            width = rng.uniform(2.0, min(10.0, 0.8 * spacing))
            depth = rng.uniform(1.0, 15.0)
            curv = rng.uniform(-0.004, 0.004)
            u = np.cos(theta) * xx + np.sin(theta) * yy
            v = -np.sin(theta) * xx + np.cos(theta) * yy
            u = u + curv * v * v + rng.uniform(0, spacing)
            d = np.abs(((u + spacing / 2) % spacing) - spacing / 2)
            trough = depth * np.clip(1.0 - d / (width / 2.0), 0.0, None)
            if rng.random() < 0.3:  # crevasse field covering only part of the tile
                edge = rng.uniform(-20, 20)
                trough = trough * (v > edge)
            z = z - trough
        elif labels[i] == 2:
            for _ in range(rng.integers(1, 3)):
                if rng.random() < 0.6:
                    theta = rng.uniform(0, np.pi)
                    wl = rng.uniform(20.0, 150.0)
                    amp = rng.uniform(0.3, 4.0)
                    u = np.cos(theta) * xx + np.sin(theta) * yy
                    z = z + amp * np.sin(2 * np.pi * u / wl + rng.uniform(0, 2 * np.pi))
                else:
                    cx, cy = rng.uniform(-30, 30, size=2)
                    r = rng.uniform(10.0, 50.0)
                    amp = rng.uniform(-8.0, 8.0)
                    z = z + amp * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r))
        z = z + rng.normal(0.0, rng.uniform(0.02, 0.08), size=z.shape)
        out[i] = (z - z.mean()).astype(np.float32)
    return out, labels.astype(np.int64)


def make_library(n: int, seed: int, batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Simulated GLAS waveforms (n, 544) float32 unit-sum and class labels for ``n`` synthetic tiles."""
    from ..simulate import simulate_waveforms

    waves, labels = [], []
    for j, start in enumerate(range(0, n, batch)):
        tiles, lab = make_tiles(min(batch, n - start), seed=seed * 100_003 + j)
        waves.append(simulate_waveforms(tiles, pixel_size=0.5, instrument="glas"))
        labels.append(lab)
    return np.concatenate(waves), np.concatenate(labels)


class SyntheticNoise:
    """A stand-in noise model with the :class:`crevkit.noise.NoiseModel` sampling interface.

    Scales are log-uniform in ``scale_range`` (signal area in noise-σ units),
    shifts are normal (``shift_mean`` ± ``shift_sd`` samples, clipped to
    ``shift_range``), noise is zero-mean Gaussian with a per-shot level
    (0.7–1.3) and a low-pass-correlated part (like digitizer/background ripple).
    """

    def __init__(self, scale_range: tuple[float, float] = (15.0, 3000.0), shift_mean: float = 8.0,
                 shift_sd: float = 8.0, shift_range: tuple[float, float] = (-6.0, 40.0), correlated: float = 0.5):
        self.scale_range = scale_range
        self.shift_mean, self.shift_sd, self.shift_range = shift_mean, shift_sd, shift_range
        self.correlated = correlated

    def sample_scales(self, n: int, rng: np.random.Generator) -> np.ndarray:
        lo, hi = np.log(self.scale_range[0]), np.log(self.scale_range[1])
        return np.exp(rng.uniform(lo, hi, size=n)).astype(np.float32)

    def sample_shifts(self, n: int, rng: np.random.Generator) -> np.ndarray:
        s = rng.normal(self.shift_mean, self.shift_sd, size=n)
        return np.clip(s, *self.shift_range).astype(np.float32)

    def sample_noise(self, n: int, length: int, rng: np.random.Generator) -> np.ndarray:
        white = rng.normal(size=(n, length))
        if self.correlated > 0:
            k = np.exp(-0.5 * (np.arange(-6, 7) / 2.5) ** 2)
            k /= np.sqrt((k * k).sum())
            red = rng.normal(size=(n, length + k.size - 1))
            red = np.stack([np.convolve(r, k, mode="valid") for r in red]) if n else red[:, :length]
            white = np.sqrt(1 - self.correlated) * white + np.sqrt(self.correlated) * red
        level = rng.uniform(0.7, 1.3, size=(n, 1))
        out = white * level
        return (out - out.mean(axis=1, keepdims=True)).astype(np.float32)

    def sample(self, n: int, length: int, rng: np.random.Generator):
        return self.sample_scales(n, rng), self.sample_shifts(n, rng), self.sample_noise(n, length, rng)

    def __repr__(self) -> str:
        return (f"SyntheticNoise(scale_range={self.scale_range}, shift_mean={self.shift_mean}, "
                f"shift_sd={self.shift_sd}, shift_range={self.shift_range}, correlated={self.correlated})")


NOISE_SPEC = "NoiseModel.synthetic(snr_range=(2.0, 100.0), shift_range=(-5.0, 30.0), seed=0)"


def bench_noise_model() -> Any:
    """The noise model the benchmark and the tests train with (white noise, SNR 2–100, shifts −5…30 samples)."""
    try:
        from ..noise import NoiseModel
    except ImportError:  # pragma: no cover - crevkit.noise is optional for this module
        return SyntheticNoise(correlated=0.0)
    return NoiseModel.synthetic(snr_range=(2.0, 100.0), shift_range=(-5.0, 30.0), seed=0)


def make_shots(clean: np.ndarray, noise_model: Any, snr: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy shots at a given peak SNR each: ``scale · shift(clean, s) + noise``.

    Shift and noise come from ``noise_model``; the scale is set so that the
    shifted waveform's peak is ``snr`` times the noise vector's standard
    deviation.  Returns ``(noisy, shifts)``.
    """
    from ..denoise import shift_waveforms

    rng = np.random.default_rng(seed)
    n, length = clean.shape
    shifts = np.asarray(noise_model.sample_shifts(n, rng), dtype=np.float32)
    noise = np.asarray(noise_model.sample_noise(n, length, rng), dtype=np.float32)
    moved = shift_waveforms(clean, shifts)
    scale = snr * noise.std(axis=1) / np.maximum(moved.max(axis=1), 1e-12)
    return (scale[:, None] * moved + noise).astype(np.float32), shifts


def evaluate(outputs: dict[str, np.ndarray], clean: np.ndarray, truth: np.ndarray, library: np.ndarray,
             library_labels: np.ndarray, snr: np.ndarray, k: int = 30,
             libraries: dict[str, tuple[np.ndarray, np.ndarray]] | None = None
             ) -> dict[str, dict[str, dict[str, float]]]:
    """RMSE (relative to the clean peak), |shift error| (ns) and class retrieval per method and SNR group.

    ``libraries``: per output name, another ``(library, labels)`` to match it
    against (e.g. the library with its denoised copies); the rest use ``library``.
    """
    from ..denoise import class_retrieval, shift_error, waveform_rmse

    groups = {"mixed": np.ones(len(snr), bool)} | {f"{s:g}": snr == s for s in sorted(set(snr.tolist()))}
    result: dict[str, dict[str, dict[str, float]]] = {}
    for name, out in outputs.items():
        rmse = waveform_rmse(out, clean)
        shift = np.abs(shift_error(out, clean))
        lib, lib_labels = (libraries or {}).get(name, (library, library_labels))
        agree = class_retrieval(out, lib, lib_labels, truth, k=k)
        result[name] = {g: {"rmse": float(rmse[m].mean()), "shift_ns": float(np.median(shift[m])),
                            "shift_ns_mean": float(shift[m].mean()), "retrieval": float(agree[m].mean())}
                        for g, m in groups.items()}
    return result


def _format_table(result: dict, groups: list[str]) -> str:
    names = {"noisy": "(a) noisy + alignment", "classical": "(b) Savitzky–Golay + alignment",
             "gaussian": "(b') Gaussian matched filter + alignment",
             "floored": "(b'') Gaussian σ 3.5 + noise floor 3 sd + alignment",
             "network": "(c') network alone (no blend)",
             "denoiser": "(c) denoiser (network + blend)",
             "copies": "(c*) denoiser, matched against the library and its denoised copies (the pipeline)",
             "max": "(c'') denoiser, \"max\" blend (keeps the network's tail)", "clean": "(d) clean (ceiling)"}
    lines = []
    for metric, label, fmt in (("rmse", "waveform RMSE (fraction of clean peak)", "{:.4f}"),
                               ("shift_ns", "median |shift error| (ns)", "{:.2f}"),
                               ("retrieval", "class retrieval, k = 30 (share agreeing with truth)", "{:.3f}")):
        lines.append(f"\n{label}:\n")
        lines.append("| method | " + " | ".join("mixed SNR" if g == "mixed" else f"SNR {g}" for g in groups) + " |")
        lines.append("|---" * (len(groups) + 1) + "|")
        for key in ("noisy", "classical", "gaussian", "floored", "network", "denoiser", "copies", "max", "clean"):
            if key in result:
                cells = " | ".join(fmt.format(result[key][g][metric]) for g in groups)
                lines.append(f"| {names[key]} | {cells} |")
    return "\n".join(lines)


def target_summary(result: dict[str, dict[str, dict[str, float]]], method: str = "denoiser") -> str:
    """The issue's two retrieval targets, read off an :func:`evaluate` result for ``method``, each said met or not.

    Mixed-SNR retrieval at least 3 points above the best classical row, and
    the SNR >= 20 retrieval (the mean of the SNR 20 and 50 groups, which are
    the same size) within 5 points of the clean ceiling.
    """
    def retrieval(key: str, group: str) -> float:
        return result[key][group]["retrieval"]

    def high(key: str) -> float:
        return 0.5 * (retrieval(key, "20") + retrieval(key, "50"))

    best = max(("classical", "gaussian", "floored"), key=lambda key: retrieval(key, "mixed"))
    margin = 100.0 * (retrieval(method, "mixed") - retrieval(best, "mixed"))
    gap = 100.0 * (high("clean") - high(method))
    met = {True: "met", False: "not met"}
    return (f"Targets ({method}): mixed retrieval {retrieval(method, 'mixed'):.3f} against "
            f"{retrieval(best, 'mixed'):.3f} "
            f"for the best classical row ({best}), {margin:+.1f} points (target >= +3: {met[margin >= 3.0]}); "
            f"SNR >= 20 (mean of SNR 20 and 50) {high(method):.4f} against the clean ceiling's "
            f"{high('clean'):.4f}, {gap:.2f} points under (target <= 5: {met[gap <= 5.0]}).")


def _calibration(model: Any, library: np.ndarray, labels: np.ndarray, noise: Any, n_threads: int) -> str:
    """What the pipeline's ``denoise.blend: auto`` would pick here: :func:`crevkit.blend_calibration.calibrate_blend`
    on the training library with its classes as the labels (crevassed = the positive class)."""
    from ..blend_calibration import calibrate_blend
    from ..index import WaveformIndex

    index = WaveformIndex.build(library, n_threads=n_threads, progress=False)
    names = np.where(np.asarray(labels) == 1, "crevasse", "other").astype(object)
    r = calibrate_blend(model, library, names, noise, index, k=30, seed=0, n_threads=n_threads, max_tiles=2000)
    scores = ", ".join(f"{m} {v:.3f}" for m, v in r.auc.items())
    return (f"Blend calibration (`denoise.blend: auto`) on {r.n_tiles} labelled library tiles × 2 noisy draws: "
            f"AUC {scores} → **{r.mode}** (row (c) is \"floor\", row (c'') \"max\").")


def run(quick: bool = False, params: dict[str, Any] | None = None) -> str:
    """Train and measure the denoiser; return a markdown section for ``bench/RESULTS.md``.

    ``params``: extra :class:`crevkit.denoise.Denoiser` hyperparameters for the
    measured model (default: none, the "default run"); they are named in the
    section's header.
    """
    import torch

    from ..denoise import COPY_SNRS, Denoiser, classical_denoise, noisy_library_copies

    n_threads = min(2, len(os.sched_getaffinity(0)))
    n_lib = 2000 if quick else 12000
    n_test_tiles = 100 if quick else 3000  # 3000 × 2 shots at SNR >= 20: binomial sd of the mean ~0.4 points
    steps = 40 if quick else None  # None: the Denoiser default (the "default run")
    t0 = time.perf_counter()
    library, labels = make_library(n_lib, seed=1)
    test_clean, test_labels = make_library(n_test_tiles, seed=2)  # tiles never seen in training
    sim_s = time.perf_counter() - t0
    noise = bench_noise_model()
    extra = dict(params or {})
    params = dict(extra) if steps is None else {**extra, "n_steps": steps}
    model = Denoiser(seed=0, n_threads=n_threads, device="cpu", validation_every=20, **params)
    steps = model.config["n_steps"]
    t0 = time.perf_counter()
    model.fit(library, noise)
    train_s = time.perf_counter() - t0
    hist = model.history_
    train_rate = steps * model.config["batch_size"] / max(hist["train_seconds"], 1e-9)

    snr = np.repeat(np.asarray(SNR_LEVELS, dtype=np.float32), n_test_tiles)
    clean = np.tile(test_clean, (len(SNR_LEVELS), 1))
    truth = np.tile(test_labels, len(SNR_LEVELS))
    noisy, _ = make_shots(clean, noise, snr, seed=3)

    # inference speed: warm-up, then a timed pass over all shots
    model.transform(noisy[:512], batch_size=256)
    t0 = time.perf_counter()
    den = model.transform(noisy, batch_size=256)
    infer_s = time.perf_counter() - t0
    infer_rate = len(noisy) / infer_s
    net = model.transform(noisy, batch_size=256, blend="none")  # the network alone, for the table
    max_blend = model.transform(noisy, batch_size=256, blend="max")
    calibration = _calibration(model, library, labels, noise, n_threads)
    # the pipeline's matching (match.library_copies): the library beside its noisy copies, denoised like the shots
    copies = model.transform(noisy_library_copies(library, noise, COPY_SNRS, seed=11), batch_size=256)
    with_copies = (np.concatenate([library, copies]), np.tile(labels, 1 + len(COPY_SNRS)))
    outputs = {
        "noisy": classical_denoise(noisy, method="none", reference=library),
        "classical": classical_denoise(noisy, method="savgol", reference=library),
        "gaussian": classical_denoise(noisy, method="gaussian", reference=library),
        # the square roots of the matching space magnify the noise floor: drop it (best of a small grid)
        "floored": classical_denoise(noisy, method="gaussian", sigma=3.5, noise_floor=3.0, reference=library),
        "network": net,
        "denoiser": den,
        "copies": den,
        "max": max_blend,
        "clean": clean,
    }
    result = evaluate(outputs, clean, truth, library, labels, snr, libraries={"copies": with_copies})
    groups = ["mixed"] + [f"{s:g}" for s in SNR_LEVELS]
    stable = model.time_to_stable_validation()

    gpu = ""
    if torch.cuda.is_available():
        g = Denoiser(**{**extra, "n_steps": steps, "batch_size": 1024, "seed": 0, "device": "cuda"})
        g.fit(library, noise)
        g_train = steps * 1024 / g.history_["train_seconds"]
        g.transform(noisy[:1024], batch_size=8192)
        t0 = time.perf_counter()
        g.transform(noisy, batch_size=8192)
        g_inf = len(noisy) / (time.perf_counter() - t0)
        gpu = (f"\nGPU ({torch.cuda.get_device_name(0)}): training {g_train:,.0f} samples/s, "
               f"inference {g_inf:,.0f} waveforms/s.\n")

    return (
        "## Denoiser\n\n"
        f"Synthetic library: {n_lib} tiles (plane / crevassed / undulating), {n_test_tiles} held-out tiles × "
        f"{len(SNR_LEVELS)} SNRs = {len(noisy)} shots; noise: `{NOISE_SPEC}`, simulated in {sim_s:.1f} s. "
        f"Model: {model.n_parameters_:,} parameters, {steps} steps × batch {model.config['batch_size']}, "
        f"loss `{model.config['loss']}`" + (f" + `{extra}`" if extra else "")
        + f", torch {torch.__version__}, {n_threads} CPU threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '(unset)')}; shared machine, timings indicative.\n\n"
        f"CPU training: {train_s:.1f} s wall ({train_rate:,.0f} samples/s); validation loss stable "
        f"(within 5 % of its best) after {stable:.1f} s. CPU inference: {infer_rate:,.0f} waveforms/s "
        f"(batch 256).\n\n{calibration}\n" + gpu + _format_table(result, groups) + "\n\n"
        + target_summary(result, "copies") + "\n"
    )


if __name__ == "__main__":  # python -m crevkit.benchmarks.denoise [--quick] [JSON of Denoiser hyperparameters]
    import json
    import sys

    args = [a for a in sys.argv[1:] if a != "--quick"]
    print(run(quick="--quick" in sys.argv[1:], params=json.loads(args[0]) if args else None))
