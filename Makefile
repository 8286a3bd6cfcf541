# Quick start: `make demo` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test demo bench clean

$(INSTALLED): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

demo: install
	$(PY) -m demo

bench: install
	$(PY) -m bench.codec_speed
	$(PY) -m bench.lm_decode

clean:
	rm -rf outputs multirun .pytest_cache
