"""Synthetic glacier scenes with truth: crevassed DEM frames in EPSG:3413.

No real 0.5 m crevassed DEM is available, so crevkit builds its own.  A
:class:`Scene` is an analytic ice surface (regional slope, long-wavelength
flow undulations, lake basins, centimetre-to-decimetre roughness and crevasse
fields) plus a *flight*: a strip of overlapping frames, each with its own
pixel size near 0.45 m, its own offset, ragged nodata edges and nodata gaps,
like photogrammetric IceBridge DEMs.  Everything is a deterministic function
of the seed, so the same seed gives the same bytes.

The surface is defined everywhere, so synthetic laser shots can be
forward-modelled at any point (:meth:`Scene.height`), and the truth is
defined everywhere too (:meth:`Scene.crevasse_mask`,
:meth:`Scene.crevassed_fraction`), so every tile and every footprint has a
label.

Crevasse fields
---------------
Each field is a curved band of parallel crevasses (one set) or of two crossing
sets (chaotic / serac zones).  A set has a strike orientation, a base spacing
(~10-50 m, each crevasse jittered so spacing varies), a top width (~1-10 m)
and a depth (~2-30 m, both varied per crevasse), a V or U cross-section, an
arcuate curvature, ends that taper (each crevasse ends at its own distance
along strike), a taper across the field edge, and snow bridges (segments of a
crevasse filled to a shallow sag; bridged segments are *not* in the mask,
because neither the DEM nor a laser sees the crevasse there).

Epochs
------
``epoch`` selects a campaign.  Terrain and frames are the same in every epoch;
each field has a life span ``[birth, death)`` in epochs.  Two fields are always
placed so that the change between epoch 0 and epoch 1 is clear: a *healing*
field (present at epoch 0 only) centred 30 % along the strip, and an
*opening* field (present from epoch 1) centred 70 % along the strip.  Their
footprints are :attr:`Scene.change_regions`.

Frame files
-----------
:meth:`Scene.write_frames` writes ``frame_NNN.tif`` (float32, EPSG:3413,
nodata -32767, deflate, 256x256 blocks) and beside each one the truth
sidecar ``frame_NNN.truth.tif`` (uint8 on the same grid: 1 crevasse,
0 not, 255 where the frame has nodata), plus ``scene.json`` (parameters).
With ``icebridge_quirks=True`` the frames reproduce the IceBridge L3
defects instead: the float32 bytes are stored under a uint32 sample format,
and there is neither a CRS nor a nodata tag.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import atomic_path, atomic_write_text
from ._validation import check_finite_number, check_int, check_positive
from .errors import CrevkitTypeError, CrevkitValueError

__all__ = [
    "Scene",
    "CrevasseSet",
    "CrevasseField",
    "FrameSpec",
    "make_scene",
    "make_test_scene",
    "NODATA",
    "TRUTH_NODATA",
    "truth_path_for",
]

#: nodata value of the frames (IceBridge L3 convention)
NODATA = -32767.0
#: nodata value of the truth sidecars
TRUTH_NODATA = 255
_CRS = "EPSG:3413"
# default strip origin (lower-left), EPSG:3413 metres: west Greenland, near Jakobshavn
_DEFAULT_ORIGIN = (-190_000.0, -2_280_000.0)
_BRIDGE_SAG = 0.25  # metres: depth of the sag a snow bridge leaves at the surface


def truth_path_for(frame: str | Path) -> Path:
    """Path of the truth sidecar of a frame: ``frame_000.tif`` -> ``frame_000.truth.tif``."""
    frame = Path(frame)
    return frame.with_name(frame.stem + ".truth.tif")


# --------------------------------------------------------------------------- hashing
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _hash01(key: int, k: np.ndarray, salt: int) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer ``k`` (splitmix64 of key, salt, k)."""
    z = (np.asarray(k, dtype=np.int64).astype(np.uint64)
         + np.uint64((key * 0x9E3779B97F4A7C15 + salt * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF))
    with np.errstate(over="ignore"):
        z = (z + np.uint64(0x9E3779B97F4A7C15)) & _M64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _M64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _M64
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


# --------------------------------------------------------------------------- geometry
@dataclasses.dataclass(frozen=True)
class CrevasseSet:
    """One set of parallel crevasses inside a field.

    Attributes
    ----------
    angle : float
        Direction (radians, from +x) *across* the crevasses, i.e. the extension direction.
    spacing, width, depth : float
        Base spacing (m), top width (m) and depth (m); each crevasse varies around them.
    profile : str
        ``"V"`` or ``"U"`` cross-section.
    curvature : float
        Arcuate bending (1/m): crevasse lines follow ``u = k*spacing + curvature*v**2/2``.
    bridge_fraction : float
        Share of each crevasse's length covered by snow bridges.
    key : int
        Hash key making per-crevasse variation deterministic.
    """

    angle: float
    spacing: float
    width: float
    depth: float
    profile: str
    curvature: float
    bridge_fraction: float
    key: int


@dataclasses.dataclass(frozen=True)
class CrevasseField:
    """A band of crevasses: centre, half-extents and one or two (crossing) sets.

    ``half_across`` is measured along the first set's ``angle``, ``half_along``
    along its strike.  The field exists in epochs ``birth <= epoch < death``.
    """

    cx: float
    cy: float
    half_across: float
    half_along: float
    sets: tuple[CrevasseSet, ...]
    birth: int = 0
    death: int = 1_000_000
    kind: str = "persist"

    def present(self, epoch: int) -> bool:
        """Whether the field exists at ``epoch``."""
        return self.birth <= epoch < self.death

    @property
    def radius(self) -> float:
        """Radius of a disc that holds the whole field (curvature included)."""
        s = self.sets[0]
        bend = abs(s.curvature) * self.half_along**2 / 2.0
        return math.hypot(self.half_across + bend, self.half_along) + 1.0


@dataclasses.dataclass(frozen=True)
class FrameSpec:
    """Grid of one frame: north-up, ``pixel_size`` metres, top-left corner ``(left, top)``."""

    name: str
    left: float
    top: float
    pixel_size: float
    width: int
    height: int
    key: int

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, ymin, xmax, ymax) of the frame in EPSG:3413 metres."""
        return (self.left, self.top - self.height * self.pixel_size,
                self.left + self.width * self.pixel_size, self.top)

    @property
    def transform(self):
        """The frame's rasterio ``Affine`` transform."""
        from affine import Affine

        return Affine(self.pixel_size, 0.0, self.left, 0.0, -self.pixel_size, self.top)


