"""Synthetic DEM surfaces for the feature tests (exact under rotation and tilt; whole scenes: crevkit.scenes).

Surfaces are functions ``f(x, y) -> z`` (metres; x east, y north) so that a
tile can be sampled exactly at any position, turned about the vertical, or
tilted as a rigid body (:func:`tilted`), giving exact "truth" for the
normalization invariances.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

Surface = Callable[[np.ndarray, np.ndarray], np.ndarray]
CLASSES = ("flat", "ridges", "crevasses", "undulations")


def grid(n: int = 200, pixel_size: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x east along columns, y north: rows run north to south)."""
    d = (np.arange(n) - (n - 1) / 2.0) * pixel_size
    return np.broadcast_to(d[None, :], (n, n)), np.broadcast_to(-d[:, None], (n, n))


def plane(a: float, b: float) -> Surface:
    return lambda x, y: a * x + b * y


def ridges(amplitude: float, wavelength: float, azimuth_deg: float, phase: float = 0.0) -> Surface:
    """Sinusoidal ridges; the height varies along the direction ``azimuth_deg`` (ccw from east)."""
    c, s = np.cos(np.radians(azimuth_deg)), np.sin(np.radians(azimuth_deg))
    return lambda x, y: amplitude * np.sin(2 * np.pi * (x * c + y * s) / wavelength + phase)


def troughs(depth: float, width: float, spacing: float, azimuth_deg: float, offset: float = 0.0,
            smooth: float = 0.0) -> Surface:
    """Periodic V-shaped crevasse troughs across the direction ``azimuth_deg``.

    ``smooth`` > 0 rounds the V (a smooth-abs of that half-width, metres) so
    that bilinear resampling errors stay small in the tight-tolerance tests.
    """
    c, s = np.cos(np.radians(azimuth_deg)), np.sin(np.radians(azimuth_deg))

    def f(x, y):
        t = x * c + y * s + offset
        d = np.abs((t + spacing / 2) % spacing - spacing / 2)  # distance to the nearest trough centre
        if smooth > 0:
            d = np.sqrt(d * d + smooth * smooth) - smooth
        return -depth * np.clip(1.0 - d / (width / 2), 0.0, None)

    return f


def bumps(amplitude: float, scale: float, rng: np.random.Generator, n_waves: int = 6) -> Surface:
    """Smooth undulations: a sum of random long-wavelength cosines."""
    k = rng.uniform(2 * np.pi / (4 * scale), 2 * np.pi / scale, n_waves)
    ang = rng.uniform(0, 2 * np.pi, n_waves)
    ph = rng.uniform(0, 2 * np.pi, n_waves)
    amp = amplitude / np.sqrt(n_waves)

    def f(x, y):
        z = np.zeros(np.broadcast(x, y).shape)
        for kk, aa, pp in zip(k, ang, ph):
            z = z + amp * np.cos(kk * (x * np.cos(aa) + y * np.sin(aa)) + pp)
        return z

    return f


def add(*surfaces: Surface) -> Surface:
    return lambda x, y: sum(f(x, y) for f in surfaces)


def rotated(f: Surface, angle_deg: float) -> Surface:
    """``f`` turned counter-clockwise by ``angle_deg`` about the vertical through the origin."""
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return lambda x, y: f(c * x + s * y, -s * x + c * y)


def tilted(f: Surface, slope_deg: float, axis_deg: float) -> Surface:
    """``f`` tilted as a rigid body by ``slope_deg`` about a horizontal axis through the origin.

    The axis points ``axis_deg`` counter-clockwise from east.  Exact: the
    height at (X, Y) is found by bisection (needs |df/dy'| < cot(slope)).
    """
    th = np.radians(slope_deg)
    c, s = np.cos(th), np.sin(th)
    g = rotated(f, -axis_deg)  # tilt axis along +x in g's frame

    def tilt_x(X, Y):
        # surface point (x, y, g) -> (x, y c - g s, y s + g c); solve y c - g(X, y) s = Y for y
        X, Y = np.broadcast_arrays(np.asarray(X, float), np.asarray(Y, float))
        lo = (Y - 1e3) / c
        hi = (Y + 1e3) / c
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            h = mid * c - g(X, mid) * s - Y
            lo = np.where(h < 0, mid, lo)
            hi = np.where(h < 0, hi, mid)
        y = 0.5 * (lo + hi)
        return y * s + g(X, y) * c

    return rotated(tilt_x, axis_deg)


def sample(f: Surface, n: int = 200, pixel_size: float = 0.5, demean: bool = True) -> np.ndarray:
    x, y = grid(n, pixel_size)
    z = np.asarray(f(x, y), dtype=np.float64)
    if demean:
        z = z - z.mean()
    return z.astype(np.float32)


def random_surface(kind: str, rng: np.random.Generator, *, roughness: float = 0.0) -> Surface:
    """A random surface of one class, with a random regional slope (0-3 degrees)."""
    slope = np.tan(np.radians(rng.uniform(0, 3)))
    asp = rng.uniform(0, 2 * np.pi)
    parts = [plane(slope * np.cos(asp), slope * np.sin(asp))]
    az = rng.uniform(0, 360)
    if kind == "flat":
        pass
    elif kind == "ridges":
        parts.append(ridges(rng.uniform(0.5, 1.5), rng.uniform(15, 30), az, rng.uniform(0, 6.3)))
    elif kind == "crevasses":
        parts.append(troughs(rng.uniform(2, 5), rng.uniform(3, 6), rng.uniform(12, 25), az, rng.uniform(0, 10)))
    elif kind == "undulations":
        parts.append(bumps(rng.uniform(1, 3), rng.uniform(40, 80), rng))
    else:
        raise ValueError(kind)
    f = add(*parts)
    if roughness > 0:
        noise = rng.standard_normal((200, 200)) * roughness
        return lambda x, y, f=f: f(x, y) + (noise if np.shape(x) == noise.shape else 0.0)
    return f


def make_tiles(n: int, seed: int = 0, classes: tuple[str, ...] = CLASSES, roughness: float = 0.05
               ) -> tuple[np.ndarray, np.ndarray]:
    """``n`` zero-mean 200 x 200 float32 tiles at 0.5 m and their class labels."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(classes), n)
    tiles = np.stack([sample(random_surface(classes[k], rng, roughness=roughness)) for k in labels])
    return tiles, labels
