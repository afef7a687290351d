# Two commands on a fresh machine: `make sweep` (the 4-point dropout grid) and `make test`.
# Each creates .venv when missing, installs the project with pip, fetches MNIST, then runs;
# `make test` first installs the Debian packages the tests drive (.ci/system-deps).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
GRID ?= drop_prob=0,0.2,0.3,0.5
PYTEST_ARGS ?=

.PHONY: install data system-deps sweep test test-fast lint ui report bench bench-study clean-runs \
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

# ruff's lint and format check (pyproject.toml [tool.ruff]); `ruff format .` and `ruff check --fix .` mend most
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

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

# The studies (docs/results.md): each is a preset whose sweeper is hydra/sweeper=study (sweep/study.py): an
# exploratory phase designs a confirmatory phase on fresh replicates, whose verdicts are the headline.
# STUDY_ARGS changes an axis or adds overrides, e.g. STUDY_ARGS="study.max_replicates=20".
study-overfit: data
	$(BIN)/python sweep/run.py -m +experiment=overfit $(STUDY_ARGS)

study-datasize: data
	$(BIN)/python sweep/run.py -m +experiment=datasize $(STUDY_ARGS)

study-capacity: data
	$(BIN)/python sweep/run.py -m +experiment=capacity $(STUDY_ARGS)

# The paper recipe (+experiment=paper) at hidden rates 0.5, 0.3, 0.2 and without dropout; the best by validation
# accuracy is confirmed against no dropout on fresh replicates (conf/experiment/paper_study.yaml).
study-paper: data
	$(BIN)/python sweep/run.py -m +experiment=paper_study $(STUDY_ARGS)

clean-runs:
	rm -rf runs/multirun runs/single runs/mlflow.db runs/mlartifacts runs/optuna.db
