# Quick start: `make demo` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test demo bench clean

# System packages: a General-MIDI SoundFont (the default dataset) and ffmpeg with libopus (the Opus baseline).
SYSTEM_PACKAGES := timgm6mb-soundfont ffmpeg

$(INSTALLED): pyproject.toml
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# tinysoundfont declares pyaudio, which it needs only for live playback: install it alone.
	$(PY) -m pip install --quiet --no-deps tinysoundfont==0.3.7
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
