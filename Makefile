# The README's two commands: `make demo` and `make test`. Each creates a local
# virtualenv (.venv), installs the package into it, and runs.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
HASH := $(shell cat setup.py pyproject.toml Makefile | cksum | cut -d' ' -f1)
STAMP := $(VENV)/.installed-$(HASH)
TORCH_STAMP := $(VENV)/.torch-$(HASH)
PYTEST_ARGS ?= -n 2
WORKDIR ?= workdirs/demo

.PHONY: demo test lint format install clean

$(STAMP): setup.py pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	rm -f $(VENV)/.installed-* && touch $(STAMP)

# torch + torchvision for the Kinetics-400 converter's parity tests:
# torch 2.13.0 (the machine's CPU wheel on Python 3.11, PyPI's build on
# 3.12); torchvision without its (CUDA) dependencies.
$(TORCH_STAMP): $(STAMP)
	$(PY) -m pip install --quiet "torch==2.13.0" "safetensors>=0.4"
	$(PY) -m pip install --quiet --no-deps "torchvision==0.28.*"
	# Where pip had no CPU wheel (Python 3.12), torch's PyPI build brings
	# triton, whose extension segfaults when imported after jaxlib and
	# TensorFlow (torchvision imports it at collection); the CPU parity
	# tests need no triton, and torch runs without it.
	$(PY) -m pip uninstall --quiet --yes triton 2>/dev/null || true
	rm -f $(VENV)/.torch-* && touch $(TORCH_STAMP)

install: $(STAMP)

demo: $(STAMP)
	JAX_PLATFORMS=cpu $(PY) -m stclr_jax.demo --workdir=$(WORKDIR)

# The linter and the formatter's check (ruff, configured in pyproject.toml).
lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

format: $(STAMP)
	$(PY) -m ruff check --fix .
	$(PY) -m ruff format .

# pytest exits 5 when it collects no test: that is a broken suite, not a pass.
test: $(TORCH_STAMP) lint
	@$(PY) -m pytest $(PYTEST_ARGS) tests; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "ERROR: pytest collected no tests" >&2; fi; \
	exit $$rc

clean:
	rm -rf $(VENV) *.egg-info build dist
