"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against.

Each twin has the public wrapper's signature and implements the same
algorithm in float64, without the performance tricks.
"""

from .forward import simulate_waveforms

__all__ = ["simulate_waveforms"]
