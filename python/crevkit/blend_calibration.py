"""Choose how the denoiser's output is blended, from the labelled library tiles (no truth needed).

:func:`crevkit.denoise.blend_with_classical` mixes the network's output with a
noise-floored matched filter.  Which mix retrieves a surface class best
depends on how that class shows in the waveforms: on the benchmark's tiles
the floored mix ("floor") retrieves best, on the demo scene, whose crevasses
show as a long weak tail that the floor drops, keeping the network's tail
("max") raised the shot AUC by 0.03-0.05 on both seeds.  So a run can choose
the mode on its own data, the way a hyperparameter is chosen by validation:

1. take the library tiles that carry a label (``max_tiles`` of them at most,
   drawn by ``seed``);
2. make each look recorded ``repeats`` times with the run's noise model
   (:class:`crevkit.denoise.NoisyWaveformStream`: scale, shift, noise and
   record length, as the denoiser was trained);
3. denoise them once (the network alone) and blend them in every candidate
   mode;
4. match each against the library, leaving out the tile itself, and take
   the ``weighting``-weighted share of crevasse among the labelled matches
   (:func:`crevkit.probability.shot_probabilities`);
5. score each mode by the ROC AUC of that share against the tile's own
   label, and keep the best (ties: the earlier mode in ``modes``).

Only the user's tile labels are used, never the footprint truth.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from ._validation import check_int
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = ["BlendCalibration", "calibrate_blend"]


@dataclass
class BlendCalibration:
    """The outcome of :func:`calibrate_blend`.

    Attributes
    ----------
    mode : str
        The chosen blend mode.
    auc, accuracy : dict of str to float
        Per candidate mode: ROC AUC of the crevasse share against the tiles'
        labels, and the share of tiles whose majority agrees with their label.
    n_tiles, n_shots, n_positive : int
        Labelled tiles used, simulated shots (tiles × repeats), and how many of
        those shots come from a positive tile.
    reason : str
        Why the first mode was kept without a comparison ("" when compared).
    """

    mode: str
    auc: dict[str, float] = field(default_factory=dict)
    accuracy: dict[str, float] = field(default_factory=dict)
    n_tiles: int = 0
    n_shots: int = 0
    n_positive: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (NaN scores become None)."""
        out = asdict(self)
        for key in ("auc", "accuracy"):
            out[key] = {m: (None if not np.isfinite(v) else float(v)) for m, v in out[key].items()}
        return out


