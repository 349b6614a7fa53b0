# Every target sets up .venv itself: a fresh machine needs only Python 3.11 and pip.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

PAPER_STAMP := $(VENV)/.paper-stamp

.PHONY: demo test bench paper clean

# Set-up messages go to stderr so that `make bench` prints only JSON lines on stdout.
$(STAMP): pyproject.toml
	@echo "setting up $(VENV) with $(PYTHON)" >&2
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip >&2
	@$(BIN)/python -m pip install --quiet -e '.[test]' >&2
	@# numba compiles the post-processing kernels on first use (about a minute) and caches
	@# them: do it here, with progress, so the first demo a user runs is not the slow one.
	@$(BIN)/python -m daemon.demo --warm-up --seed 1 >&2 || \
		echo "kernel warm-up failed: the first demo will compile them instead" >&2
	@touch $(STAMP)

# Two `qkd-node run` processes on simulated hardware: an honest run, then intercept-resend.
# Options pass through, e.g. `make demo DEMO_ARGS="--keys 5000 --state-dir /tmp/qkd-demo"`.
DEMO_ARGS ?=
demo: $(STAMP)
	$(BIN)/qkd-node demo-nodes $(DEMO_ARGS)

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	@$(BIN)/python -m bench

$(PAPER_STAMP): $(STAMP)
	@$(BIN)/python -m pip install --quiet -e '.[test,paper]' >&2
	@touch $(PAPER_STAMP)

# Regenerates docs/paper-comparison.md, docs/paper-results.json and docs/img/paper-*.png.
paper: $(PAPER_STAMP)
	$(BIN)/python -m paper

clean:
	rm -rf $(VENV) build *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
