"""How much class information do the benchmark's noisy shots carry?  A direct classifier as a probe.

The denoiser benchmark (``crevkit bench --only denoise``) scores retrieval:
the k = 30 matches of the denoised waveform vote on the class.  This script
trains a classifier straight from the noisy shot to the class (crevassed or
not) on the same library, noise model and held-out shots, using the library's
labels, which the denoiser never sees.  Its accuracy says how much of the gap
between the denoiser and the clean ceiling lies in the data (noise) and how
much in the representation (denoise, then match).  Not part of the pipeline.

The probe: the encoder of :class:`crevkit.denoise.GatedInceptionUNet` (the
same pre-alignment, noise-level channel and Inception blocks) with a small
dense head, binary cross-entropy, AdamW with a one-cycle schedule, every
batch drawn fresh (peak SNR log-uniform 2-100, shifts and noise from the
benchmark's noise model).

Usage::

    PYTHONPATH=python OMP_WAIT_POLICY=PASSIVE python bench/denoise_probe.py [--steps 1500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch import nn

from crevkit.benchmarks.denoise import SNR_LEVELS, bench_noise_model, make_library, make_shots
from crevkit.denoise import GatedInceptionUNet, _shift_torch


class Probe(nn.Module):
    """Noisy shot (B, L) -> crevasse logit (B,)."""

    def __init__(self, n_samples: int = 544, width: int = 24):
        super().__init__()
        self.unet = GatedInceptionUNet(n_samples, width=width)
        h = max(width // 2, 4)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(h * self.unet.coarse, 64), nn.LeakyReLU(0.1),
                                  nn.Linear(64, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.unet
        x = u.normalize_input(x)
        xa = _shift_torch(x, u.prealign_shift(x))
        level = torch.log10(u.noise_sd(x))[:, None] / 2.0 + 1.0
        xa = nn.functional.pad(xa, (0, u.padded - u.n_samples))
        inp = torch.stack([xa, xa.clamp_min(0.0).sqrt(), level.expand_as(xa)], dim=1)
        z = u.squeeze(u.down2(u.down1(u.stem(inp))))
        return self.head(z)[:, 0]


def accuracy_by_snr(model: Probe, noisy: np.ndarray, truth: np.ndarray, snr: np.ndarray) -> dict[str, float]:
    model.eval()
    with torch.inference_mode():
        logit = torch.cat([model(torch.from_numpy(noisy[i:i + 1000])) for i in range(0, len(noisy), 1000)])
    right = (logit.numpy() > 0) == (truth == 1)
    out = {"mixed": float(right.mean())}
    out.update({f"{s:g}": float(right[snr == s].mean()) for s in SNR_LEVELS})
    out["SNR >= 20"] = float(np.mean([out["20"], out["50"]]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(2)
    library, labels = make_library(12000, seed=1)  # the benchmark's library ...
    noise = bench_noise_model()
    sets = {}
    for name, tile_seed, shot_seed in (("held-out", 2, 3), ("validation", 6, 3)):  # ... and its held-out shots
        tiles, tile_labels = make_library(1000, seed=tile_seed)
        snr = np.repeat(np.asarray(SNR_LEVELS, dtype=np.float32), len(tiles))
        noisy, _ = make_shots(np.tile(tiles, (len(SNR_LEVELS), 1)), noise, snr, seed=shot_seed)
        sets[name] = (noisy, np.tile(tile_labels, len(SNR_LEVELS)), snr)

    model = Probe()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=args.steps)
    rng = np.random.default_rng(args.seed + 1)
    target = (labels == 1).astype(np.float32)
    start = time.perf_counter()
    for _ in range(args.steps):
        model.train()
        rows = rng.integers(0, len(library), args.batch_size)
        snr = np.exp(rng.uniform(np.log(2.0), np.log(100.0), args.batch_size)).astype(np.float32)
        x, _ = make_shots(library[rows], noise, snr, seed=int(rng.integers(1 << 31)))
        loss = nn.functional.binary_cross_entropy_with_logits(model(torch.from_numpy(x)),
                                                              torch.from_numpy(target[rows]))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    print(f"probe: {args.steps} steps x {args.batch_size}, {time.perf_counter() - start:.0f} s")
    cols = ["mixed"] + [f"{s:g}" for s in SNR_LEVELS] + ["SNR >= 20"]
    print("| shots | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, (noisy, truth, snr) in sets.items():
        acc = accuracy_by_snr(model, noisy, truth, snr)
        print(f"| {name} | " + " | ".join(f"{acc[c]:.3f}" for c in cols) + " |")


if __name__ == "__main__":
    main()
