# o2o-bench: `make reproduce` and `make test` set themselves up through `make setup`.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
EXTRAS  ?= dev
TORCH_INDEX ?=
STAMP   := $(VENV)/.installed-$(EXTRAS)
TABLE   ?= quickstart
BUDGET  ?=
WORKERS ?= 2
BACKEND ?= local
PACK    ?= 0
ALGO    ?=
DATASETS ?=
BASELINES ?=

.PHONY: setup test reproduce evidence compare datasets bench bench-gpu gpu-wheels lint clean help

help:
	@echo "make reproduce [TABLE=quickstart|offline|o2o|famo2o|local] [BUDGET=smoke|short|full] [WORKERS=N]"
	@echo "    runs into results/TABLE/runs/, report into reports/TABLE/ (both ignored by git)"
	@echo "make evidence [TABLE=...]: make reproduce, then rewrite the committed report in results/TABLE/"
	@echo "make compare ALGO=path/to/mine.py TABLE=offline [BUDGET=...] [DATASETS=pattern] [BASELINES=1]"
	@echo "    your algorithm file beside TABLE's baselines; report into reports/TABLE/compare-<name>/"
	@echo "make test | make datasets | make bench | make bench-gpu | make lint | make setup"
	@echo "make setup [EXTRAS=dev|all|dev,ray|dev,tensorboard|dev,wandb] [TORCH_INDEX=URL]: .venv with the core and EXTRAS"

setup: $(STAMP)

# torch 2.13.0 first (from TORCH_INDEX when given: PyTorch's own index of a CPU or CUDA build; a torch 2.13.0 already
# in .venv is kept), then the project with EXTRAS (default dev: what `make test` needs besides `make reproduce`), every
# package at its version in requirements.lock (a constraints file: it pins, it does not add).
$(STAMP): pyproject.toml requirements.lock
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/pip install -q -c requirements.lock -e ".[$(EXTRAS)]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest -q tests

reproduce: setup
	$(BIN)/python -m o2o.suite reproduce $(TABLE) $(if $(BUDGET),--budget $(BUDGET)) --workers $(WORKERS) --backend $(BACKEND) --pack $(PACK)

# The committed evidence: the report of results/$(TABLE)/runs written over results/$(TABLE)/ (tracked files).
EVIDENCE := results/$(TABLE)
evidence: reproduce
	@echo "make evidence: replacing $(EVIDENCE)/README.md, $(EVIDENCE)/runs.{csv,parquet}, $(EVIDENCE)/evals.{csv,parquet}"
	@echo "  and everything in $(EVIDENCE)/tables/ and $(EVIDENCE)/figures/ with a fresh report of $(EVIDENCE)/runs"
	rm -rf $(EVIDENCE)/tables $(EVIDENCE)/figures $(EVIDENCE)/README.md $(EVIDENCE)/runs.csv $(EVIDENCE)/runs.parquet \
		$(EVIDENCE)/evals.csv $(EVIDENCE)/evals.parquet
	$(BIN)/python -m o2o.suite report $(TABLE) --out $(EVIDENCE)
	-git status --short -- $(EVIDENCE)

# A new algorithm file beside a table's baselines (README, "Add your algorithm"); BASELINES=1 also runs their
# unfinished runs.
compare: setup
	@test -n "$(ALGO)" || { echo "make compare: ALGO=path/to/your_algorithm.py is missing"; exit 2; }
	$(BIN)/python -m o2o.suite compare $(TABLE) $(ALGO) $(if $(BUDGET),--budget $(BUDGET)) \
		$(if $(DATASETS),--datasets '$(DATASETS)') $(if $(BASELINES),--baselines) --workers $(WORKERS) --pack $(PACK)

datasets: setup
	$(BIN)/python -m o2o.generate all

bench: setup
	$(BIN)/python -m pytest -q benchmarks --benchmark-only --benchmark-columns=mean,ops,rounds

# The GPU benchmark, as one command for the device machine (no network there: `make gpu-wheels` here first, carry
# .wheels/, then `make bench-gpu PYTHON=python3` there; it installs the wheels without an index and needs < 8 min).
PYTHON    ?= $(BIN)/python
GPU_OUT   ?= results/bench
bench-gpu:
	$(PYTHON) -m pip install -q --no-index --find-links .wheels mujoco gymnasium imageio tqdm pyyaml tyro
	$(PYTHON) -m benchmarks.gpu --out $(GPU_OUT)

# cp312 manylinux wheels of what the device machine lacks (mujoco, gymnasium, the imageio its mujoco envs import,
# and their dependencies), in .wheels/, which this clone's .git/info/exclude is made to ignore (a fresh clone has no
# such line; carry names the folder).
gpu-wheels:
	@x=$$(git rev-parse --git-path info/exclude) && mkdir -p "$$(dirname "$$x")" && \
		(grep -qxF '.wheels/' "$$x" 2>/dev/null || echo '.wheels/' >> "$$x")
	$(BIN)/pip download -q --no-deps --python-version 3.12 --only-binary=:all: --platform manylinux2014_x86_64 \
		--platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 --platform any -d .wheels \
		mujoco==3.11.0 gymnasium==1.4.0 absl-py==2.5.1 cloudpickle==3.1.2 etils==1.15.0 Farama-Notifications==0.0.6 \
		glfw==2.11.0 PyOpenGL==3.1.10 tqdm==4.70.1 PyYAML==6.0.3 fsspec==2026.9.0 zipp==4.1.2 tyro==1.0.16 \
		docstring_parser==0.18.0 typeguard==4.6.1 imageio==2.38.1

lint: setup
	$(BIN)/ruff check .

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .tox .benchmarks
