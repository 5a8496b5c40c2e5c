# Two commands set everything up on a fresh machine: `make demo` and `make test`.
VENV ?= .venv
PYTHON ?= python3
# torch/torchvision are lower-bounded in pyproject.toml; this pin only chooses the build
# that this project's machines have on disk. Elsewhere: make demo TORCH_SPEC="torch torchvision"
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
BIN := $(VENV)/bin
STAMP := $(VENV)/.synthscene-installed

.PHONY: demo test lint chromium

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet $(TORCH_SPEC)
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	rm -rf runs/demo
	$(BIN)/synthscene generate --spec examples/shapes-text2labels.yaml --out runs/demo
	$(BIN)/synthscene gallery --in runs/demo
	@echo "demo output: runs/demo (labelled shards, dataset_card.md, gallery/index.html)"

# Two pytest workers (pytest-xdist), one compute thread each: on this 2-core machine that is
# 9.9 minutes against 12.7 for one process with two threads. TEST_WORKERS=0 runs in one process.
TEST_WORKERS ?= 2
test: $(STAMP) chromium
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS)

# The gallery test renders a page in Debian's headless Chromium; install it when we can.
chromium:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get update -qq && apt-get install -y -qq chromium) >/dev/null 2>&1; } \
		|| echo "chromium is not installed: the gallery rendering test will be skipped"

lint: $(STAMP)
	$(BIN)/ruff check synthscene tests benchmarks
