PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev,cli]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff check widelimit tests benchmarks

test: venv lint
	$(BIN)/python -m pytest -n 2 -q --nbmake tests notebooks

demo: venv
	$(BIN)/widelimit demo --out demo-output

bench: venv
	$(BIN)/pip install -q -e '.[dev,cli,bench]' || echo "spams-bin unavailable: SPAMS rows are skipped"
	$(BIN)/python benchmarks/wide_scaling.py
	$(BIN)/python benchmarks/finite_scaling.py
	$(BIN)/python benchmarks/pair_hull_scaling.py

clean:
	rm -rf $(VENV) demo-output .pytest_cache
