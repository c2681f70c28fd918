# The README's commands. Everything installs into .venv; nothing else needs typing first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# CUDA kernels are compiled when nvcc and a CUDA build of torch are present.
export TORCH_CUDA_ARCH_LIST ?= 8.0;9.0
PINNED := torch==2.14.1 torchvision==0.29.1 triton==3.8.0
NATIVE_SOURCES := setup.py $(wildcard csrc/*.h csrc/*.cpp csrc/cpu/*.cpp csrc/cuda/*.cu csrc/cuda/*.cuh)

.PHONY: venv build demo test gpu-test bench clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel ninja
	$(PIP) install -q $(PINNED)
	$(PIP) install -q -e ".[test]" --no-build-isolation
	touch $@ $(VENV)/.built  # that install built pyfastviz._C too

# Rebuild pyfastviz._C whenever a native source changes. On a fresh checkout make plans this
# rule before the venv exists, so the recipe checks again: the install above has just built it.
build: $(VENV)/.built
$(VENV)/.built: $(VENV)/.installed $(NATIVE_SOURCES)
	@if [ ! -e $@ ] || [ -n "$$(find $? -newer $@)" ]; then \
		echo "$(PIP) install -q -e . --no-build-isolation --no-deps"; \
		$(PIP) install -q -e . --no-build-isolation --no-deps && touch $@; \
	fi

demo: build
	$(VENV)/bin/pyfastviz demo

# The benchmarks run once, untimed, so their code cannot rot; then the whole suite.
test: build
	$(PY) -m pytest benchmarks --benchmark-disable -q -p no:cacheprovider
	$(PY) -m pytest -m "not cuda and not triton" -p no:cacheprovider
	@if grep -rqs "mark.triton" tests; then TRITON_INTERPRET=1 $(PY) -m pytest -m triton -p no:cacheprovider; fi

# On a GPU the Triton-marked tests run their kernels on it (no interpreter).
gpu-test: build
	$(PY) -m pytest -m "cuda or triton" -p no:cacheprovider

BENCH_ARGS ?=
bench: build
	$(PY) benchmarks/run.py $(BENCH_ARGS)

clean:
	rm -rf build pyfastviz/_C*.so pyfastviz-demo bench-results.json $(VENV)/.built
