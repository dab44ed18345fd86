# Set-up is automatic: `make demo` and `make test` create .venv and install on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/egd demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python bench/whiten.py
	OMP_NUM_THREADS=1 $(BIN)/python bench/train_cost.py overhead
	OMP_NUM_THREADS=1 $(BIN)/python bench/sweep.py

clean:
	rm -rf $(VENV) build dist .pytest_cache
