# The two commands of the README. Each creates the environment if missing, then runs.
VENV ?= .venv
export VENV

.PHONY: install demo test bench

install:
	bash scripts/install.sh

demo: install
	$(VENV)/bin/plexray demo --config configs/demo.yaml

test:
	bash scripts/install.sh --test
	$(VENV)/bin/python -m pytest -q tests

bench: install
	for script in bench/*.py; do $(VENV)/bin/python $$script || exit 1; done
