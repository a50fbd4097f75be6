# Every target sets itself up: a local virtualenv in .venv, installed once per change of pyproject.toml.
PYTHON ?= python3
# The embedded default runs on a CPU: this torch is a CPU build here. On a GPU machine: make setup TORCH=torch
TORCH ?= torch==2.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RESULTS ?= results
SEQUENCE_METHODS ?= sdpo sdft sft
# Runs at once in the reproduce-* targets, one torch thread each, the longest first. One more than the two cores
# here: no core idles while the last run finishes (reproduce-sequential 385 s at 3, 435 s at 2, same results).
JOBS ?= 3
UI_PORT ?= 5000

.PHONY: reproduce-baselines setup test fault-test multiprocess-test paper-smoke sweep-test tracking-server postgres reproduce-sequential report ui lint bench

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,sweep,peft]"
	touch $(STAMP)

test: setup
	$(BIN)/python -m pytest

# Kill a real toy run at every failpoint and resume it (a few minutes; not part of `make test`).
fault-test: setup
	$(BIN)/python -m pytest -m slow tests/test_faults.py -v

# The papers' suite end to end on this CPU: every method through its three stages on a tiny random Qwen2
# over the real test data (../shared/data/sdft-paper beside the checkout, or $$HARNESS_PAPER_DATA); minutes, not part of `make test`.
paper-smoke: setup
	$(BIN)/python -m pytest -m slow tests/test_paper_smoke.py -v -s

# Two CPU processes through accelerate launch: DDP training, evaluation and logging on the main one only.
multiprocess-test: setup
	$(BIN)/python -m pytest -m slow tests/test_multiprocess.py -v

# Debian's PostgreSQL, without the package's own cluster (the harness starts its own on a data folder).
POSTGRES := /usr/lib/postgresql
postgres:
	ls $(POSTGRES)/*/bin/initdb >/dev/null 2>&1 || { mkdir -p /etc/postgresql-common && \
	  echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.conf && \
	  apt-get update -q && apt-get install -y -q postgresql; }

# A shared MLflow store: PostgreSQL (data in PGDATA) + `mlflow server` on 127.0.0.1:TRACKING_PORT until Ctrl-C.
PGDATA ?= $(RESULTS)/pgdata
TRACKING_PORT ?= 5000
TRACKING_HOST ?= 127.0.0.1
TRACKING_ARGS ?=
tracking-server: setup postgres
	$(BIN)/python scripts/tracking_server.py --data $(PGDATA) --port $(TRACKING_PORT) --host $(TRACKING_HOST) $(TRACKING_ARGS)

# PostgreSQL + an MLflow server + a local 2-CPU Ray; a 4-trial sweep, one trial SIGKILLed mid-stage and retried.
sweep-test: setup postgres
	$(BIN)/python -m pytest -m slow tests/test_sweep_cluster.py -v

# SFT, SDFT and SDPO through the suite's default sequence (toy: cipher -> facts -> tooluse), then the comparison:
# runs in $(RESULTS)/sequential/toy-<method>-seed0 (each with its .log), the report in $(RESULTS)/sequential/comparison.
reproduce-sequential: setup
	$(BIN)/python scripts/reproduce.py --variants "$(SEQUENCE_METHODS)" --seeds 0 --out $(RESULTS)/sequential --jobs $(JOBS)

# Every method (and the replay and WiSE-FT merge options) through the toy sequence, JOBS runs at a time, then one
# comparison. SEEDS=0,1,2 for more seeds; BASELINE_ARGS for anything else `harness run` takes (e.g. --limit 50).
# Longest runs first: two cores finish sooner.
SEEDS ?= 0
BASELINE_METHODS ?= grpo sdpo sdft sft_reinvoke sft dft
BASELINE_VARIANTS ?= sft:replay=0.2 sft:merge_alpha=0.5
BASELINE_ARGS ?=
BASELINES_OUT ?= $(RESULTS)/baselines
reproduce-baselines: setup
	$(BIN)/python scripts/reproduce.py --variants "$(BASELINE_METHODS) $(BASELINE_VARIANTS)" --seeds $(SEEDS) \
	  --out $(BASELINES_OUT) --jobs $(JOBS) -- $(BASELINE_ARGS)

report: setup
	$(BIN)/harness report $(RESULTS)/toy-* --out $(RESULTS)/comparison

ui: setup
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(RESULTS))/mlflow.db --port $(UI_PORT)

bench: setup
	$(BIN)/python scripts/bench.py

lint: setup
	$(BIN)/ruff check harness baselines tests

# Headless-browser check of the MLflow UI: the methods' sequence runs and their acc/bwt/forgetting on the
# experiment page and the compare view; screenshots in docs/. Installs Debian's chromium + chromium-driver if missing.
UI_STORE ?= sqlite:///$(RESULTS)/mlflow.db
.PHONY: ui-check
ui-check: setup
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || apt-get install -y -q chromium chromium-driver
	$(BIN)/python -c "import selenium" 2>/dev/null || $(BIN)/python -m pip install -q selenium
	$(BIN)/python scripts/ui_check.py $(UI_STORE) --methods "$(SEQUENCE_METHODS)" --screenshot docs/mlflow-compare.png --experiment-screenshot docs/mlflow-experiment.png
