# Hand-written stubs for the compiled module crevkit._core.
# The raw kernels take float32 C-contiguous arrays only (no conversion);
# use the documented wrappers in crevkit instead.
import numpy as np
import numpy.typing as npt

_has_openmp: bool
__version__: str

def _omp_max_threads() -> int: ...

# --- forward model (crevkit.simulate) ---
def simulate_waveforms(
    tiles: npt.NDArray[np.float32],
    weights: npt.NDArray[np.float32],
    tilt_x: npt.NDArray[np.float32],
    tilt_y: npt.NDArray[np.float32],
    pulse: npt.NDArray[np.float64],  # (3, L): pulse, first and second central differences
    pulse_centre: int,
    n_samples: int,
    lead_bins: float,
    bins_per_metre: float,
    cos_tilt: float,
    tilted: bool,
    incidence: bool,
    pixel_size: float,
    look: tuple[float, float, float],
    normalize: bool,
    n_threads: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8]]:
    """(waveforms (n, n_samples), status (n,): 0 ok, 1 no energy, 2 infinite heights)."""

# --- tile features (crevkit.features) ---
def normalize_tiles(
    tiles: npt.NDArray[np.float32],
    pixel_size: float,
    out_size: int,
    iterations: int,
    orient: bool,
    edge_fill: bool,
    n_threads: int,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """(normalized tiles (n, m, m), plane normals (n, 3), in-plane angles (n,) in radians)."""
    ...

def dct_compress(
    tiles: npt.NDArray[np.float32],
    u: npt.NDArray[np.int64],
    v: npt.NDArray[np.int64],
    n_threads: int,
) -> npt.NDArray[np.float32]: ...
def dct_decompress(
    coeffs: npt.NDArray[np.float32],
    u: npt.NDArray[np.int64],
    v: npt.NDArray[np.int64],
    ny: int,
    nx: int,
    n_threads: int,
) -> npt.NDArray[np.float32]: ...

# --- self-organizing map (crevkit.som) ---
# The codebook is passed centred (minus the data mean) in the kernel's packed
# panel layout (som_pack); som_unpack turns it back into nodes x features.
def som_pack(codebook: npt.NDArray[np.float32], n_threads: int) -> npt.NDArray[np.float32]: ...
def som_unpack(
    packed: npt.NDArray[np.float32],
    n_nodes: int,
    d: int,
    offset: npt.NDArray[np.float32] | None = None,
    n_threads: int = 1,
) -> npt.NDArray[np.float32]: ...
def som_bmu(
    X: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float32],
    packed: npt.NDArray[np.float32],
    n_nodes: int,
    sums: npt.NDArray[np.float64] | None = None,
    counts: npt.NDArray[np.float64] | None = None,
    chunk_rows: int = ...,
    n_threads: int = ...,
    exact: bool = True,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32], npt.NDArray[np.float32]]: ...
def som_accumulate(
    X: npt.NDArray[np.float32],
    mean: npt.NDArray[np.float32],
    bmu: npt.NDArray[np.int64],
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    n_threads: int,
) -> None: ...
def som_smooth(
    sums: npt.NDArray[np.float64],
    counts: npt.NDArray[np.float64],
    packed: npt.NDArray[np.float32],
    rows: int,
    cols: int,
    topology: int,
    toroidal: bool,
    neighborhood: int,
    sigma: float,
    n_threads: int,
) -> int: ...

# --- index re-ranking (crevkit.index) ---
def rerank_distances(
    vectors: npt.NDArray[np.float32],
    queries: npt.NDArray[np.float32],
    labels: npt.NDArray[np.int64],
    n_threads: int,
) -> npt.NDArray[np.float32]: ...