def _without_self(rows: np.ndarray, dist: np.ndarray, source: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``k`` matches of each query that are not its own library row (-1 / NaN padded)."""
    keep = (rows != source[:, None]) & (rows >= 0)
    order = np.argsort(~keep, axis=1, kind="stable")[:, :k]  # kept matches first, in their order
    r = np.take_along_axis(rows, order, axis=1)
    d = np.take_along_axis(dist, order, axis=1).astype(np.float32)
    dropped = ~np.take_along_axis(keep, order, axis=1)
    r[dropped] = -1
    d[dropped] = np.nan
    return r, d


def calibrate_blend(denoiser: Any, library_waveforms: Any, tile_labels: Any, noise_model: Any, index: Any, *,
                    modes: Sequence[str] = ("floor", "max"), k: int = 30, weighting: str = "inverse_distance",
                    positive: str = "crevasse", repeats: int = 2, max_tiles: int = 4000, seed: int = 0,
                    n_threads: int | None = None) -> BlendCalibration:
    """Pick the blend mode whose matches best recover the labelled tiles' own labels.

    Parameters
    ----------
    denoiser : crevkit.denoise.Denoiser
        A fitted denoiser.
    library_waveforms : array_like, shape (n_tiles, n_samples)
        The library (one row per tile, the rows ``index`` returns).
    tile_labels : array_like of str, shape (n_tiles,)
        Label per library row; ``"unknown"``, empty or None = not labelled.
    noise_model : crevkit.noise.NoiseModel
        What makes the tiles look recorded (the one the denoiser trained on).
    index : crevkit.index.WaveformIndex or IndexWithCopies, or a mapping of mode to one
        The run's index over the same library; a mapping where each mode's
        shots are matched against library copies denoised with that mode
        (the pipeline's ``match.library_copies``).  A tile is left out of its
        own matches however often it comes back (its copies too).
    modes : sequence of str
        Candidate modes of :func:`crevkit.denoise.blend_with_classical`.
    k : int
        Matches per shot (the run's ``match.k``).
    weighting : str
        As in :func:`crevkit.probability.shot_probabilities`.
    positive : str
        The label whose share is scored.
    repeats : int
        Noisy versions of every tile.
    max_tiles : int
        Labelled tiles used at most (a reproducible draw by ``seed``).
    seed : int
        Seeds the tile draw and the noise.
    n_threads : int, optional
        Threads for the index queries.

    Returns
    -------
    BlendCalibration
    """
    import torch

    from .denoise import BLEND_MODES, NoisyWaveformStream, blend_with_classical
    from .metrics import roc_auc
    from .probability import shot_probabilities

    modes = list(modes)
    if not modes or any(m not in BLEND_MODES for m in modes):
        raise CrevkitValueError(f"modes must be a non-empty list of {BLEND_MODES}, got {modes!r}")
    if getattr(denoiser, "model_", None) is None:
        raise CrevkitTypeError("denoiser must be a fitted crevkit.denoise.Denoiser")
    k = check_int(k, "k", minimum=1)
    repeats = check_int(repeats, "repeats", minimum=1)
    max_tiles = check_int(max_tiles, "max_tiles", minimum=2)
    seed = check_int(seed, "seed", minimum=0)
    lib = np.asarray(library_waveforms, dtype=np.float32)
    labels = np.asarray(tile_labels, dtype=object)
    if lib.ndim != 2 or labels.shape != (lib.shape[0],):
        raise CrevkitValueError(f"tile_labels must have one label per library row ({lib.shape[0]}), "
                                f"got shape {labels.shape}")
    if isinstance(index, Mapping):
        missing = [m for m in modes if m not in index]
        if missing:
            raise CrevkitValueError(f"index: no index for mode(s) {missing}")
        indexes = {m: index[m] for m in modes}
    else:
        indexes = {m: index for m in modes}
    for idx in indexes.values():
        if lib.shape[0] != idx.count:
            raise CrevkitValueError(f"library_waveforms has {lib.shape[0]} rows, the index {idx.count}")
    sums = lib.sum(axis=1, dtype=np.float64)
    known = np.array([isinstance(v, str) and v not in ("", "unknown") for v in labels]) & (sums > 0)
    is_pos = labels == positive
    if not (known & is_pos).any() or not (known & ~is_pos).any():
        return BlendCalibration(mode=modes[0], n_tiles=int(known.sum()),
                                reason=f"the labelled tiles need both {positive!r} and other labels")
    if len(modes) == 1:
        return BlendCalibration(mode=modes[0], n_tiles=int(known.sum()), reason="one candidate mode")
    rng = np.random.default_rng([seed, 0xB1E2D])
    rows = np.flatnonzero(known)
    if rows.size > max_tiles:
        rows = np.sort(rng.choice(rows, size=max_tiles, replace=False))
    unit = (lib[rows] / sums[rows, None]).astype(np.float32)  # only the drawn tiles go to the stream's device
    stream = NoisyWaveformStream(unit, noise_model, batch_size=rows.size, seed=seed,
                                 record_lengths=bool(denoiser.config.get("record_lengths", True)))
    shares: dict[str, list[np.ndarray]] = {m: [] for m in modes}
    for rep in range(repeats):
        with torch.inference_mode():
            noisy = stream.batch(np.random.default_rng([seed, 0xB1E2D, rep + 1]),
                                 rows=np.arange(rows.size))[0].cpu().numpy()
        net = denoiser.transform(noisy, blend="none", progress=False)
        for mode in modes:
            w = blend_with_classical(net, noisy, mode=mode, network_weights=denoiser.blend_weights_)
            idx = indexes[mode]  # enough matches that k remain once the tile's own are left out
            r, d = idx.query(w, k=min(k + idx.repeats_per_row, idx.count), n_threads=n_threads)
            r, d = _without_self(np.asarray(r), np.asarray(d), rows, k)
            p = shot_probabilities(r, d, labels, weighting=weighting, positive=positive)["p_crevasse"].to_numpy()
            shares[mode].append(p)
    truth = np.tile(is_pos[rows], repeats)
    result = BlendCalibration(mode=modes[0], n_tiles=int(rows.size), n_shots=int(truth.size),
                              n_positive=int(truth.sum()))
    for mode in modes:
        p = np.concatenate(shares[mode])
        ok = np.isfinite(p)
        both = 0 < truth[ok].sum() < ok.sum()
        result.auc[mode] = float(roc_auc(truth[ok], p[ok])) if both else float("nan")
        result.accuracy[mode] = float(((p[ok] > 0.5) == truth[ok]).mean()) if ok.any() else float("nan")
    scores = [result.auc[m] if np.isfinite(result.auc[m]) else -np.inf for m in modes]
    result.mode = modes[int(np.argmax(scores))]  # first of the best: ties keep the earlier mode
    return result
