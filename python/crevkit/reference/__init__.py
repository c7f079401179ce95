"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against."""

from .features import dct_compress, dct_decompress, normalize_tiles

__all__ = ["normalize_tiles", "dct_compress", "dct_decompress"]
