# lucidlm: `make demo` trains a GPT on Shakespeare and samples from it; `make test` runs the test suite.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DATA := data/shakespeare-char
RUN := runs/demo

.PHONY: setup demo test soak lint format bench clean notebooks

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
	$(BIN)/lucidlm train --data $(DATA) --out $(RUN) --preset shakespeare-char --time-budget 120 --force
	$(BIN)/lucidlm generate --checkpoint $(RUN) --prompt "ROMEO:" --max-new-tokens 500 --temperature 0.8 --top-k 50 --seed 1
	$(BIN)/lucidlm eval --checkpoint $(RUN) --data $(DATA)
	@echo
	@echo "Next: sample more, or train your own:"
	@echo "  $(BIN)/lucidlm generate --checkpoint $(RUN) --prompt 'JULIET:' --temperature 0.7 --num-samples 3"
	@echo "  $(BIN)/lucidlm train --data my.txt --out runs/mine"
	@echo "  (the loss curve is $(RUN)/loss.png)"

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

clean:
	rm -rf $(VENV) runs build src/*.egg-info .pytest_cache .ruff_cache

notebooks: $(VENV)/.installed
	$(BIN)/python -m pip install --quiet jupytext
	mkdir -p notebooks
	for f in lessons/*.py; do $(BIN)/jupytext --quiet --to ipynb -o notebooks/$$(basename $$f .py).ipynb $$f; done
	@echo "notebooks/ holds one notebook per lesson"
