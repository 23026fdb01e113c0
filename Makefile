# clustergym: `make run` and `make test` each set up .venv on a fresh machine.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export OMP_NUM_THREADS ?= 1
export MKL_NUM_THREADS ?= 1
export WANDB_MODE ?= disabled

.PHONY: install run test bench clean

install: $(STAMP)

# torch first, pinned, so that nothing pulls the multi-GB CUDA build (constraints.txt pins it too).
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

run: install
	$(PY) -m digital_twin.vm demo

test: install
	$(PY) -m pytest -q

bench: install
	$(PY) bench/vm_twin.py
	$(PY) bench/microservice_twin.py
	$(PY) bench/envs.py
	$(PY) bench/vm_beam.py
	$(PY) bench/vm_policy.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
