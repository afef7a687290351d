# Two commands on a fresh machine: `make sweep` (the 4-point dropout grid) and `make test`.
# Each creates .venv when missing, installs the project with pip, fetches MNIST, then runs;
# `make test` first installs the Debian packages the tests drive (.ci/system-deps).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
GRID ?= drop_prob=0,0.2,0.3,0.5
PYTEST_ARGS ?=

.PHONY: install data system-deps sweep test test-fast ui report bench bench-study clean-runs \
	study-overfit study-datasize study-capacity study-paper

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -e ".[dev]" --config-settings editable_mode=compat
	touch $@

install: $(STAMP)

data: install
	$(BIN)/python -m data fetch mnist

sweep: data
	$(BIN)/python sweep/run.py -m $(GRID)

system-deps:
	bash .ci/system-deps

test: system-deps data
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

report: install
	$(BIN)/python -m sweep.report $(REPORT_ARGS)

ui: install
	MLFLOW_DISABLE_TELEMETRY=true $(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/runs/mlflow.db --host 127.0.0.1 --port $${PORT:-5000}

bench: data
	$(BIN)/python bench/speed.py

bench-study: data
	$(BIN)/python bench/study.py

# The studies (README "Studies"): each grid, 5 seeds included, is the preset's hydra.sweeper.params
# (conf/experiment/<name>.yaml); STUDY_ARGS changes an axis or adds overrides, e.g. STUDY_ARGS="seed=1,2,3".
study-overfit: data
	$(BIN)/python sweep/run.py -m +experiment=overfit $(STUDY_ARGS)

study-datasize: data
	$(BIN)/python sweep/run.py -m +experiment=datasize $(STUDY_ARGS)

study-capacity: data
	$(BIN)/python sweep/run.py -m +experiment=capacity $(STUDY_ARGS)

# Issue 12's quality check (README "Ensemble effect"): +experiment=paper (input 0.2, max-norm, momentum SGD) at the
# hidden rates 0.5 (the paper's), 0.3 and 0.2, and the same budget without any dropout, seeds 1-5, paired under
# one parent run (tracking.sweep_id=paper); the report picks the hidden rate on validation accuracy. Two processes
# of 1 thread each side by side (bf16 training, evaluated in fp32), 10 runs apiece: about 53 minutes.
PAPER_ARGS ?= trainer.threads=1 trainer.precision=bf16
PAPER_SEEDS ?= 1,2,3,4,5
PAPER_RUN = $(BIN)/python sweep/run.py -m +experiment=paper seed=$(PAPER_SEEDS) tracking.sweep_id=paper $(PAPER_ARGS)
study-paper: data
	$(PAPER_RUN) drop_prob=0.5,0.2 $(STUDY_ARGS) & \
	first=$$!; \
	$(PAPER_RUN) drop_prob=0 input_drop_prob=0 $(STUDY_ARGS) && $(PAPER_RUN) drop_prob=0.3 $(STUDY_ARGS); second=$$?; \
	wait $$first; first=$$?; test $$first -eq 0 && test $$second -eq 0

clean-runs:
	rm -rf runs/multirun runs/single runs/mlflow.db runs/mlartifacts runs/optuna.db
