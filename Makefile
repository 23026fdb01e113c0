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

# Where torch comes from: empty, pip's configured index (PyPI: the CUDA build on Linux, about 2 GB
# more); `make install TORCH_INDEX=https://download.pytorch.org/whl/cpu` for the CPU-only build.
TORCH_INDEX ?=

# torch first, pinned, from TORCH_INDEX if given, so that the rest (constraints.txt pins torch too)
# finds it installed and pulls no other build.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -U pip
	$(PY) -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) torch==2.13.0
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

# The [ray] extra (train.py --sweep, evaluate.py --ray) for the tests: a stamp of its own, so that
# `make run` never installs it.
RAY_STAMP := $(VENV)/.installed-ray
$(RAY_STAMP): $(STAMP)
	$(PY) -m pip install -q -c constraints.txt -e '.[dev,ray]'
	touch $(RAY_STAMP)

# The users' loop on one page: train the quick VM agent, then evaluate it and the shipped policy
# against the baselines on the two real VMR2L snapshots (table on stdout, plots in results/make_run/).
QUICK_RUN := runs/make_run_quick
SHIPPED_VM := models/vm_rescheduling/graph_ppo
run: install
	rm -rf $(QUICK_RUN)
	$(PY) train.py configs/train/vm_quick.yaml --run-name make_run_quick
	$(PY) evaluate.py configs/vm_rescheduling/vmr2l_like_small.yaml --seeds 0 --run-name make_run \
		--policies random greedy beam@1 cpsat@30 agent:$(QUICK_RUN) agent:$(SHIPPED_VM) "agent:$(SHIPPED_VM)?best_prefix=1"

# The controller tests start real servers: scripts/test_servers.sh installs Prometheus and etcd and, on a
# fresh machine only, builds kube-apiserver from Debian's source package (~12 min on 2 cores, cached).
# One pytest worker per core (pytest-xdist), a test module's tests on one worker so that its
# module fixtures are built once.
test: install $(RAY_STAMP)
	bash scripts/test_servers.sh
	$(PY) -m pytest -q -n auto --dist loadscope

bench: install
	$(PY) bench/vm_twin.py
	$(PY) bench/microservice_twin.py
	$(PY) bench/envs.py
	$(PY) bench/vm_beam.py
	$(PY) bench/vm_policy.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .hypothesis
