# lucidlm: `make demo` trains a GPT on Shakespeare and samples from it; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := data/shakespeare-char
RUN := runs/demo
# Seconds of training. Compiling the blocks (up to 45 s with an empty cache) and measuring the machine come
# before the clock, so that a first `make demo` still ends within about 3 minutes after the install.
DEMO_BUDGET ?= 90
# The demo's promise, the val loss it reaches on any machine: a CPU too slow to reach it in DEMO_BUDGET seconds
# trains for as long as the scaling law says it takes (recipe=auto, train/recipe.py), and says so.
DEMO_TARGET ?= 1.60
# More settings for the demos' training, e.g. TRAIN_FLAGS="--set dtype=fp32" or "--device cuda"
TRAIN_FLAGS ?=

.PHONY: setup demo chat-demo tune-demo test soak lint format bench gpu-check clean notebooks site vendor-js

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.installed-dev: pyproject.toml $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

demo: setup
	@test -f $(DATA)/meta.json || $(BIN)/lucidlm data prepare --corpus shakespeare --tokenizer char --out $(DATA)
	$(BIN)/lucidlm train --data $(DATA) --out $(RUN) --preset shakespeare-char --time-budget $(DEMO_BUDGET) --set target_loss=$(DEMO_TARGET) $(TRAIN_FLAGS) --force
	$(BIN)/lucidlm generate --checkpoint $(RUN) --prompt "ROMEO:" --max-new-tokens 500 --temperature 0.8 --top-k 50 --seed 1
	$(BIN)/lucidlm eval --checkpoint $(RUN) --data $(DATA)
	@echo
	@echo "Next: sample more, or train your own:"
	@echo "  $(BIN)/lucidlm generate --checkpoint $(RUN) --prompt 'JULIET:' --temperature 0.7 --num-samples 3"
	@echo "  $(BIN)/lucidlm train --data my.txt --out runs/mine"
	@echo "  (the loss curve is $(RUN)/loss.png)"

# Fine-tunes the demo's model into a small assistant (README: Chat): a seeded task set, 5 minutes of training
# and at least CHAT_STEPS steps of 8 conversations (the work its scores need: a slow CPU trains past the 5
# minutes, with the ETA on the progress bar), the held-out scores, a scripted chat, and the Shakespeare loss.
CHAT_TASKS := data/chat-tasks
CHAT_DATA := data/chat
CHAT_RUN := runs/chat
CHAT_BUDGET ?= 300
CHAT_STEPS ?= 4500
chat-demo: setup
	@test -f $(RUN)/best.json || $(MAKE) demo
	$(BIN)/python -m lucidlm.chat.synthetic --out $(CHAT_TASKS) --replay shakespeare --force
	$(BIN)/lucidlm data prepare --chat $(CHAT_TASKS)/train.jsonl --tokenizer-from $(RUN) --out $(CHAT_DATA) --force
	$(BIN)/lucidlm train --init-from $(RUN) --data $(CHAT_DATA) --out $(CHAT_RUN) --time-budget $(CHAT_BUDGET) --set min_steps=$(CHAT_STEPS) --set batch_size=8 --set eval_interval=1500 $(TRAIN_FLAGS) --force
	$(BIN)/lucidlm eval --checkpoint $(CHAT_RUN) --tasks $(CHAT_TASKS)/heldout.jsonl
	printf '%s\n' 'What is 27 plus 58?' 'Reverse lantern.' 'Spell quiet.' '/system Ann is 31. Bob is 8. Cy is 64.' 'How old is Cy?' \
		| $(BIN)/lucidlm chat --checkpoint $(CHAT_RUN) --temperature 0
	$(BIN)/lucidlm eval --checkpoint $(CHAT_RUN) --data $(DATA)
	$(BIN)/lucidlm eval --checkpoint $(RUN) --data $(DATA)
	@echo
	@echo "Next: chat with it ($(BIN)/lucidlm chat --checkpoint $(CHAT_RUN)), or try LoRA: add --set lora_rank=8"

