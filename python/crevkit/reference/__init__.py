"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against.

Each twin has the public wrapper's signature and implements the same
algorithm in float64, without the performance tricks.
"""

from .features import dct_compress, dct_decompress, normalize_tiles
from .forward import simulate_waveforms

__all__ = ["simulate_waveforms", "normalize_tiles", "dct_compress", "dct_decompress"]
