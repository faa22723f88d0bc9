PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test test-floors demo bench bench-quick lint clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e '.[dev,cli]'
	touch $(STAMP)

venv: $(STAMP)

lint: venv
	$(BIN)/ruff format --check widelimit tests benchmarks
	$(BIN)/ruff check widelimit tests benchmarks
	$(BIN)/mypy

test: venv lint
	$(BIN)/python -m pytest -n 2 --dist worksteal -q --nbmake tests notebooks

BENCHMARKS := wide_scaling finite_scaling pair_hull_scaling width_study code_solver stop_rule first_run architectures absorption scale device_rows working_sets

# the smoke version of every benchmark script (--quick at WIDELIMIT_BENCH_SMOKE sizes, 1 min
# 54 s on 2 cores), into benchmarks/results/smoke/; tests/test_benchmarks.py runs the same
# in make test, into a temp dir. `python benchmarks/NAME.py --quick` alone runs the larger quick
# sizes (3.7 minutes for all ten) into benchmarks/results/NAME_quick.json.
bench-quick: venv
	for s in $(BENCHMARKS); do \
		WIDELIMIT_BENCH_SMOKE=1 WIDELIMIT_BENCH_RESULTS=benchmarks/results/smoke \
			$(BIN)/python benchmarks/$$s.py --quick || exit 1; done

# the declared dependency floors (.ci/floors.txt = pyproject's lower bounds), in their own venv
test-floors:
	test -x .venv-floors/bin/python || $(PY) -m venv .venv-floors
	.venv-floors/bin/pip install -q -r .ci/floors.txt
	.venv-floors/bin/pip install -q --no-deps -e .
	cd .ci && ../.venv-floors/bin/python floors_smoke.py

demo: venv
	$(BIN)/widelimit demo --out demo-output

bench: venv
	$(BIN)/pip install -q -e '.[dev,cli,bench]' || echo "spams-bin unavailable: SPAMS rows are skipped"
	$(BIN)/python benchmarks/wide_scaling.py
	$(BIN)/python benchmarks/finite_scaling.py
	$(BIN)/python benchmarks/pair_hull_scaling.py
	$(BIN)/python benchmarks/width_study.py
	$(BIN)/python benchmarks/architectures.py
	$(BIN)/python benchmarks/code_solver.py
	$(BIN)/python benchmarks/stop_rule.py
	$(BIN)/python benchmarks/first_run.py
	$(BIN)/python benchmarks/absorption.py
	$(BIN)/python benchmarks/scale.py
	$(BIN)/python benchmarks/device_rows.py
	$(BIN)/python benchmarks/working_sets.py
	$(BIN)/python -m pytest -q -m slow tests/test_fault_injection.py
	$(BIN)/python benchmarks/readme_tables.py

clean:
	rm -rf $(VENV) .venv-floors demo-output .pytest_cache
