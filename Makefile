# The README's two commands: `make run` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.layerlab-installed
PORT ?= 8501

.PHONY: run test lint bench install

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/streamlit run app.py --server.port $(PORT)

# The engine and page tests on two workers; then the browser tests and those that start several training processes,
# one at a time (each already keeps both cores busy). Both parts always run; the target fails if either did.
test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -m "not browser and not distributed"; a=$$?; \
	$(BIN)/python -m pytest -m "browser or distributed"; b=$$?; \
	test $$a -eq 0 -a $$b -eq 0

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/train_loop.py