# --------------------------------------------------------------------------- scene
class Scene:
    """An analytic crevassed ice surface with a flight of frames over it.

    Build one with :func:`make_scene`.  All coordinate arguments are EPSG:3413
    metres; every method is vectorized over arrays (any matching shapes,
    broadcast) and returns arrays of the broadcast shape.

    Attributes
    ----------
    crs : str
        ``"EPSG:3413"``.
    bounds : tuple of float
        (xmin, ymin, xmax, ymax) of the strip.
    frames : list of FrameSpec
        The flight's frames.
    fields : list of CrevasseField
        Every crevasse field of the terrain (of all epochs).
    epoch : int
        The campaign this scene shows.
    params : dict
        The parameters it was made with (``scene.json``).
    """

    crs = _CRS

    def __init__(self, *, params: dict, bounds: tuple[float, float, float, float],
                 surface: dict, fields: list[CrevasseField], frames: list[FrameSpec], epoch: int):
        self.params = params
        self.bounds = bounds
        self._s = surface
        self.fields = fields
        self.frames = frames
        self.epoch = epoch

    def __repr__(self) -> str:  # pragma: no cover - cosmetic
        return (f"Scene(seed={self.params['seed']}, epoch={self.epoch}, bounds={self.bounds}, "
                f"{len(self.frames)} frames, {len(self.active_fields)} active crevasse fields)")

    # -- epochs
    @property
    def active_fields(self) -> list[CrevasseField]:
        """Crevasse fields present at this scene's epoch."""
        return [f for f in self.fields if f.present(self.epoch)]

    def at_epoch(self, epoch: int) -> "Scene":
        """The same terrain and flight at another campaign ``epoch``."""
        epoch = check_int(epoch, "epoch", minimum=0)
        params = dict(self.params, epoch=epoch)
        return Scene(params=params, bounds=self.bounds, surface=self._s, fields=self.fields,
                     frames=self.frames, epoch=epoch)

    @property
    def change_regions(self) -> dict[str, tuple[float, float, float]]:
        """Discs ``(cx, cy, radius)`` of the field that heals and the one that opens after epoch 0."""
        out = {}
        for f in self.fields:
            if f.kind in ("heal", "open") and f.kind not in out:
                out[f.kind] = (f.cx, f.cy, f.radius)
        return out

    # -- surface
    def surface(self, x: Any, y: Any) -> np.ndarray:
        """Ice surface without crevasses (m above the ellipsoid), float64."""
        x, y = _xy(x, y)
        s = self._s
        lx = x - s["x0"]
        ly = y - s["y0"]
        z = s["z0"] + s["gx"] * lx + s["gy"] * ly
        for amp, kx, ky, ph in s["undulations"]:
            z = z + amp * np.sin(kx * lx + ky * ly + ph)
        if lx.size:
            bb = (lx.min(), lx.max(), ly.min(), ly.max())
        for bx, by, r, d in s["basins"]:
            if bx + r < bb[0] or bx - r > bb[1] or by + r < bb[2] or by - r > bb[3]:
                continue
            # only points near the basin: cheap for large arrays
            dx = lx - bx
            dy = ly - by
            near = (np.abs(dx) < r) & (np.abs(dy) < r)
            if near.any():
                rr = (dx[near] ** 2 + dy[near] ** 2) / (r * r)
                z[near] -= d * np.where(rr < 1.0, (1.0 - rr) ** 2, 0.0)
        for grid, spacing, c, sn, amp in s["roughness"]:
            z = z + amp * _periodic_bilinear(grid, (c * lx + sn * ly) / spacing, (-sn * lx + c * ly) / spacing)
        return z

    def crevasse_depth(self, x: Any, y: Any) -> np.ndarray:
        """Depression (m, >= 0) that crevasses cut below :meth:`surface` at each point, float64.

        Inside an open crevasse it is the cross-section profile; on a snow
        bridge it is a shallow sag (<= 0.25 m); elsewhere 0.
        """
        return self._crevasses(x, y)[0]

    def crevasse_mask(self, x: Any, y: Any) -> np.ndarray:
        """True where a point lies inside an open (unbridged) crevasse at this epoch."""
        return self._crevasses(x, y)[1]

    def height(self, x: Any, y: Any) -> np.ndarray:
        """Surface elevation (m) at any points, crevasses included: ``surface - crevasse_depth``.

        Parameters
        ----------
        x, y : array_like
            EPSG:3413 coordinates in metres (broadcast together).

        Returns
        -------
        numpy.ndarray
            float64 elevations of the broadcast shape.
        """
        x, y = _xy(x, y)
        return self.surface(x, y) - self._crevasses(x, y)[0]

    def crevassed_fraction(self, x: Any, y: Any, radius: float, *, n_samples: int = 2048) -> np.ndarray:
        """Share of the disc of ``radius`` around each point that lies in an open crevasse.

        The disc is sampled on a Fibonacci (sunflower) lattice of ``n_samples``
        points, the same pattern for every centre, so results are deterministic.

        Parameters
        ----------
        x, y : array_like
            Centres, EPSG:3413 metres (broadcast together).
        radius : float
            Disc radius in metres (> 0), e.g. 35 for a GLAS footprint.
        n_samples : int
            Sample points per disc (>= 16).

        Returns
        -------
        numpy.ndarray
            float64 fractions in [0, 1], of the broadcast shape.
        """
        radius = check_positive(radius, "radius")
        n_samples = check_int(n_samples, "n_samples", minimum=16, maximum=1_000_000)
        x, y = _xy(x, y)
        shape = x.shape
        xf, yf = x.ravel(), y.ravel()
        i = np.arange(n_samples) + 0.5
        r = radius * np.sqrt(i / n_samples)
        th = i * math.pi * (3.0 - math.sqrt(5.0))
        ox, oy = r * np.cos(th), r * np.sin(th)
        out = np.empty(xf.size)
        chunk = max(1, 2_000_000 // n_samples)
        for a in range(0, xf.size, chunk):
            b = min(xf.size, a + chunk)
            m = self.crevasse_mask(xf[a:b, None] + ox[None, :], yf[a:b, None] + oy[None, :])
            out[a:b] = m.mean(axis=1)
        return out.reshape(shape)

    # -- crevasse evaluation
    def _crevasses(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        x, y = _xy(x, y)
        depth = np.zeros(x.shape)
        mask = np.zeros(x.shape, dtype=bool)
        if x.size == 0:
            return depth, mask
        bb = (x.min(), x.max(), y.min(), y.max())
        for f in self.active_fields:
            r = f.radius
            if f.cx + r < bb[0] or f.cx - r > bb[1] or f.cy + r < bb[2] or f.cy - r > bb[3]:
                continue
            near = (np.abs(x - f.cx) < r) & (np.abs(y - f.cy) < r)
            if not near.any():
                continue
            d, m = _field_depression(f, x[near] - f.cx, y[near] - f.cy)
            deeper = d > depth[near]
            depth[near] = np.where(deeper, d, depth[near])
            mask[near] |= m
        return depth, mask

    # -- rasters
    def frame_arrays(self, index: int, rows: slice | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Elevation (float32, nodata -32767) and truth (uint8) of frame ``index``, optionally a row range."""
        fr = self.frames[index]
        rows = rows or slice(0, fr.height)
        r = np.arange(rows.start, rows.stop)
        c = np.arange(fr.width)
        yy = fr.top - (r[:, None] + 0.5) * fr.pixel_size
        xx = fr.left + (c[None, :] + 0.5) * fr.pixel_size
        xx, yy = np.broadcast_arrays(xx, yy)
        depth, mask = self._crevasses(xx, yy)
        z = (self.surface(xx, yy) - depth).astype(np.float32)
        valid = _frame_valid(fr, r, c)
        z[~valid] = np.float32(NODATA)
        truth = mask.astype(np.uint8)
        truth[~valid] = TRUTH_NODATA
        return z, truth

    def write_frames(self, out_dir: str | Path, *, icebridge_quirks: bool = False) -> list[Path]:
        """Write the flight's frames as GeoTIFFs, each with its truth sidecar.

        Parameters
        ----------
        out_dir : path
            Folder to write into (created).  Each file is written atomically.
        icebridge_quirks : bool
            Write the frames with the IceBridge L3 defects (float32 bytes under a
            uint32 sample format, no CRS, no nodata tag) so that the reader's
            repair path is exercised.  Truth sidecars are written normally.

        Returns
        -------
        list of pathlib.Path
            The frame files (``frame_NNN.tif``), in flight order.  The truth
            sidecar of each is :func:`truth_path_for` (``frame_NNN.truth.tif``).
            The same seed and parameters give the same bytes.
        """
        import rasterio

        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, fr in enumerate(self.frames):
            path = out_dir / f"{fr.name}.tif"
            base = dict(driver="GTiff", width=fr.width, height=fr.height, count=1,
                        transform=fr.transform, tiled=True, blockxsize=256, blockysize=256,
                        compress="deflate")
            if icebridge_quirks:
                prof = dict(base, dtype="uint32")
            else:
                prof = dict(base, dtype="float32", crs=_CRS, nodata=NODATA, predictor=3)
            tprof = dict(base, dtype="uint8", crs=_CRS, nodata=TRUTH_NODATA)
            tpath = truth_path_for(path)
            with atomic_path(path, suffix=".tif") as tmp, atomic_path(tpath, suffix=".tif") as ttmp:
                with rasterio.Env(GDAL_TIFF_INTERNAL_MASK=True), \
                        rasterio.open(tmp, "w", **prof) as dst, rasterio.open(ttmp, "w", **tprof) as tdst:
                    step = 512
                    for r0 in range(0, fr.height, step):
                        r1 = min(fr.height, r0 + step)
                        z, truth = self.frame_arrays(i, slice(r0, r1))
                        win = rasterio.windows.Window(0, r0, fr.width, r1 - r0)
                        dst.write(z.view(np.uint32) if icebridge_quirks else z, 1, window=win)
                        tdst.write(truth, 1, window=win)
            paths.append(path)
        meta = {"crs": _CRS, "epoch": self.epoch, "params": self.params, "bounds": list(self.bounds),
                "icebridge_quirks": bool(icebridge_quirks),
                "frames": [dataclasses.asdict(f) for f in self.frames]}
        atomic_write_text(out_dir / "scene.json", json.dumps(meta, indent=1, sort_keys=True) + "\n")
        return paths


def _xy(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    try:
        xa = np.asarray(x, dtype=np.float64)
        ya = np.asarray(y, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise CrevkitTypeError(f"x and y must be real numbers or arrays of them: {exc}") from None
    try:
        xa, ya = np.broadcast_arrays(xa, ya)
    except ValueError:
        raise CrevkitValueError(f"x and y shapes do not broadcast: {xa.shape} vs {ya.shape}") from None
    return np.array(xa), np.array(ya)


def _periodic_bilinear(grid: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Bilinear interpolation of a periodic square grid (power-of-two side) at (column u, row v)."""
    n = grid.shape[0]
    m = n - 1
    flat = grid.ravel()
    fu = np.floor(u)
    fv = np.floor(v)
    tu = u - fu
    tv = v - fv
    j0 = fu.astype(np.int64) & m
    i0 = (fv.astype(np.int64) & m) * n
    j1 = (j0 + 1) & m
    i1 = (i0 + n) & (n * n - 1)
    return ((1 - tv) * ((1 - tu) * flat[i0 + j0] + tu * flat[i0 + j1])
            + tv * ((1 - tu) * flat[i1 + j0] + tu * flat[i1 + j1]))


def _field_depression(f: CrevasseField, dx: np.ndarray, dy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depression and open-crevasse mask of one field at offsets from its centre."""
    s0 = f.sets[0]
    c0, sn0 = math.cos(s0.angle), math.sin(s0.angle)
    # field frame (of the first set): across / along, with the arc bend
    u_f = dx * c0 + dy * sn0
    v_f = -dx * sn0 + dy * c0
    u_fc = u_f - s0.curvature * v_f * v_f / 2.0
    inside = (np.abs(u_fc) < f.half_across) & (np.abs(v_f) < f.half_along)
    depth = np.zeros(dx.shape)
    mask = np.zeros(dx.shape, dtype=bool)
    if not inside.any():
        return depth, mask
    # taper across the field edge and along strike at the field ends
    edge = (_smoothstep((f.half_across - np.abs(u_fc)) / max(2.0 * s0.spacing, 1.0))
            * _smoothstep((f.half_along - np.abs(v_f)) / max(0.1 * f.half_along, 5.0)))
    for s in f.sets:
        c, sn = math.cos(s.angle), math.sin(s.angle)
        u = dx * c + dy * sn
        v = -dx * sn + dy * c
        uc = u - s.curvature * v * v / 2.0
        k0 = np.floor(uc / s.spacing).astype(np.int64)
        for dk in (-1, 0, 1, 2):
            k = k0 + dk
            pos = (k + 0.35 * (2.0 * _hash01(s.key, k, 1) - 1.0)) * s.spacing
            wk = s.width * (0.6 + 0.8 * _hash01(s.key, k, 2))
            dkp = s.depth * (0.5 + _hash01(s.key, k, 3))
            # each crevasse ends at its own distance along strike, tapering
            end = f.half_along * (0.55 + 0.45 * _hash01(s.key, k, 4))
            shift = f.half_along * 0.3 * (2.0 * _hash01(s.key, k, 5) - 1.0)
            along = np.abs(v - shift)
            taper = _smoothstep((end - along) / (0.25 * end)) * edge
            half = 0.5 * wk * np.sqrt(taper)
            dist = np.abs(uc - pos)
            t = np.where(half > 1e-6, dist / np.maximum(half, 1e-6), 2.0)
            inside_c = (t < 1.0) & inside
            if s.profile == "V":
                shape = 1.0 - t
            else:
                shape = np.sqrt(np.clip(1.0 - t**4, 0.0, 1.0))
            d = np.where(inside_c, dkp * taper * np.clip(shape, 0.0, 1.0), 0.0)
            # snow bridges: segments along strike where the crevasse is filled to a sag
            lam = 20.0 + 60.0 * _hash01(s.key, k, 6)
            ph = 2.0 * math.pi * _hash01(s.key, k, 7)
            bridged = np.sin(2.0 * math.pi * v / lam + ph) > 1.0 - 2.0 * s.bridge_fraction
            d = np.where(bridged, np.minimum(d, _BRIDGE_SAG * np.clip(shape, 0.0, 1.0) * inside_c), d)
            m = inside_c & ~bridged & (d > 0.0)
            depth = np.maximum(depth, d)
            mask |= m
    return depth, mask


def _frame_valid(fr: FrameSpec, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Valid-data mask of a frame: ragged edges (partly) and a few nodata gaps."""
    rng = np.random.default_rng(fr.key)
    ps = fr.pixel_size
    # ragged edges: margins (m) that are zero over part of each edge
    a = rng.uniform(2.0, 6.0, size=4) * (rng.random(4) < 0.5)
    lam = rng.uniform(40.0, 160.0, size=4)
    ph = rng.uniform(0, 2 * math.pi, size=4)
    xc = (c + 0.5) * ps
    yc = (r + 0.5) * ps
    m_top = a[0] * np.maximum(0.0, np.sin(2 * math.pi * xc / lam[0] + ph[0]) - 0.6) / 0.4
    m_bot = a[1] * np.maximum(0.0, np.sin(2 * math.pi * xc / lam[1] + ph[1]) - 0.6) / 0.4
    m_left = a[2] * np.maximum(0.0, np.sin(2 * math.pi * yc / lam[2] + ph[2]) - 0.6) / 0.4
    m_right = a[3] * np.maximum(0.0, np.sin(2 * math.pi * yc / lam[3] + ph[3]) - 0.6) / 0.4
    H = fr.height * ps
    W = fr.width * ps
    valid = ((yc[:, None] >= m_top[None, :]) & (yc[:, None] <= H - m_bot[None, :])
             & (xc[None, :] >= m_left[:, None]) & (xc[None, :] <= W - m_right[:, None]))
    # interior gaps (low-texture patches): ~1 per 0.2 km2
    n_gaps = rng.poisson(W * H / 200_000.0)
    for _ in range(n_gaps):
        gx, gy = rng.uniform(0, W), rng.uniform(0, H)
        rx, ry = rng.uniform(2.0, 15.0, size=2)
        valid &= ((xc[None, :] - gx) / rx) ** 2 + ((yc[:, None] - gy) / ry) ** 2 > 1.0
    return valid


# --------------------------------------------------------------------------- construction
def _make_set(rng: np.random.Generator, angle: float, *, chaotic: bool) -> CrevasseSet:
    spacing = rng.uniform(8.0, 20.0) if chaotic else rng.uniform(10.0, 50.0)
    width = min(rng.uniform(1.0, 10.0), 0.6 * spacing)
    depth = rng.uniform(2.0, 30.0)
    return CrevasseSet(angle=float(angle), spacing=float(spacing), width=float(width), depth=float(depth),
                       profile=str(rng.choice(["V", "U"])),
                       curvature=float(rng.choice([-1.0, 1.0]) * rng.uniform(0.0, 1.0 / 400.0)),
                       bridge_fraction=float(rng.uniform(0.0, 0.2)), key=int(rng.integers(1, 2**62)))


def _make_field(rng: np.random.Generator, cx: float, cy: float, size: float, flow_angle: float,
                kind: str, birth: int, death: int) -> CrevasseField:
    chaotic = rng.random() < 0.2
    angle = flow_angle + rng.normal(0.0, 0.4)
    sets = [_make_set(rng, angle, chaotic=chaotic)]
    if chaotic:
        sets.append(_make_set(rng, angle + rng.choice([-1, 1]) * rng.uniform(math.pi / 3, math.pi / 2),
                              chaotic=True))
    return CrevasseField(cx=float(cx), cy=float(cy), half_across=float(size * rng.uniform(0.35, 0.6)),
                         half_along=float(size * rng.uniform(0.35, 0.6)), sets=tuple(sets),
                         birth=birth, death=death, kind=kind)


def make_scene(*, seed: int = 0, length_m: float = 10_000.0, width_m: float = 1_000.0, n_frames: int = 12,
               crevasse_density: float = 0.3, epoch: int = 0, **params: Any) -> Scene:
    """Make a synthetic crevassed glacier scene (a flight strip along +x in EPSG:3413).

    The default is the demo run's scene: a 10 km x 1 km strip (10 km²) in 12
    frames overlapping by 30 % (62 Mpx, ~250 MB of float32).  Tiled at 0.5 m
    into 100 m tiles it gives 1,080 grid tiles of which ~920 are free of
    nodata (seed 0).  Pass ``overlap=0.6`` or a wider strip for more tiles.

    Parameters
    ----------
    seed : int
        Seed of everything random; the same seed (and parameters) gives the same scene and bytes.
    length_m, width_m : float
        Strip size along and across the flight (m).
    n_frames : int
        Number of frames along the strip.
    crevasse_density : float
        Target share (0-1) of the strip covered by crevasse fields.
    epoch : int
        Campaign (>= 0): the same terrain, with fields that open, heal or persist.
    **params
        Advanced options: ``origin`` (x, y) lower-left of the strip (default
        west Greenland), ``overlap`` (share of a frame shared with the next,
        default 0.3), ``pixel_size`` (mean frame pixel size, default 0.45),
        ``pixel_jitter`` (default 0.004 m), ``elevation`` (mean, default 1200 m),
        ``max_slope_deg`` (default 3), ``roughness`` (std in m, default 0.08),
        ``basin_density`` (per km², default 3).

    Returns
    -------
    Scene
    """
    seed = check_int(seed, "seed", minimum=0)
    length_m = check_positive(length_m, "length_m")
    width_m = check_positive(width_m, "width_m")
    n_frames = check_int(n_frames, "n_frames", minimum=1, maximum=100_000)
    crevasse_density = check_finite_number(crevasse_density, "crevasse_density")
    if not 0.0 <= crevasse_density <= 1.0:
        raise CrevkitValueError(f"crevasse_density must be in [0, 1], got {crevasse_density}")
    epoch = check_int(epoch, "epoch", minimum=0)
    known = {"origin", "overlap", "pixel_size", "pixel_jitter", "elevation", "max_slope_deg", "roughness",
             "basin_density"}
    unknown = set(params) - known
    if unknown:
        raise CrevkitValueError(f"unknown scene parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    origin = tuple(float(v) for v in params.get("origin", _DEFAULT_ORIGIN))
    overlap = check_finite_number(params.get("overlap", 0.3), "overlap")
    if not 0.0 <= overlap < 0.95:
        raise CrevkitValueError(f"overlap must be in [0, 0.95), got {overlap}")
    pixel_size = check_positive(params.get("pixel_size", 0.45), "pixel_size")
    jitter = check_finite_number(params.get("pixel_jitter", 0.004), "pixel_jitter")
    elevation = check_finite_number(params.get("elevation", 1200.0), "elevation")
    max_slope = check_finite_number(params.get("max_slope_deg", 3.0), "max_slope_deg")
    rough = check_finite_number(params.get("roughness", 0.08), "roughness")
    basin_density = check_finite_number(params.get("basin_density", 3.0), "basin_density")

    rng = np.random.default_rng(seed)
    x0, y0 = origin
    bounds = (x0, y0, x0 + length_m, y0 + width_m)
    # ---- smooth surface
    slope = math.tan(math.radians(rng.uniform(0.0, max_slope)))
    sdir = rng.uniform(0, 2 * math.pi)
    flow_angle = sdir + math.pi  # ice flows downhill: extension across the flow direction
    undulations = []
    for _ in range(3):
        lam = rng.uniform(1000.0, 6000.0)
        ang = flow_angle + rng.normal(0.0, 0.3)
        undulations.append((rng.uniform(1.0, 5.0), 2 * math.pi * math.cos(ang) / lam,
                            2 * math.pi * math.sin(ang) / lam, rng.uniform(0, 2 * math.pi)))
    n_basins = rng.poisson(basin_density * length_m * width_m / 1e6)
    basins = [(rng.uniform(0, length_m), rng.uniform(0, width_m), rng.uniform(10.0, 75.0), rng.uniform(0.5, 4.0))
              for _ in range(n_basins)]
    roughness = []
    for n, spacing, share in ((256, 0.5, 0.6), (256, 0.73, 0.4)):
        kx = np.fft.fftfreq(n)[None, :]
        ky = np.fft.fftfreq(n)[:, None]
        k = np.hypot(kx, ky)
        k[0, 0] = 1.0
        spec = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))) * k ** -1.4
        spec[0, 0] = 0.0
        g = np.real(np.fft.ifft2(spec))
        g = g / g.std()
        a = rng.uniform(0, 2 * math.pi)
        roughness.append((g, spacing, math.cos(a), math.sin(a), rough * math.sqrt(share)))
    surface = {"x0": x0, "y0": y0, "z0": elevation, "gx": slope * math.cos(sdir), "gy": slope * math.sin(sdir),
               "undulations": undulations, "basins": basins, "roughness": roughness}
    # ---- crevasse fields: two forced change fields, then random ones up to the density
    fields: list[CrevasseField] = []
    size_change = min(0.8 * width_m, 0.25 * length_m, 400.0)
    fields.append(_make_field(rng, x0 + 0.3 * length_m, y0 + 0.5 * width_m, size_change, flow_angle,
                              "heal", 0, 1))
    fields.append(_make_field(rng, x0 + 0.7 * length_m, y0 + 0.5 * width_m, size_change, flow_angle,
                              "open", 1, 1_000_000))
    target = crevasse_density * length_m * width_m
    covered = sum(4 * f.half_across * f.half_along for f in fields)
    attempts = 0
    while covered < target and attempts < 10_000:
        attempts += 1
        size = rng.uniform(100.0, min(600.0, max(120.0, width_m)))
        cx = x0 + rng.uniform(0, length_m)
        cy = y0 + rng.uniform(0, width_m)
        if any(abs(cx - g.cx) < g.half_across + size / 2 and abs(cy - g.cy) < g.half_along + size / 2
               for g in fields[:2]):
            continue  # keep the change regions clean
        u = rng.random()
        kind, birth, death = (("persist", 0, 1_000_000) if u < 0.7 else
                              ("heal", 0, int(rng.integers(1, 3))) if u < 0.85 else
                              ("open", int(rng.integers(1, 3)), 1_000_000))
        f = _make_field(rng, cx, cy, size, flow_angle, kind, birth, death)
        fields.append(f)
        covered += 4 * f.half_across * f.half_along
    # ---- flight
    frames = []
    step = length_m / n_frames
    flen = step * (1.0 + overlap) if n_frames > 1 else length_m
    for i in range(n_frames):
        ps = round(pixel_size + rng.uniform(-jitter, jitter), 4)
        left = x0 + min(i * step, length_m - flen) + rng.uniform(-0.3, 0.3) * step * overlap * 0.5
        left = max(x0, left) + rng.uniform(0, ps)
        top = y0 + width_m - rng.uniform(0, 0.02) * width_m - rng.uniform(0, ps)
        h = width_m * rng.uniform(0.96, 0.99)
        w_px = int(flen / ps)
        left = min(left, x0 + length_m - w_px * ps)  # stay inside the strip
        frames.append(FrameSpec(name=f"frame_{i:03d}", left=float(left), top=float(top), pixel_size=float(ps),
                                width=w_px, height=int(h / ps), key=int(rng.integers(1, 2**62))))
    rec = {"seed": seed, "length_m": length_m, "width_m": width_m, "n_frames": n_frames,
           "crevasse_density": crevasse_density, "epoch": epoch, "origin": list(origin), "overlap": overlap,
           "pixel_size": pixel_size, "pixel_jitter": jitter, "elevation": elevation, "max_slope_deg": max_slope,
           "roughness": rough, "basin_density": basin_density}
    return Scene(params=rec, bounds=bounds, surface=surface, fields=fields, frames=frames, epoch=epoch)


def make_test_scene(tmp_path: str | Path, seed: int = 0, *, epoch: int = 0,
                    icebridge_quirks: bool = False) -> tuple[Scene, list[Path]]:
    """A tiny scene for tests, written to ``tmp_path/frames``: returns ``(scene, frame_paths)``.

    Three overlapping frames of roughly 780 x 540 pixels (about 350 m x 245 m,
    pixel sizes near 0.45 m), dense crevassing; writing takes well under a
    second.  Enough for a handful of 100 m tiles per frame.
    """
    scene = make_scene(seed=seed, length_m=700.0, width_m=250.0, n_frames=3, crevasse_density=0.5,
                       epoch=epoch, overlap=0.5)
    sub = "frames_quirks" if icebridge_quirks else "frames"
    paths = scene.write_frames(Path(tmp_path) / sub, icebridge_quirks=icebridge_quirks)
    return scene, paths
