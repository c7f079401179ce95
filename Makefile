# crevkit developer entry points.  `make demo` and `make test` work on a fresh
# machine: they install what is missing, build the C++ core in place, and run.
PYTHON ?= python3
PIP := $(PYTHON) -m pip
BUILD_DIR ?= build/inplace
JOBS ?= 2
export PYTHONPATH := $(CURDIR)/python$(if $(PYTHONPATH),:$(PYTHONPATH),)
# PyTorch on a shared 2-core machine: OpenMP spin-waiting collapses throughput.
export OMP_WAIT_POLICY ?= PASSIVE

# torch first and pinned: a bare "torch" would resolve to a multi-GB CUDA build.
TORCH_SPEC := torch==2.13.0
PY_DEPS := numpy scipy click tqdm pyyaml rasterio pyproj h5py "zarr>=2.16" pyarrow pandas \
	hnswlib scikit-learn matplotlib "dask[distributed]" dask-jobqueue pytest hypothesis pytest-timeout \
	pytest-benchmark threadpoolctl pybind11 scikit-build-core cmake ninja

.PHONY: all deps build test test-all demo bench install-check clean

all: build

.deps-stamp: Makefile
	@$(PYTHON) -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '2.13.0')" 2>/dev/null \
		|| $(PIP) install -q "$(TORCH_SPEC)"
	@$(PIP) install -q $(PY_DEPS)
	@touch $@

deps: .deps-stamp

build: deps
	@mkdir -p $(BUILD_DIR)
	@cmake -S . -B $(BUILD_DIR) -G Ninja -DCMAKE_BUILD_TYPE=Release \
		-Dpybind11_DIR="$$($(PYTHON) -m pybind11 --cmakedir)" \
		-DPython_EXECUTABLE="$$(command -v $(PYTHON))" \
		-DCREVKIT_OUTPUT_DIR=$(CURDIR)/python/crevkit > $(BUILD_DIR).configure.log 2>&1 \
		|| (cat $(BUILD_DIR).configure.log; exit 1)
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	$(PYTHON) -m pytest -q -m "not slow" --timeout=900

test-all: build
	$(PYTHON) -m pytest -q --timeout=1800

demo: build
	$(PYTHON) -m crevkit demo --run-dir demo-run

bench: build
	$(PYTHON) -m crevkit bench --output bench/RESULTS.md

# A plain and an editable install into a throwaway venv (what a user does),
# checked from outside the source tree with PYTHONPATH unset.
install-check: deps
	rm -rf build/venv-check && $(PYTHON) -m venv --system-site-packages build/venv-check
	build/venv-check/bin/pip install -q --no-build-isolation .
	cd /tmp && env -u PYTHONPATH $(CURDIR)/build/venv-check/bin/python -c \
		"import crevkit, crevkit._core as c; assert 'site-packages' in crevkit.__file__, crevkit.__file__; print('pip install . ok:', crevkit.__file__, 'openmp', c._has_openmp)"
	build/venv-check/bin/pip install -q --no-build-isolation -e .
	cd /tmp && env -u PYTHONPATH $(CURDIR)/build/venv-check/bin/python -c \
		"import crevkit, crevkit._core as c, numpy as np; print('pip install -e . ok:', crevkit.__file__, crevkit.simulate_waveforms(np.zeros((1, 8, 8), np.float32)).shape)"
	cd /tmp && env -u PYTHONPATH $(CURDIR)/build/venv-check/bin/crevkit --help > /dev/null && echo "install-check ok"

clean:
	rm -rf build python/crevkit/_core*.so .deps-stamp
