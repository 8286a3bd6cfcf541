# Quick start: `make demo` and `make test`. Both install what they need into .venv.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed

.PHONY: install test demo demo-tts bench notebooks clean

# System packages: a General-MIDI SoundFont (the default dataset), ffmpeg with libopus (the Opus baseline), ninja
# (torch builds the int8 KV-cache attention kernel with it, lm/backends/int8_cache.py) and chromium (Playwright drives
# it in tests/serve/test_browser.py; Playwright's own browser download needs the internet); espeak-ng and wamerican
# (the speech default's voices and word list, data/build_speech.py).
SYSTEM_PACKAGES := timgm6mb-soundfont ffmpeg ninja-build chromium espeak-ng wamerican

$(INSTALLED): pyproject.toml
	dpkg -s $(SYSTEM_PACKAGES) >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SYSTEM_PACKAGES); }
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	# tinysoundfont declares pyaudio, which it needs only for live playback: install it alone.
	$(PY) -m pip install --quiet --no-deps tinysoundfont==0.3.7
	# DAC (the oracle of tests/interop/test_dac.py): its audiotools pins protobuf<3.20 and tensorboard, which would
	# downgrade ours; what `import dac` needs is in the dev extras.
	$(PY) -m pip install --quiet --no-deps descript-audio-codec==1.0.0 descript-audiotools==0.7.2
	touch $@

install: $(INSTALLED)

test: install
	$(PY) -m pytest -q -n 2 --dist loadfile

# The demo: each step is a file target, so a second `make demo` reuses what is already built.
DEMO := outputs/demo
DEMO_DATA := $(DEMO)/data/train/data.jsonl
DEMO_CODEC := $(DEMO)/codec/export/model.safetensors
DEMO_TOKENS := $(DEMO)/tokens/valid/tokens.json
DEMO_LM := $(DEMO)/lm/export/lm.safetensors
DEMO_AUDIO := $(DEMO)/generated/generation.json

demo: install $(DEMO_AUDIO)
	@echo
	@echo "demo done:"
	@echo "  data         $(DEMO)/data (train/valid/test manifests, WAVs with caption sidecars)"
	@echo "  codec run    $(DEMO)/codec (config.yaml, checkpoints/, export/)"
	@echo "  tokens       $(DEMO)/tokens"
	@echo "  LM run       $(DEMO)/lm"
	@echo "  generated    $(DEMO)/generated (WAVs, spectrogram PNGs, generation.json)"
	@echo "  TensorBoard: $(VENV)/bin/tensorboard --logdir $(DEMO)"

$(DEMO_DATA): | install
	$(PY) -m data.build_default --out $(DEMO)/data --minutes 40

$(DEMO_CODEC): $(DEMO_DATA)
	$(PY) train.py experiment=demo stage=codec

$(DEMO_TOKENS): $(DEMO_CODEC)
	$(PY) -m data.extract_tokens --codec $(DEMO)/codec/export --manifest $(DEMO)/data/train --out $(DEMO)/tokens/train
	$(PY) -m data.extract_tokens --codec $(DEMO)/codec/export --manifest $(DEMO)/data/valid --out $(DEMO)/tokens/valid

$(DEMO_LM): $(DEMO_TOKENS)
	$(PY) train.py experiment=demo stage=lm

$(DEMO_AUDIO): $(DEMO_LM)
	rm -rf $(DEMO)/generated
	$(PY) generate.py checkpoint=$(DEMO)/lm prompts_manifest=$(DEMO)/data/test max_prompts=4 duration=8 \
		out_dir=$(DEMO)/generated

# The speech demo (issue 21, docs/tts_demo.md): about 20 minutes on 2 idle cores. File targets as for `demo`; the
# recogniser and voice probes of eval.speech need only the data, so `-j2` trains them beside the codec, one core
# each (OMP_NUM_THREADS=1: tiny models gain nothing from a second thread on a busy CPU).
TTS_DEMO := outputs/tts_demo
TTS_DATA := $(TTS_DEMO)/data/train/data.jsonl
TTS_CEILING := $(TTS_DEMO)/ceiling/speech.md
TTS_CODEC := $(TTS_DEMO)/codec/export/model.safetensors
TTS_TOKENS := $(TTS_DEMO)/tokens/train/tokens.json $(TTS_DEMO)/tokens/valid/tokens.json
TTS_LM := $(TTS_DEMO)/tts/export/tts.safetensors
TTS_AUDIO := $(TTS_DEMO)/generated/transcripts.jsonl
TTS_SCORE := $(TTS_DEMO)/eval/speech.md
TTS_EVAL := $(PY) -m eval.speech train_manifest=$(TTS_DEMO)/data/train test_manifest=$(TTS_DEMO)/data/test \
	cache_dir=$(TTS_DEMO)/eval_cache

demo-tts: install
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(MAKE) -j2 $(TTS_SCORE)
	@echo
	@echo "demo-tts done:"
	@echo "  data         $(TTS_DEMO)/data (train/valid/test manifests, WAVs with transcript sidecars)"
	@echo "  ceiling      $(TTS_DEMO)/ceiling/speech.md (real test speech; recogniser + probes in $(TTS_DEMO)/eval_cache)"
	@echo "  codec run    $(TTS_DEMO)/codec (config.yaml, checkpoints/, export/)"
	@echo "  tokens       $(TTS_DEMO)/tokens"
	@echo "  TTS run      $(TTS_DEMO)/tts"
	@echo "  generated    $(TTS_DEMO)/generated (WAVs, codes, spectrogram PNGs, transcripts.jsonl)"
	@echo "  scores       $(TTS_SCORE) (generated vs codec round trip vs real)"
	@cat $(TTS_SCORE)

# Short grammar sentences by 4 voices (2 accents x man/woman) at a narrow rate range: the sequences a CPU-sized LM
# learns to read in minutes (docs/tts_demo.md, the trials).
$(TTS_DATA): | install
	$(PY) -m data.build_speech --out $(TTS_DEMO)/data --minutes 40 --min-words 3 --max-words 8 --word-list-prob 0 \
		--rate-range 150 200 --speakers en-us+m3 en-us+f2 en-gb-scotland+m4 en-gb-scotland+f3

$(TTS_CEILING): $(TTS_DATA)
	$(TTS_EVAL) out_dir=$(TTS_DEMO)/ceiling

$(TTS_CODEC): $(TTS_DATA)
	$(PY) train.py experiment=tts_demo stage=codec

$(TTS_DEMO)/tokens/%/tokens.json: $(TTS_CODEC)
	$(PY) -m data.extract_tokens --codec $(TTS_DEMO)/codec/export --manifest $(TTS_DEMO)/data/$* \
		--out $(TTS_DEMO)/tokens/$*

$(TTS_LM): $(TTS_TOKENS)
	$(PY) train.py experiment=tts_demo stage=tts

$(TTS_AUDIO): $(TTS_LM)
	rm -rf $(TTS_DEMO)/generated
	$(PY) generate.py checkpoint=$(TTS_DEMO)/tts prompts_manifest=$(TTS_DEMO)/data/test max_prompts=4 seed=0 \
		speakers='[en-us+m3,en-us+f2,en-gb-scotland+m4,en-gb-scotland+f3]' out_dir=$(TTS_DEMO)/generated

$(TTS_SCORE): $(TTS_AUDIO) $(TTS_CEILING)
	$(TTS_EVAL) generated=$(TTS_DEMO)/generated codec_dir=$(TTS_DEMO)/codec/export out_dir=$(TTS_DEMO)/eval

# The executed notebooks, figures included, that docs/notebooks/ shows: rerun after editing notebooks/*.py.
notebooks: install
	$(PY) notebooks/execute.py

bench: install
	$(PY) -m bench.codec_speed
	$(PY) -m bench.lm_decode

clean:
	rm -rf outputs multirun .pytest_cache
