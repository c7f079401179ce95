"""Pure-NumPy twins of every C++ kernel: the baselines kernels are tested and benchmarked against."""
