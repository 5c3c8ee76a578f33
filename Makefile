# The two commands of the README. Both install what is missing first (apt + .venv); root.
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: deps demo test unit bench clean-lab deb

deps:
	bash scripts/install-deps.sh

demo: deps
	$(VENV)/bin/vigil demo

test: deps
	$(VENV)/bin/pytest -q -ra --durations=40 tests

unit: deps
	$(VENV)/bin/pytest -q tests/unit

bench: deps
	$(PY) bench/failover.py

clean-lab:
	$(VENV)/bin/vigil lab down

# The Debian package for real hosts (docs/deploying.md): dist/vigil_<version>_<arch>.deb
deb:
	bash scripts/build-deb