# Takes the chat model past supervised fine-tuning (README: Past fine-tuning), each stage from the chat model:
# reinforcement learning (GRPO, through LoRA adapters) on the table it reads badly, with smaller tables as a
# curriculum and the other tasks mixed in; preference tuning (DPO) on its own wrong answers to tables of one to
# three names, replaying its chat data; and the calculator, for multiplying three-digit numbers, from a few
# minutes of conversations that call it. heldout-tables.jsonl scores tables of each size apart.
TUNE := data/tune
RL_BUDGET ?= 600
DPO_BUDGET ?= 180
TOOLS_BUDGET ?= 180
tune-demo: setup
	@test -f $(CHAT_RUN)/best.json || $(MAKE) chat-demo
	$(BIN)/python -m lucidlm.chat.synthetic --out $(TUNE) --task-records 6000 --table-sizes 1,2,3 --mix-others 800 --force
	$(BIN)/python -m lucidlm.chat.synthetic --out $(TUNE)/mistakes --task-records 3000 --table-sizes 1,2,3 --force
	$(BIN)/python -m lucidlm.chat.synthetic --out $(TUNE) --tool-calls 20000 --force
	$(BIN)/lucidlm eval --checkpoint $(CHAT_RUN) --tasks $(TUNE)/heldout-tables.jsonl
	$(BIN)/lucidlm data prepare --tasks $(TUNE)/lookup.jsonl --tokenizer-from $(CHAT_RUN) --out $(TUNE)/rl --force
	$(BIN)/lucidlm train --init-from $(CHAT_RUN) --data $(TUNE)/rl --out runs/rl --time-budget $(RL_BUDGET) --set objective=grpo \
		--set lora_rank=16 --set optimizer=adamw --set lr=2e-3 --set min_lr=2e-4 --set warmup_steps=10 --set batch_size=16 \
		--set group_size=8 --set max_reply_tokens=8 --set kl_coef=0.05 --set eval_interval=400 --set recipe=fixed $(TRAIN_FLAGS) --force
	$(BIN)/lucidlm eval --checkpoint runs/rl --which latest --tasks $(CHAT_TASKS)/heldout.jsonl
	$(BIN)/lucidlm eval --checkpoint runs/rl --which latest --tasks $(TUNE)/heldout-tables.jsonl
	$(BIN)/lucidlm eval --checkpoint $(CHAT_RUN) --tasks $(TUNE)/mistakes/lookup.jsonl --pairs $(TUNE)/pairs.jsonl --force
	$(BIN)/lucidlm data prepare --preferences $(TUNE)/pairs.jsonl --tokenizer-from $(CHAT_RUN) --out $(TUNE)/dpo --force
	$(BIN)/lucidlm train --init-from $(CHAT_RUN) --data $(TUNE)/dpo --out runs/dpo --time-budget $(DPO_BUDGET) --set objective=dpo \
		--set dpo_beta=0.1 --set dpo_nll=1.0 --set replay_data=$(CHAT_DATA) --set optimizer=adamw --set lr=3e-4 --set min_lr=3e-5 \
		--set warmup_steps=10 --set batch_size=16 --set eval_interval=200 --set eval_batches=10 --set recipe=fixed --set compile=false \
		$(TRAIN_FLAGS) --force
	$(BIN)/lucidlm eval --checkpoint runs/dpo --which latest --tasks $(TUNE)/heldout-tables.jsonl
	$(BIN)/lucidlm eval --checkpoint runs/dpo --which latest --tasks $(CHAT_TASKS)/heldout.jsonl
	$(BIN)/lucidlm data prepare --chat $(TUNE)/tools.jsonl --tokenizer-from $(CHAT_RUN) --out $(TUNE)/tools --force
	$(BIN)/lucidlm train --init-from $(CHAT_RUN) --data $(TUNE)/tools --out runs/tools --time-budget $(TOOLS_BUDGET) \
		--set batch_size=8 --set eval_interval=1000 --set recipe=fixed $(TRAIN_FLAGS) --force
	$(BIN)/lucidlm eval --checkpoint runs/tools --tasks $(TUNE)/heldout-multiply.jsonl
	$(BIN)/lucidlm eval --checkpoint runs/tools --tasks $(TUNE)/heldout-multiply.jsonl --tools calculator
	$(BIN)/lucidlm eval --checkpoint runs/tools --tasks $(CHAT_TASKS)/heldout.jsonl
	printf '%s\n' 'What is 347 times 281?' 'What is 27 plus 58?' | $(BIN)/lucidlm chat --checkpoint runs/tools --tools calculator --temperature 0
	@echo
	@echo "The curves: runs/rl/loss.png (reward, pass@1, KL), runs/dpo/loss.png (margin, accuracy, replay loss)"

test: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q

# Longer fault and load trials than `make test` runs (docs/reliability.md); not part of CI.
soak: $(VENV)/.installed-dev
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev,fuzz]'
	LUCIDLM_SOAK=1 LUCIDLM_KILL_TRIALS=20 $(BIN)/python -m pytest -q -s tests/reliability

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check src tests benchmarks lessons
	$(BIN)/ruff format --check src tests benchmarks lessons

format: $(VENV)/.installed-dev
	$(BIN)/ruff format src tests benchmarks lessons
	$(BIN)/ruff check --fix src tests benchmarks lessons

bench: setup
	$(BIN)/python benchmarks/train_speed.py

# The CUDA paths on one GPU, unattended (under 8 minutes on an H100): the CUDA tests, GPT-2 small training's
# tokens/s and MFU, Tiny Shakespeare in 60 s, decoding. Without CUDA it stops with one line (exit status 2).
gpu-check: $(VENV)/.installed-dev
	$(BIN)/python benchmarks/gpu_check.py

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .ruff_cache

notebooks: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet jupytext
	mkdir -p notebooks
	for f in lessons/*.py; do $(BIN)/jupytext --quiet --to ipynb -o notebooks/$$(basename $$f .py).ipynb $$f; done
	@echo "notebooks/ holds one notebook per lesson"

# The course as a static site whose NumPy lessons run in the browser (tutorial/runtime.py vendors the Python):
# publish site/ on any static host. SITE_FLAGS passes more, e.g. SITE_FLAGS="--checkpoint runs/demo".
SITE ?= site
SITE_FLAGS ?=
site: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[site]'
	$(BIN)/lucidlm tutorial --build $(SITE) --force $(SITE_FLAGS)
	@du -sh $(SITE)

# The site's JavaScript from npm (js/package-lock.json): the WASI shim as published, CodeMirror bundled into one
# module with its licences. The results are committed in src/lucidlm/tutorial/static/; run this to update them.
STATIC = src/lucidlm/tutorial/static
vendor-js:
	cd js && npm ci --silent
	rm -rf $(STATIC)/shim $(STATIC)/editor && mkdir -p $(STATIC)/shim $(STATIC)/editor
	cp js/node_modules/@bjorn3/browser_wasi_shim/dist/*.js js/node_modules/@bjorn3/browser_wasi_shim/LICENSE-* $(STATIC)/shim/
	cd js && node_modules/.bin/esbuild editor.js --bundle --format=esm --minify --legal-comments=none \
		--metafile=node_modules/editor-meta.json --outfile=../$(STATIC)/editor/codemirror.js
	cd js && node licences.mjs node_modules/editor-meta.json > ../$(STATIC)/editor/LICENSES.txt
