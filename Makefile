# Two entry points for a fresh clone (Python 3.11 and pip are all it needs):
#   make demo   set up .venv, run the teaching notebooks and the MNIST job
#   make test   set up .venv, lint, and run the whole test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch and torchvision are pinned here; the package accepts a range
TORCH := torch==2.14.1 torchvision==0.29.1

.PHONY: venv demo test lint sync clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(TORCH)
	$(BIN)/pip install --quiet -e '.[tests]'
	touch $@

demo: venv
	$(BIN)/python scripts/run_notebooks.py --profile cpu

lint: venv
	$(BIN)/ruff check nbkit tests scripts notebooks benchmarks
	$(BIN)/ruff format --check nbkit tests scripts benchmarks

# pytest exits 5 when it collects nothing: never let that pass as success
test: lint
	$(BIN)/python -m pytest; status=$$?; \
	if [ $$status -eq 5 ]; then echo "pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

# rebuild every .ipynb from its paired .py (the .py is the source of truth)
sync: venv
	$(BIN)/jupytext --sync notebooks/*.py

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache
