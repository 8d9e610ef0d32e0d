# midisynth developer tasks. `make install` sets up .venv; every other target uses it.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= data/fluidr3
RUN ?= runs/default
DEVICE ?= cpu
HOURS ?= 3
# The torch this project is tested with, installed before midisynth so that pip keeps it for `torch>=2.4` (a torch
# that pip picks itself is a multi-GB CUDA build). Set TORCH to your own build's requirement, e.g. for CUDA.
TORCH ?= torch==2.13.0
# basic-pitch (transcription F1 in `midisynth eval`) asks for TensorFlow, which its ONNX model does not need:
# it is installed without its dependencies, after the eval extra has installed the ones it uses.
BASIC_PITCH := basic-pitch==0.4.0

.PHONY: install eval-install test test-slow lint bench data train eval clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q '$(TORCH)'
	$(BIN)/pip install -q -e .
	# An editable install leaves midisynth's own modules uncompiled: compiled now, a command does not compile them on
	# every start where Python may not write bytecode (PYTHONDONTWRITEBYTECODE).
	$(BIN)/python -m compileall -q midisynth
	touch $@

$(VENV)/.test-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test,lint,data,eval]'
	# note-seq (reference tokenizer for the parity tests) pins old packages: install it without them.
	$(BIN)/pip install -q --no-deps note-seq==0.0.5
	$(BIN)/pip install -q --no-deps $(BASIC_PITCH)
	touch $@

eval-install: $(VENV)/.eval-installed

$(VENV)/.eval-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[eval]'
	$(BIN)/pip install -q --no-deps $(BASIC_PITCH)
	touch $@

# `make test` leaves out the tests marked slow (end-to-end runs in fresh processes, long reference parity, fuzzing);
# `make test-slow` runs those, and CI runs both.
test: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(VENV)/.test-installed
	$(BIN)/python -m pytest -q -m slow

# Lint, format check and type check: the base install (mypy reads torch's types) and the lint extra, not the test extras.
$(VENV)/.lint-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[lint]'
	touch $@

lint: $(VENV)/.lint-installed
	$(BIN)/ruff check midisynth tests benchmarks scripts
	$(BIN)/ruff format --check midisynth tests benchmarks scripts
	$(BIN)/mypy

# DEVICE=cuda writes benchmarks/results_cuda.json (the official size and batched windows/s on the GPU).
# KERNELS=avx2 holds torch to its AVX2 kernels, a stand-in for a CPU without native bf16: benchmarks/results_avx2.json.
AVX2_ENV := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
bench: $(VENV)/.test-installed
	$(if $(filter avx2,$(KERNELS)),env $(AVX2_ENV)) nice $(BIN)/python -m benchmarks.run --device $(DEVICE) \
		$(if $(filter avx2,$(KERNELS)),--out benchmarks/results_avx2.json)

$(VENV)/.data-installed: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[data]'
	touch $@

# music21's corpus is part of the training and held-out material: without it the data set (and its split) differ.
data: $(VENV)/.data-installed
	$(BIN)/midisynth dataset $(DATA) --hours $(HOURS)

# The bundled model's recipe from random weights (docs/training.md: four stages, about 4.3-5.5 h on 2 CPU cores):
# each config trains in $(RUN)/<its name> from the weights of the one before. Resumable: Ctrl-C stops with a
# checkpoint, re-running continues, a finished stage is skipped. Another recipe: make train RECIPE="a.toml b.toml".
# Then the partials model is fitted to the same data (about half an hour on one core) beside the final stage's weights,
# and last the refiner to that model's renders of the same training pieces (about 15 minutes; resumable in
# $(RUN)/refiner).
RECIPE ?= configs/epsilon.toml configs/default.toml configs/velocity_gain.toml configs/note_roll.toml
FINAL := $(RUN)/$(basename $(notdir $(lastword $(RECIPE))))
train: install
	$(BIN)/midisynth train $(addprefix --config ,$(RECIPE)) --data $(DATA) --out $(RUN) --device $(DEVICE)
	$(BIN)/midisynth fit-partials --data $(DATA) --out $(FINAL)/partials.safetensors
	$(BIN)/midisynth fit-refiner --data $(DATA) --model $(FINAL)/model.safetensors --run $(RUN)/refiner \
		--out $(FINAL)/refiner.safetensors --device $(DEVICE)

# Two held-out sets: the data set's own (drawn like its training pieces) and the user songs
# (midisynth/evaluation/user_songs.py: the kinds of music the training generator does not make).
USER_SONGS ?= data/user_songs
eval: $(VENV)/.eval-installed
	$(BIN)/midisynth eval $(DATA)/heldout_midi --json docs/eval.json
	$(BIN)/python -m midisynth.evaluation.user_songs $(USER_SONGS)
	$(BIN)/midisynth eval $(USER_SONGS) --json docs/eval_users.json

clean:
	rm -rf build dist *.egg-info .pytest_cache .ruff_cache .mypy_cache
