# Two commands: `make demo` (an induction run and a grokking run: type-A and type-B stages) and `make test`.
# Both bootstrap .venv from nothing: torch first (pinned CPU wheel unless TORCH_SPEC says otherwise),
# then the project, so no unpinned torch requirement can pull CUDA packages.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install browser demo test test-accuracy test-fast clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(STAMP): $(PY) pyproject.toml
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test,ray,hf]"
	touch $(STAMP)

install: $(STAMP) browser

# Headless Chromium for the dashboard's browser test (Debian packages chromium, chromium-driver).
# Installed only when missing and possible (root with apt-get); otherwise skipped quietly and the
# browser test skips with a message.
browser:
	@if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then \
		if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
			echo "installing chromium and chromium-driver (apt-get)"; \
			{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; } \
				>/dev/null 2>&1 || echo "note: could not install chromium/chromium-driver; the browser test will skip"; \
		fi; \
	fi

demo: $(STAMP)
	$(PY) -m devinterp.cli.demo

test: $(STAMP) browser
	$(PY) -m pytest -q -n auto --dist worksteal --durations=15 -m "not accuracy" tests

# The longest ground-truth accuracy tests (marked `accuracy`), left out of `make test` to keep it near
# 6 minutes; CI runs them after it.
test-accuracy: $(STAMP)
	$(PY) -m pytest -q -n auto --dist worksteal --durations=5 -m accuracy tests

test-fast: $(STAMP) browser
	$(PY) -m pytest -q -m "not slow" tests

clean:
	rm -rf $(VENV) runs outputs .pytest_cache
